//! Tracepoint record layouts, read from the running kernel's tracefs `format` files.
//!
//! A tracepoint's record layout is not a stable ABI: offsets move when a kernel adds or
//! reorders fields. Reading them at start, and refusing the backend with one sentence naming
//! what is missing, keeps a changed layout from blinding the probe silently.
use std::path::{Path, PathBuf};

use probe_common::RecordFields;

/// Why a tracepoint's record layout is not what the programs read.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("the kernel has no tracepoint {category}:{name} (no events/{category}/{name} under tracefs)")]
    NoTracepoint { category: String, name: String },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tracepoint {event} has no record field {field} (its format changed in this kernel)")]
    NoField { event: String, field: String },
    #[error(
        "tracepoint {event} record field {field} is {size} bytes where the probe reads {reads}"
    )]
    FieldSize {
        event: String,
        field: String,
        size: u32,
        reads: u32,
    },
}

/// Where tracefs is mounted, newest location first.
pub const TRACEFS: &[&str] = &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// One `field:` line of a format file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// Parses the `field:` lines of a format file. Lines that are not well-formed fields are
/// skipped; a field the probe needs that is absent is reported by [`Layout::offset`].
pub fn parse_format(text: &str) -> Vec<Field> {
    text.lines().filter_map(parse_field).collect()
}

/// `\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;`
fn parse_field(line: &str) -> Option<Field> {
    let mut parts = line.trim().split(';').map(str::trim);
    let decl = parts.next()?.strip_prefix("field:")?;
    let (mut offset, mut size) = (None, None);
    for part in parts {
        if let Some(v) = part.strip_prefix("offset:") {
            offset = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("size:") {
            size = v.parse().ok();
        }
    }
    // The name is the declaration's last word, without an array suffix (`char comm[16]`).
    let last = decl.rsplit([' ', '*']).next()?;
    let name = last.split('[').next()?.trim();
    if name.is_empty() {
        return None;
    }
    Some(Field {
        name: name.to_string(),
        offset: offset?,
        size: size?,
    })
}

/// One tracepoint's parsed format.
pub struct Layout {
    event: String,
    fields: Vec<Field>,
}

impl Layout {
    pub fn new(event: &str, format: &str) -> Self {
        Self {
            event: event.to_string(),
            fields: parse_format(format),
        }
    }

    /// Offset of `name`, which the programs read as `size` bytes.
    pub fn offset(&self, name: &str, size: u32) -> Result<u32, LayoutError> {
        let field =
            self.fields
                .iter()
                .find(|f| f.name == name)
                .ok_or_else(|| LayoutError::NoField {
                    event: self.event.clone(),
                    field: name.to_string(),
                })?;
        if field.size != size {
            return Err(LayoutError::FieldSize {
                event: self.event.clone(),
                field: name.to_string(),
                size: field.size,
                reads: size,
            });
        }
        Ok(field.offset)
    }
}

/// The directory of tracepoint `category:name` under the first tracefs root that has it.
pub fn event_dir(roots: &[PathBuf], category: &str, name: &str) -> Option<PathBuf> {
    roots
        .iter()
        .map(|root| root.join("events").join(category).join(name))
        .find(|dir| dir.exists())
}

/// The layout of `category:name`, or what is missing.
fn layout(roots: &[PathBuf], category: &str, name: &str) -> Result<Layout, LayoutError> {
    let dir = event_dir(roots, category, name).ok_or_else(|| LayoutError::NoTracepoint {
        category: category.to_string(),
        name: name.to_string(),
    })?;
    let path = dir.join("format");
    let text =
        std::fs::read_to_string(&path).map_err(|source| LayoutError::Read { path, source })?;
    Ok(Layout::new(&format!("{category}:{name}"), &text))
}

/// What the programs a backend attaches read from records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// The open syscall tracepoints (`--detect-open` in the tracepoint backend); those an
    /// architecture lacks (arm64 has no `open`) are skipped, as attaching skips them.
    pub opens: bool,
}

/// Record offsets for the programs `needs` names, plus `cgroup:cgroup_mkdir`, which every
/// backend attaches.
pub fn record_fields(roots: &[PathBuf], needs: Needs) -> Result<RecordFields, LayoutError> {
    let mut fields = RecordFields::default();
    let mkdir = layout(roots, "cgroup", "cgroup_mkdir")?;
    fields.mkdir_root = mkdir.offset("root", 4)?;
    fields.mkdir_id = mkdir.offset("id", 8)?;
    fields.mkdir_path = mkdir.offset("path", 4)?;
    if needs.opens {
        let present = |name: &str| event_dir(roots, "syscalls", name).is_some();
        if present("sys_enter_openat") {
            let l = layout(roots, "syscalls", "sys_enter_openat")?;
            fields.openat_dfd = l.offset("dfd", 8)?;
            fields.openat_filename = l.offset("filename", 8)?;
            fields.openat_flags = l.offset("flags", 8)?;
        }
        if present("sys_enter_open") {
            let l = layout(roots, "syscalls", "sys_enter_open")?;
            fields.open_filename = l.offset("filename", 8)?;
            fields.open_flags = l.offset("flags", 8)?;
        }
        if present("sys_enter_openat2") {
            let l = layout(roots, "syscalls", "sys_enter_openat2")?;
            fields.openat2_dfd = l.offset("dfd", 8)?;
            fields.openat2_filename = l.offset("filename", 8)?;
            fields.openat2_how = l.offset("how", 8)?;
        }
        for (name, slot) in [
            ("sys_exit_openat", &mut fields.exit_openat_ret),
            ("sys_exit_open", &mut fields.exit_open_ret),
            ("sys_exit_openat2", &mut fields.exit_openat2_ret),
        ] {
            if present(name) {
                *slot = layout(roots, "syscalls", name)?.offset("ret", 8)?;
            }
        }
    }
    Ok(fields)
}

