//! Repository names and tag/digest references, validated per the distribution spec.

use std::sync::LazyLock;

use regex::Regex;

use crate::digest::Digest;

/// The longest repository name accepted. The spec asks registries to take at least
/// 255 characters for host plus name; we cap the name itself there.
pub const MAX_NAME_LEN: usize = 255;

static NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$",
    )
    .unwrap()
});
static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$").unwrap());

/// Why a repository name or reference was refused, for the NAME_INVALID /
/// MANIFEST_INVALID messages.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "repository name is {} characters long; the limit is {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if !NAME.is_match(name) {
        return Err(format!(
            "repository name {name:?} is invalid: use lowercase letters, digits and single separators (. _ __ -) in /-separated components"
        ));
    }
    Ok(())
}

/// A manifest reference: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, String> {
        if s.contains(':') {
            return s
                .parse::<Digest>()
                .map(Reference::Digest)
                .map_err(|e| e.to_string());
        }
        if TAG.is_match(s) {
            Ok(Reference::Tag(s.to_owned()))
        } else {
            Err(format!("tag {s:?} is invalid: up to 128 characters of [A-Za-z0-9_.-], not starting with . or -"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "library/busybox",
            "a.b/c_d/e__f/g-h",
            "x--y",
            "team/app/sub",
        ] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "Upper", "a/../b", "..", "a//b", "/a", "a/", "a..b", "a___b", "-a", "a b",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_name(&"a".repeat(256)).is_err());
        assert!(check_name(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn references() {
        assert_eq!(
            Reference::parse("v1.0").unwrap(),
            Reference::Tag("v1.0".into())
        );
        assert!(Reference::parse(".hidden").is_err());
        assert!(Reference::parse(&"t".repeat(129)).is_err());
        assert!(matches!(
            Reference::parse(&Digest::of(b"x").to_string()).unwrap(),
            Reference::Digest(_)
        ));
        assert!(Reference::parse("sha256:zz").is_err());
    }
}
