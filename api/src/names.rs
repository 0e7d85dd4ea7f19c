//! Names and label values the API server accepts whatever the input: a policy name may be
//! 253 characters and a node name too, but a label value holds at most 63.
use sha2::{Digest, Sha256};

/// Longest label value the API server accepts.
pub const MAX_LABEL_VALUE: usize = 63;
/// Characters of the original kept in front of the digest of a value too long for a label.
const KEPT_PREFIX: usize = 52;

/// The first 10 hex characters (40 bits) of the SHA-256 of `s`: tells long values apart in
/// names and labels. Labels only select; anything that must be exact compares the full
/// value, which stays in the spec.
pub fn short_digest(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .take(5)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether the API server accepts `s` as a label value: empty, or at most 63 of
/// `[A-Za-z0-9._-]` beginning and ending alphanumeric.
pub fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    s.is_empty()
        || (b.len() <= MAX_LABEL_VALUE
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric())
}

/// The label value that stands for `s`: `s` itself when it is a valid label value,
/// otherwise its first 52 characters (characters a label may not hold become `-`, trimmed
/// so it begins and ends alphanumeric), `-`, and [`short_digest`] of the whole of `s`.
/// Every writer of a label and every selector on one goes through this function.
pub fn label_value(s: &str) -> String {
    if is_label_value(s) {
        return s.to_string();
    }
    let prefix: String = s
        .chars()
        .take(KEPT_PREFIX)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let prefix = prefix.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if prefix.is_empty() {
        short_digest(s)
    } else {
        format!("{prefix}-{}", short_digest(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_label_values_are_kept_as_they_are() {
        for s in ["", "default", "audit-all", "a.b_c-1", &"x".repeat(63)] {
            assert_eq!(label_value(s), s);
        }
    }

    #[test]
    fn a_253_character_policy_name_becomes_a_52_character_prefix_and_a_digest() {
        let name = format!("{}.{}", "a".repeat(100), "b".repeat(152));
        let v = label_value(&name);
        assert_eq!(v.len(), 63);
        assert_eq!(v, format!("{}-{}", "a".repeat(52), short_digest(&name)));
        assert!(is_label_value(&v));
    }

    #[test]
    fn the_prefix_is_trimmed_to_end_alphanumeric() {
        // 51 characters, then a dot at position 52: the dot is dropped.
        let name = format!("{}.{}", "p".repeat(51), "q".repeat(30));
        let v = label_value(&name);
        assert_eq!(v, format!("{}-{}", "p".repeat(51), short_digest(&name)));
        assert!(is_label_value(&v));
    }

    #[test]
    fn values_that_differ_only_past_the_prefix_get_different_labels() {
        let a = format!("{}-one", "n".repeat(70));
        let b = format!("{}-two", "n".repeat(70));
        assert_ne!(label_value(&a), label_value(&b));
        assert_eq!(label_value(&a), label_value(&a), "deterministic");
    }

    #[test]
    fn characters_a_label_cannot_hold_never_reach_it() {
        for s in [
            "-x-",
            "a b",
            "ünïcode",
            "a/b",
            "...",
            "😀",
            &"/".repeat(80),
            "x:",
        ] {
            let v = label_value(s);
            assert!(is_label_value(&v), "{s:?} -> {v:?}");
            assert!(!v.is_empty());
        }
        assert_eq!(label_value("a/b"), format!("a-b-{}", short_digest("a/b")));
    }

    #[test]
    fn the_digest_is_ten_lowercase_hex_characters_of_sha256() {
        // SHA-256("abc") = ba7816bf8f01cfea...
        assert_eq!(short_digest("abc"), "ba7816bf8f");
    }

    #[test]
    fn label_value_validity_follows_the_api_rules() {
        assert!(!is_label_value(&"x".repeat(64)));
        assert!(!is_label_value("-a"));
        assert!(!is_label_value("a."));
        assert!(!is_label_value("a b"));
        assert!(is_label_value("A.b-C_9"));
    }
}
