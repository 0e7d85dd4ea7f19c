//! Image references as exemptions name them: an exact repository, normalised the way the
//! runtimes normalise it (`datadog/agent` is `docker.io/datadog/agent`, `nginx` is
//! `docker.io/library/nginx`), with an optional tag or digest pattern.
//!
//! Only the tag or digest may hold wildcards (`*`, `?`, `[...]`), and neither contains `/`,
//! so no pattern can reach into another repository: `datadog/agent` never matches
//! `registry.example/x/datadog/agent`. Hand-written (about forty lines) because the crates
//! that parse references also bring registry clients.
use globset::{Glob, GlobMatcher};

/// A parsed image reference: normalised repository, tag and digest as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

fn is_domain(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

/// Splits and normalises a reference; `None` when it is empty or has an empty part.
pub fn parse(reference: &str) -> Option<ImageRef> {
    let (name, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d.to_string())),
        None => (reference, None),
    };
    // A tag follows the last ':' after the last '/' (a ':' before it is a registry port).
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (
            &name[..last_slash + i],
            Some(name[last_slash + i + 1..].to_string()),
        ),
        None => (name, None),
    };
    let (domain, path) = match name.split_once('/') {
        Some((first, rest)) if is_domain(first) => (first, rest.to_string()),
        _ => ("docker.io", name.to_string()),
    };
    let domain = if domain == "index.docker.io" {
        "docker.io"
    } else {
        domain
    };
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    let empty = |s: &Option<String>| s.as_deref() == Some("");
    if path.is_empty() || path.split('/').any(str::is_empty) || empty(&tag) || empty(&digest) {
        return None;
    }
    Some(ImageRef {
        repository: format!("{domain}/{path}"),
        tag,
        digest,
    })
}

/// An exemption's image entry, compiled.
#[derive(Debug, Clone)]
pub struct ImagePattern {
    repository: String,
    tag: Option<GlobMatcher>,
    digest: Option<GlobMatcher>,
}

const WILDCARDS: &[char] = &['*', '?', '[', ']', '{', '}'];

impl ImagePattern {
    /// Compiles `REPOSITORY[:TAG-PATTERN][@DIGEST-PATTERN]`, or says why not.
    pub fn new(pattern: &str) -> Result<Self, String> {
        let r = parse(pattern).ok_or_else(|| format!("{pattern:?} is not an image reference"))?;
        if r.repository.contains(WILDCARDS) {
            return Err(format!(
                "{pattern:?}: the repository must be exact (wildcards only in the tag or digest)"
            ));
        }
        // Registry host names may have capitals; repository paths may not.
        let valid_repo = r.repository.split_once('/').is_some_and(|(domain, path)| {
            domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b))
                && path
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
        });
        if !valid_repo {
            return Err(format!("{pattern:?}: invalid repository name"));
        }
        let glob = |p: Option<&String>| -> Result<Option<GlobMatcher>, String> {
            p.map(|p| {
                Glob::new(p)
                    .map(|g| g.compile_matcher())
                    .map_err(|e| format!("{pattern:?}: bad pattern {p:?}: {}", e.kind()))
            })
            .transpose()
        };
        Ok(Self {
            repository: r.repository,
            tag: glob(r.tag.as_ref())?,
            digest: glob(r.digest.as_ref())?,
        })
    }

    /// Whether `image` (as the runtime names it) is this repository with a matching tag and
    /// digest. A pattern with a tag needs the image to carry a matching tag, likewise digests.
    pub fn matches(&self, image: &str) -> bool {
        let Some(r) = parse(image) else {
            return false;
        };
        let part_ok = |want: &Option<GlobMatcher>, have: &Option<String>| match want {
            None => true,
            Some(g) => have.as_deref().is_some_and(|h| g.is_match(h)),
        };
        r.repository == self.repository
            && part_ok(&self.tag, &r.tag)
            && part_ok(&self.digest, &r.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_normalised_like_the_runtimes_do() {
        let cases = [
            ("nginx", "docker.io/library/nginx", None, None),
            ("nginx:1.25", "docker.io/library/nginx", Some("1.25"), None),
            (
                "datadog/agent:7",
                "docker.io/datadog/agent",
                Some("7"),
                None,
            ),
            (
                "docker.io/datadog/agent",
                "docker.io/datadog/agent",
                None,
                None,
            ),
            (
                "index.docker.io/datadog/agent",
                "docker.io/datadog/agent",
                None,
                None,
            ),
            (
                "localhost:5000/x/y:t",
                "localhost:5000/x/y",
                Some("t"),
                None,
            ),
            ("localhost/x", "localhost/x", None, None),
            (
                "gcr.io/datadoghq/agent:7@sha256:abc",
                "gcr.io/datadoghq/agent",
                Some("7"),
                Some("sha256:abc"),
            ),
        ];
        for (input, repo, tag, digest) in cases {
            let r = parse(input).unwrap();
            assert_eq!(r.repository, repo, "{input}");
            assert_eq!(r.tag.as_deref(), tag, "{input}");
            assert_eq!(r.digest.as_deref(), digest, "{input}");
        }
        for bad in ["", ":", "x:", "@", "a//b", "x@"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn patterns_match_one_repository_only() {
        let m = |p: &str, i: &str| ImagePattern::new(p).unwrap().matches(i);
        assert!(m("datadog/agent", "docker.io/datadog/agent:7.50.1"));
        assert!(m("docker.io/datadog/agent", "datadog/agent"));
        assert!(m("datadog/agent:7.*", "datadog/agent:7.50.1"));
        assert!(!m("datadog/agent:6.*", "datadog/agent:7.50.1"));
        assert!(!m("datadog/agent", "registry.example/x/datadog/agent:1"));
        assert!(!m("datadog/agent", "docker.io/datadog/agent-evil:1"));
        assert!(!m("datadog/agent", "docker.io/evil/datadog/agent:1"));
        assert!(!m("datadog/agent:7", "datadog/agent@sha256:1"));
        assert!(m("datadog/agent@sha256:ab*", "datadog/agent:7@sha256:abcd"));
        assert!(!m("datadog/agent@sha256:ab*", "datadog/agent:7"));
        assert!(m("nginx", "docker.io/library/nginx:latest"));
        assert!(!m("nginx", "docker.io/nginx/nginx"));
    }

    #[test]
    fn wildcards_in_the_repository_are_refused() {
        for bad in [
            "*datadog/agent",
            "datadog/*",
            "*/agent:7",
            "data?og/agent",
            "Datadog/agent",
        ] {
            assert!(ImagePattern::new(bad).is_err(), "{bad}");
        }
        assert!(ImagePattern::new("gcr.io/datadoghq/agent:[67].*").is_ok());
    }
}
