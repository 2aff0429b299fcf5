//! From text to logical lines: parser directives (`# escape=`), continuations
//! with the escape character at the end of a line, comments (a `#` first on a
//! line) and blank lines, which do not end an instruction in progress.

use super::ParseError;

/// One instruction's text with where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logical {
    pub line: usize,
    /// Column of the first non-blank character.
    pub col: usize,
    pub text: String,
}

/// The escape character and the logical lines of `text`.
pub fn logical_lines(text: &str) -> Result<(char, Vec<Logical>), ParseError> {
    let mut escape = '\\';
    let mut in_directives = true;
    let mut out = Vec::new();
    let mut current: Option<Logical> = None;
    for (i, raw) in text.lines().enumerate() {
        let number = i + 1;
        let trimmed = raw.trim_start();
        if in_directives {
            if let Some(rest) = trimmed.strip_prefix('#') {
                if let Some((key, value)) = rest.split_once('=') {
                    let key = key.trim().to_ascii_lowercase();
                    if key == "escape" {
                        escape = match value.trim() {
                            "\\" => '\\',
                            "`" => '`',
                            other => {
                                return Err(ParseError {
                                    line: number,
                                    col: raw.len() - trimmed.len() + 1,
                                    message: format!(
                                        "escape directive {} must be \\ or `",
                                        crate::quote::quoted(other)
                                    ),
                                })
                            }
                        };
                        continue;
                    }
                    if key == "syntax" || key == "check" {
                        continue; // BuildKit front-end hints: nothing to do here
                    }
                }
            }
            in_directives = false;
        }
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        let col = raw.len() - trimmed.len() + 1;
        let stripped = raw.trim_end();
        let (body, continues) = match stripped.strip_suffix(escape) {
            Some(body) => (body, true),
            None => (stripped, false),
        };
        match current.as_mut() {
            Some(l) => {
                l.text.push(' ');
                l.text.push_str(body.trim());
            }
            None => {
                current = Some(Logical {
                    line: number,
                    col,
                    text: body.trim().to_owned(),
                })
            }
        }
        if !continues {
            out.extend(current.take());
        }
    }
    out.extend(current.take());
    Ok((escape, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations_comments_and_the_escape_directive() {
        let (escape, lines) = logical_lines(
            "# syntax=docker/dockerfile:1\nFROM a\n\nRUN one \\\n  # a comment inside\n  two\n",
        )
        .unwrap();
        assert_eq!(escape, '\\');
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[1].line, lines[1].text.as_str()), (4, "RUN one two"));

        let (escape, lines) =
            logical_lines("# escape=`\nFROM a\nRUN dir C:\\ `\n  && x\n").unwrap();
        assert_eq!(escape, '`');
        assert_eq!(lines[1].text, "RUN dir C:\\ && x");
        assert!(logical_lines("# escape=x\nFROM a\n").is_err());
        // A directive after the first instruction is a comment.
        let (escape, _) = logical_lines("FROM a\n# escape=`\n").unwrap();
        assert_eq!(escape, '\\');
    }
}
