//! Variable expansion in instruction arguments, as Docker does it: `$NAME`,
//! `${NAME}`, `${NAME:-default}` (default when unset or empty) and
//! `${NAME:+alternative}` (alternative when set and not empty); the escape
//! character before `$` keeps it literal. Unknown variables expand to nothing.
//! `RUN` in shell form is not expanded here: its shell does that, with the
//! stage's `ENV` and `ARG` values in the environment.

/// Expand `text` with `lookup`; `Err` says what is malformed and where (a
/// 0-based character offset).
pub fn expand(
    text: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, (usize, String)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        if c == escape && chars.get(i + 1) == Some(&'$') {
            out.push('$');
            i += 2;
            continue;
        }
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('{') => {
                let start = i;
                let Some(close) = chars[i + 2..].iter().position(|&c| c == '}') else {
                    return Err((start, "unclosed ${".into()));
                };
                let inner: String = chars[i + 2..i + 2 + close].iter().collect();
                i += close + 3;
                let (name, op) = match inner.find(':') {
                    Some(at) => (&inner[..at], Some(&inner[at..])),
                    None => (inner.as_str(), None),
                };
                if name.is_empty() || !name.chars().all(is_name) {
                    return Err((
                        start,
                        format!("${{{}}} is not a variable", crate::quote::short(&inner)),
                    ));
                }
                let value = lookup(name).filter(|v| !v.is_empty());
                let word = |w: &str| expand(w, escape, lookup).map_err(|(at, e)| (start + at, e));
                match op {
                    None => out.push_str(&value.unwrap_or_default()),
                    Some(op) if op.starts_with(":-") => match value {
                        Some(v) => out.push_str(&v),
                        None => out.push_str(&word(&op[2..])?),
                    },
                    Some(op) if op.starts_with(":+") => {
                        if value.is_some() {
                            out.push_str(&word(&op[2..])?);
                        }
                    }
                    Some(op) => {
                        return Err((
                            start,
                            format!(
                                "${{{}}}: only :- and :+ are supported",
                                crate::quote::short(&format!("{name}{op}"))
                            ),
                        ))
                    }
                }
            }
            Some(&n) if is_name(n) && !n.is_ascii_digit() => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&c| !is_name(c))
                    .map_or(chars.len(), |p| i + 1 + p);
                let name: String = chars[i + 1..end].iter().collect();
                out.push_str(&lookup(&name).unwrap_or_default());
                i = end;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::expand;

    fn run(text: &str) -> Result<String, (usize, String)> {
        let lookup = |name: &str| match name {
            "A" => Some("one".to_owned()),
            "EMPTY" => Some(String::new()),
            "PATH_X" => Some("/opt/x".to_owned()),
            _ => None,
        };
        expand(text, '\\', &lookup)
    }

    #[test]
    fn docker_word_expansion() {
        assert_eq!(run("$A/${A}-$PATH_X").unwrap(), "one/one-/opt/x");
        assert_eq!(
            run("${MISSING:-dflt} ${EMPTY:-e} ${A:-no}").unwrap(),
            "dflt e one"
        );
        assert_eq!(
            run("${A:+yes} [${MISSING:+no}] [${EMPTY:+no}]").unwrap(),
            "yes [] []"
        );
        assert_eq!(run("${MISSING:-$A}").unwrap(), "one");
        assert_eq!(run(r"\$A costs $5 and $").unwrap(), "$A costs $5 and $");
        assert_eq!(run("$UNSET.").unwrap(), ".");
        assert_eq!(run("a ${A").unwrap_err(), (2, "unclosed ${".to_owned()));
        assert_eq!(
            run("${A:?err}").unwrap_err().1,
            "${A:?err}: only :- and :+ are supported"
        );
        assert_eq!(run("${a-b}").unwrap_err().1, "${a-b} is not a variable");
    }
}
