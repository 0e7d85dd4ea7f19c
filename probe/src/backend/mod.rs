//! Attach backends and how one is chosen. Every backend feeds the same ring-buffer events
//! into the same decision core; only how the kernel is hooked differs.
pub mod tracepoint;

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendRequest {
    Auto,
    Lsm,
    Fentry,
    Tracepoint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Lsm,
    Fentry,
    Tracepoint,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Lsm => "lsm",
            BackendKind::Fentry => "fentry",
            BackendKind::Tracepoint => "tracepoint",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a backend can run here, and if not, why.
pub type Availability = Result<(), String>;

/// Picks the best backend that is available, in the order lsm > fentry > tracepoint, or the
/// one asked for. Returns the choice and a sentence saying why, for logs and status.
pub fn select(
    request: BackendRequest,
    available: impl Fn(BackendKind) -> Availability,
) -> Result<(BackendKind, String), String> {
    let forced = match request {
        BackendRequest::Auto => None,
        BackendRequest::Lsm => Some(BackendKind::Lsm),
        BackendRequest::Fentry => Some(BackendKind::Fentry),
        BackendRequest::Tracepoint => Some(BackendKind::Tracepoint),
    };
    if let Some(kind) = forced {
        return match available(kind) {
            Ok(()) => Ok((kind, format!("--backend {kind} was requested"))),
            Err(why) => Err(format!("--backend {kind} cannot run on this node: {why}")),
        };
    }
    let mut refused = Vec::new();
    for kind in [
        BackendKind::Lsm,
        BackendKind::Fentry,
        BackendKind::Tracepoint,
    ] {
        match available(kind) {
            Ok(()) if refused.is_empty() => {
                return Ok((
                    kind,
                    format!("{kind} is the best backend and it is available"),
                ))
            }
            Ok(()) => return Ok((kind, format!("{kind} chosen; {}", refused.join("; ")))),
            Err(why) => refused.push(format!("{kind} unavailable: {why}")),
        }
    }
    Err(format!(
        "no backend can run on this node: {}",
        refused.join("; ")
    ))
}

/// What this build can do: `lsm` and `fentry` attach layers are not part of it yet.
pub fn availability_here(kind: BackendKind) -> Availability {
    match kind {
        BackendKind::Lsm | BackendKind::Fentry => {
            Err("this build of sockwarden-probe has no such attach layer yet".to_string())
        }
        BackendKind::Tracepoint => tracepoint::available(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(ok: &'static [BackendKind]) -> impl Fn(BackendKind) -> Availability {
        move |k| {
            if ok.contains(&k) {
                Ok(())
            } else {
                Err(format!("{k} refused"))
            }
        }
    }

    #[test]
    fn auto_prefers_lsm_then_fentry_then_tracepoint_and_says_why() {
        use BackendKind::*;
        let table: &[(&'static [BackendKind], Option<BackendKind>)] = &[
            (&[Lsm, Fentry, Tracepoint], Some(Lsm)),
            (&[Fentry, Tracepoint], Some(Fentry)),
            (&[Tracepoint], Some(Tracepoint)),
            (&[Lsm], Some(Lsm)),
            (&[], None),
        ];
        for (ok, want) in table {
            let got = select(BackendRequest::Auto, only(ok));
            assert_eq!(
                got.as_ref().ok().map(|(k, _)| *k),
                *want,
                "available {ok:?}"
            );
        }
        let (_, why) = select(BackendRequest::Auto, only(&[Tracepoint])).unwrap();
        assert!(why.contains("lsm unavailable: lsm refused"), "{why}");
        assert!(why.contains("fentry unavailable"), "{why}");
    }

    #[test]
    fn a_forced_backend_fails_clearly_when_it_cannot_run() {
        let err = select(BackendRequest::Lsm, only(&[BackendKind::Tracepoint])).unwrap_err();
        assert!(
            err.starts_with("--backend lsm cannot run on this node"),
            "{err}"
        );
        let (kind, _) =
            select(BackendRequest::Tracepoint, only(&[BackendKind::Tracepoint])).unwrap();
        assert_eq!(kind, BackendKind::Tracepoint);
    }
}
