//! Untrusted text in error messages: at most [`LIMIT`] characters of it,
//! control and other non-printable characters escaped. A build's errors go to
//! the step log; if a file that is not a Containerfile at all reaches the
//! parser (a symlink to a host file, say), its errors must not reprint it.

/// Characters of the original text an excerpt keeps.
pub const LIMIT: usize = 40;

/// `text` escaped as Rust's `{:?}` escapes a string's characters (quotes,
/// backslashes, control and non-printable characters), cut after [`LIMIT`]
/// characters with `…`; without surrounding quotes.
pub fn short(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == LIMIT {
            out.push('…');
            break;
        }
        out.extend(c.escape_debug());
    }
    out
}

/// [`short`] in double quotes, like `{:?}` of a short string.
pub fn quoted(text: &str) -> String {
    format!("\"{}\"", short(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_and_escaped() {
        assert_eq!(quoted("RUNN"), "\"RUNN\"");
        assert_eq!(quoted("a\"b\\c"), format!("{:?}", "a\"b\\c"));
        assert_eq!(
            short("tab\there\u{1b}[31m\r\n"),
            "tab\\there\\u{1b}[31m\\r\\n"
        );
        // Right-to-left override and a zero-width space are not shown raw.
        assert_eq!(short("a\u{202e}b\u{200b}"), "a\\u{202e}b\\u{200b}");
        let long = "x".repeat(100);
        assert_eq!(short(&long), format!("{}…", "x".repeat(LIMIT)));
        assert_eq!(short(&"x".repeat(LIMIT)), "x".repeat(LIMIT));
        assert_eq!(short("ünïcödé"), "ünïcödé");
    }
}
