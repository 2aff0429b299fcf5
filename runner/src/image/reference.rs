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
    parse_full(&full).map_err(|reason| invalid(&reason))
}

/// One path component of a repository: `[a-z0-9]+` joined by `.`, `_`, `__` or
/// runs of `-` (the distribution grammar).
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: &u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(&b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(&b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn valid_host(h: &str) -> bool {
    let (name, port) = match h.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (h, None),
    };
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|x| x.is_ascii_alphanumeric() || x == b'-')
        })
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|x| x.is_ascii_digit()))
}

fn valid_tag(t: &str) -> bool {
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    (1..=128).contains(&t.len())
        && word(t.as_bytes()[0])
        && t.bytes().all(|x| word(x) || x == b'.' || x == b'-')
}

fn valid_digest(d: &str) -> bool {
    let Some((algorithm, hex)) = d.split_once(':') else {
        return false;
    };
    let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|part| {
        part.as_bytes()
            .first()
            .is_some_and(|x| x.is_ascii_alphabetic())
            && part.bytes().all(|x| x.is_ascii_alphanumeric())
    });
    algorithm_ok && hex.len() >= 32 && hex.bytes().all(|x| x.is_ascii_hexdigit())
}

/// Parse `host/repo[:tag][@digest]` by hand: `Reference::from_str` compiles a
/// large Unicode regex on first use, about 30 ms of every CLI start.
fn parse_full(full: &str) -> Result<Reference, String> {
    let (rest, digest) = match full.split_once('@') {
        Some((rest, digest)) if valid_digest(digest) => (rest, Some(digest.to_owned())),
        Some((_, digest)) => return Err(format!("digest {digest:?} is not algorithm:hex")),
        None => (full, None),
    };
    let (name, tag) = match rest.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag.to_owned())),
        _ => (rest, None),
    };
    if let Some(tag) = &tag {
        if !valid_tag(tag) {
            return Err(format!(
                "tag {tag:?} is not [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
            ));
        }
    }
    let (host, repository) = name
        .split_once('/')
        .ok_or_else(|| "it has no repository after the registry host".to_owned())?;
    if !valid_host(host) {
        return Err(format!("registry host {host:?} is not host[:port]"));
    }
    if repository.len() > 255 {
        return Err("the repository name is longer than 255 characters".into());
    }
    if let Some(bad) = repository.split('/').find(|c| !valid_component(c)) {
        return Err(format!(
            "repository component {bad:?} must be lowercase letters and digits, joined by . _ __ or -"
        ));
    }
    // Docker Hub's official images live under library/.
    let repository = if matches!(host, "docker.io" | "index.docker.io") && !repository.contains('/')
    {
        format!("library/{repository}")
    } else {
        repository.to_owned()
    };
    let host = if host == "index.docker.io" {
        "docker.io"
    } else {
        host
    }
    .to_owned();
    Ok(match (tag, digest) {
        (Some(tag), Some(digest)) => Reference::with_tag_and_digest(host, repository, tag, digest),
        (None, Some(digest)) => Reference::with_digest(host, repository, digest),
        (tag, None) => {
            Reference::with_tag(host, repository, tag.unwrap_or_else(|| "latest".into()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn defaults_and_explicit_hosts() {
        let r = |s: &str| resolve(s, "127.0.0.1:8080").unwrap().whole();
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
        assert_eq!(r("docker.io/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            r("a/b.c__d-e--f:V1_2.3-x"),
            "127.0.0.1:8080/a/b.c__d-e--f:V1_2.3-x"
        );
        let with_digest = format!("h:1/x:t@{digest}");
        // The hand-written grammar agrees with oci-spec's regex parser.
        for ok in ["127.0.0.1:8080/a/b:1", "h.example/x-y/z__w:t", &with_digest] {
            assert_eq!(
                resolve(ok, "h").unwrap(),
                ok.parse::<oci_client::Reference>().unwrap()
            );
        }
        let long_tag = format!("a/b:{}", "t".repeat(129));
        for bad in [
            "",
            "two words",
            "UPPER/Case",
            "a/b:bad tag",
            "a/b:-tag",
            "a/b_",
            "a//b",
            "a/b@sha256:xyz",
            "bad_host.example/x",
            "a/b:",
            &long_tag,
        ] {
            assert!(resolve(bad, "127.0.0.1:8080").is_err(), "{bad}");
        }
    }
}