/// The tracefs roots this machine has, for [`record_fields`].
pub fn roots() -> Vec<PathBuf> {
    TRACEFS
        .iter()
        .map(PathBuf::from)
        .filter(|r| Path::new(r).join("events").exists())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CGROUP_MKDIR: &str = "name: cgroup_mkdir
ID: 443
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int root;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int level;\toffset:12;\tsize:4;\tsigned:1;
\tfield:u64 id;\toffset:16;\tsize:8;\tsigned:0;
\tfield:__data_loc char[] path;\toffset:24;\tsize:4;\tsigned:0;

print fmt: \"root=%d id=%llu level=%d path=%s\", REC->root, REC->id, REC->level, __get_str(path)
";

    /// A fake tracefs holding `cgroup:cgroup_mkdir` with `format`.
    fn fake_tracefs(format: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("events/cgroup/cgroup_mkdir");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("format"), format).unwrap();
        root
    }

    #[test]
    fn parses_names_offsets_and_sizes_including_pointers_arrays_and_data_loc() {
        let fields = parse_format(
            "\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;\n\
             \tfield:char comm[16];\toffset:40;\tsize:16;\tsigned:0;\n\
             \tfield:__data_loc char[] path;\toffset:56;\tsize:4;\tsigned:0;\n\
             print fmt: \"x\"\n\
             \tfield:broken\n",
        );
        let got: Vec<(&str, u32, u32)> = fields
            .iter()
            .map(|f| (f.name.as_str(), f.offset, f.size))
            .collect();
        assert_eq!(
            got,
            [("filename", 24, 8), ("comm", 40, 16), ("path", 56, 4)]
        );
    }

    #[test]
    fn offsets_follow_the_format_file_not_a_built_in_layout() {
        // A kernel that put a field in front: every offset moves by 8.
        let moved = CGROUP_MKDIR
            .replace("offset:8;", "offset:16;")
            .replace("offset:12;", "offset:20;")
            .replace("offset:16;\tsize:8", "offset:24;\tsize:8")
            .replace("offset:24;\tsize:4", "offset:32;\tsize:4");
        let tracefs = fake_tracefs(&moved);
        let roots = [tracefs.path().to_path_buf()];
        let none = Needs { opens: false };
        let fields = record_fields(&roots, none).unwrap();
        assert_eq!(
            (fields.mkdir_root, fields.mkdir_id, fields.mkdir_path),
            (16, 24, 32)
        );
    }

    #[test]
    fn a_missing_field_or_tracepoint_is_one_sentence_naming_it() {
        let tracefs = fake_tracefs(&CGROUP_MKDIR.replace("u64 id;", "u64 cgid;"));
        let roots = [tracefs.path().to_path_buf()];
        let none = Needs { opens: false };
        let err = record_fields(&roots, none).unwrap_err();
        assert!(matches!(err, LayoutError::NoField { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "tracepoint cgroup:cgroup_mkdir has no record field id (its format changed in this kernel)"
        );
        let tracefs = fake_tracefs(&CGROUP_MKDIR.replace("offset:8;\tsize:4", "offset:8;\tsize:8"));
        let err = record_fields(&[tracefs.path().to_path_buf()], none).unwrap_err();
        assert!(
            matches!(
                err,
                LayoutError::FieldSize {
                    size: 8,
                    reads: 4,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "tracepoint cgroup:cgroup_mkdir record field root is 8 bytes where the probe reads 4"
        );
        let empty = tempfile::tempdir().unwrap();
        std::fs::create_dir(empty.path().join("events")).unwrap();
        let err = record_fields(&[empty.path().to_path_buf()], none).unwrap_err();
        assert!(matches!(err, LayoutError::NoTracepoint { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the kernel has no tracepoint cgroup:cgroup_mkdir (no events/cgroup/cgroup_mkdir under tracefs)"
        );
    }

    #[test]
    fn this_kernels_format_files_give_every_offset_the_programs_read() {
        let roots = roots();
        let readable = event_dir(&roots, "sock", "sk_data_ready")
            .is_some_and(|d| std::fs::read_to_string(d.join("format")).is_ok());
        if !readable {
            eprintln!("skipping: no readable tracefs with sock:sk_data_ready here (needs root)");
            return;
        }
        let all = Needs { opens: true };
        let f = record_fields(&roots, all).expect("this kernel's formats");
        // Every record starts with 8 bytes of common fields.
        for offset in [f.mkdir_root, f.mkdir_id, f.mkdir_path] {
            assert!(offset >= 8, "{f:?}");
        }
        if event_dir(&roots, "syscalls", "sys_enter_openat").is_some() {
            // syscall records: the syscall number, then each argument in an 8-byte slot.
            assert_eq!(
                (f.openat_dfd, f.openat_filename, f.openat_flags),
                (16, 24, 32)
            );
            assert_eq!(f.exit_openat_ret, 16);
        }
    }
}
