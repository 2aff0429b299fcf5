//! Resolving what a user types (`busybox`, `team/app:v1`, `host:5000/x@sha256:…`)
//! into a full reference. A name without a registry host means Slipway's own
//! registry; a single-segment name gets `library/`, as Docker does.

use oci_client::Reference;

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("image reference {input:?} is invalid: {reason}")]
    Invalid { input: String, reason: String },
}

/// Is the first path component a registry host? (Docker's rule: it contains a
/// `.` or a `:`, or is `localhost`.)
fn is_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

/// Resolve `input` against `default_registry` (host[:port] of Slipway's registry).
pub fn resolve(input: &str, default_registry: &str) -> Result<Reference, ReferenceError> {
    let invalid = |reason: &str| ReferenceError::Invalid {
        input: input.to_owned(),
        reason: reason.to_owned(),
    };
    if input.is_empty() || input.chars().any(char::is_whitespace) {
        return Err(invalid("it is empty or contains whitespace"));
    }
    let (first, rest) = input.split_once('/').unwrap_or(("", input));
    let full = if !first.is_empty() && is_host(first) {
        input.to_owned()
    } else if first.is_empty() {
        // One segment: `busybox`, `busybox:1.36`, `busybox@sha256:…`.
        format!("{default_registry}/library/{rest}")
    } else {
        format!("{default_registry}/{input}")
    };
    let with_tag = if full.contains('@')
        || full
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'))
    {
        full
    } else {
        format!("{full}:latest")
    };
    with_tag
        .parse::<Reference>()
        .map_err(|e| invalid(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn defaults_and_explicit_hosts() {
        let r = |s| resolve(s, "127.0.0.1:8080").unwrap().whole();
        assert_eq!(r("busybox"), "127.0.0.1:8080/library/busybox:latest");
        assert_eq!(r("busybox:1.36"), "127.0.0.1:8080/library/busybox:1.36");
        assert_eq!(r("team/app"), "127.0.0.1:8080/team/app:latest");
        assert_eq!(r("team/app:v1"), "127.0.0.1:8080/team/app:v1");
        assert_eq!(
            r("registry.example.com/x/y:2"),
            "registry.example.com/x/y:2"
        );
        assert_eq!(r("localhost/x"), "localhost/x:latest");
        assert_eq!(r("10.0.0.1:5000/x"), "10.0.0.1:5000/x:latest");
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            r(&format!("busybox@{digest}")),
            format!("127.0.0.1:8080/library/busybox@{digest}")
        );
        for bad in ["", "two words", "UPPER/Case", "a/b:bad tag"] {
            assert!(resolve(bad, "127.0.0.1:8080").is_err(), "{bad}");
        }
    }
}
