//! Why a backend did not come up, typed: callers tell a backend the node cannot run from one
//! that loaded but did not prove it sees (a forced backend keeps running then), and tests
//! match variants rather than text. Each variant's message
//! is one clause; the kernel's and libraries' own words stay in `source()`, and [`sentence`]
//! joins the chain into the one sentence logs, status and the exit message show.
use std::error::Error as StdError;

use aya::{maps::MapError, programs::ProgramError, BtfError, EbpfError};

use super::tracefs::LayoutError;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("tracefs is not mounted (mount -t tracefs none /sys/kernel/tracing)")]
    NoTracefs,
    #[error("the kernel has no sock:sk_data_ready tracepoint (needs Linux 6.6 or newer)")]
    NoDataReadyTracepoint,
    /// Built into the kernel but not in its `lsm=` list: programs would load and never run.
    #[error(
        "the BPF LSM is not active (/sys/kernel/security/lsm reads {active:?}; boot with lsm=...,bpf)"
    )]
    LsmInactive { active: String },
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("reading kernel BTF for hook attachment")]
    Btf(#[source] Box<BtfError>),
    #[error("loading the eBPF object failed")]
    Object(#[source] Box<EbpfError>),
    #[error("the kernel refused {hook} program {program}")]
    Refused {
        hook: &'static str,
        program: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    /// `ENOTSUPP` from the attach: the kernel has BPF trampolines for BPF programs but
    /// cannot route a kernel function through one. arm64 gained that (ftrace direct calls)
    /// with Linux 6.4, so its 6.1 kernels load fentry and LSM programs and refuse them here.
    #[error(
        "the kernel cannot attach BPF trampolines to kernel functions ({program} on {target} \
         returned ENOTSUPP; arm64 needs Linux 6.4 or newer, for ftrace direct calls)"
    )]
    NoTrampoline {
        program: &'static str,
        target: String,
    },
    #[error("{program} is attached but its link cannot be held as a bpf_link")]
    Link {
        program: &'static str,
        #[source]
        source: Box<aya::programs::links::LinkError>,
    },
    #[error("attaching {program} to {target} failed")]
    Attach {
        program: &'static str,
        target: String,
        #[source]
        source: Box<ProgramError>,
    },
    /// The eBPF object lacks a program or map user space expects, or holds it with another
    /// type: a defect of this build, the same on every node.
    #[error("the eBPF object has no {what} {name} of the expected type")]
    NotInObject {
        what: &'static str,
        name: &'static str,
        #[source]
        source: Option<Box<ObjectMismatch>>,
    },
}

/// What type conversion refused an object's program or map. (aya's errors are large, so the
/// variants holding them box them: every `Result` carrying a `LoadError` stays small.)
#[derive(Debug, thiserror::Error)]
pub enum ObjectMismatch {
    #[error(transparent)]
    Program(#[from] ProgramError),
    #[error(transparent)]
    Map(#[from] MapError),
}

/// `ENOTSUPP`: a kernel-internal errno, not in libc, that leaks to user space when a
/// trampoline program's attach is refused (arm64 before 6.4).
pub(super) const ENOTSUPP: i32 = 524;

impl LoadError {
    /// An attach failure, or [`LoadError::NoTrampoline`] where the kernel says [`ENOTSUPP`].
    pub(super) fn attach(program: &'static str, target: String, source: ProgramError) -> Self {
        match &source {
            ProgramError::SyscallError(e) if e.io_error.raw_os_error() == Some(ENOTSUPP) => {
                LoadError::NoTrampoline { program, target }
            }
            _ => LoadError::Attach {
                program,
                target,
                source: Box::new(source),
            },
        }
    }

    pub(super) fn missing(what: &'static str, name: &'static str) -> Self {
        LoadError::NotInObject {
            what,
            name,
            source: None,
        }
    }

    pub(super) fn mismatch(
        what: &'static str,
        name: &'static str,
        source: impl Into<ObjectMismatch>,
    ) -> Self {
        LoadError::NotInObject {
            what,
            name,
            source: Some(Box::new(source.into())),
        }
    }
}

/// The error and its causes in one sentence, `outer: inner: innermost`. A cause whose words
/// the sentence already holds is left out (several libraries print their source in their own
/// message), and aya's empty `Verifier output:` tail is dropped.
pub fn sentence(error: &(dyn StdError + 'static)) -> String {
    let mut out = String::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        let text = text
            .trim_end_matches([' ', '\n', ':'])
            .trim_end_matches(". Verifier output")
            .trim();
        if !text.is_empty() && !out.contains(text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(text);
        }
        next = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_reads_as_one_sentence_with_the_kernels_errno_once() {
        let refused = LoadError::Refused {
            hook: "LSM",
            program: "lsm_file_open",
            source: Box::new(ProgramError::LoadError {
                io_error: std::io::Error::from_raw_os_error(libc::EPERM),
                verifier_log: aya_obj::VerifierLog::new(String::new()),
            }),
        };
        assert_eq!(
            sentence(&refused),
            "the kernel refused LSM program lsm_file_open: the BPF_PROG_LOAD syscall returned \
             Operation not permitted (os error 1)"
        );
    }

    #[test]
    fn enotsupp_from_an_attach_names_the_missing_trampoline_support_and_others_stay_attach() {
        let attach = |errno| {
            LoadError::attach(
                "fentry_file_open",
                "security_file_open".into(),
                ProgramError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_raw_tracepoint_open",
                    io_error: std::io::Error::from_raw_os_error(errno),
                }),
            )
        };
        let no_trampoline = attach(ENOTSUPP);
        assert!(matches!(no_trampoline, LoadError::NoTrampoline { .. }));
        assert!(sentence(&no_trampoline).contains("arm64 needs Linux 6.4 or newer"));
        assert!(matches!(attach(libc::EPERM), LoadError::Attach { .. }));
    }

    #[test]
    fn every_cause_in_the_chain_is_kept_in_order() {
        let read = LoadError::Layout(LayoutError::Read {
            path: "/sys/kernel/tracing/events/cgroup/cgroup_mkdir/format".into(),
            source: std::io::Error::from_raw_os_error(libc::EACCES),
        });
        assert_eq!(
            sentence(&read),
            "cannot read /sys/kernel/tracing/events/cgroup/cgroup_mkdir/format: \
             Permission denied (os error 13)"
        );
    }
}
