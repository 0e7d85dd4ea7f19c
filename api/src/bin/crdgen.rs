//! Regenerates `crds/` from the Rust types: `cargo run -p api --bin crdgen` (writes the
//! files under crds/ at the workspace root) or `--stdout` to print them.
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let to_stdout = std::env::args().any(|a| a == "--stdout");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds");
    for (file, yaml) in api::crd_yaml() {
        if to_stdout {
            println!("---\n{yaml}");
        } else {
            std::fs::write(dir.join(file), yaml)?;
            eprintln!("wrote crds/{file}");
        }
    }
    Ok(())
}
