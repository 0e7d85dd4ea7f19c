//! Regenerates the CRD files from the Rust types: `cargo run -p api --bin crdgen` writes
//! `crds/` (full, with CEL rules) and `charts/sockwarden/crds/` (base, what every supported
//! Kubernetes takes; see `api::crds`), or `--stdout` prints the full ones.
use std::path::PathBuf;

use api::crds::{yaml, Shape};

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    if std::env::args().any(|a| a == "--stdout") {
        for (_, doc) in yaml(Shape::Full) {
            println!("---\n{doc}");
        }
        return Ok(());
    }
    for (dir, shape) in [
        ("crds", Shape::Full),
        ("charts/sockwarden/crds", Shape::Base),
    ] {
        for (file, doc) in yaml(shape) {
            std::fs::write(root.join(dir).join(file), doc)?;
            eprintln!("wrote {dir}/{file}");
        }
    }
    Ok(())
}
