//! Masking secrets in log output as it streams.
//!
//! Every secret value is hidden, and so are its base64 forms and, for a
//! multi-line value, each of its lines (and their base64 forms). Output
//! arrives in arbitrary chunks, so a secret may be split across two: the
//! masker holds back the longest tail that could still be the start of a
//! secret until the next chunk (or the end) decides.
//!
//! base64 forms: a value inside a base64 stream is encoded differently
//! depending on its offset modulo 3 (`printf x%s "$S" | base64`), and is
//! usually followed by a newline (`echo "$S" | base64`). For the value and
//! the value plus `\n`, at each of the three offsets, the masker hides the
//! characters that depend on those bytes alone (the first and last one or
//! two characters also hold neighbouring bits, so they are left out), and the
//! whole padded encoding. `base64` wraps its output at 76 columns, so these
//! patterns match across line breaks; the breaks are kept in the output.

use base64::Engine as _;

const MASK: &[u8] = b"********";
/// Lines of a multi-line secret shorter than this are not masked on their own
/// (a lone "}" or "-----" would blank out unrelated output).
const MIN_LINE: usize = 4;
/// Derived base64 forms shorter than this are not masked: a few characters
/// of base64 occur in ordinary output by chance.
const MIN_BASE64: usize = 8;

/// One thing to hide.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    bytes: Vec<u8>,
    /// base64: matches with line breaks between its characters.
    across_lines: bool,
}

/// How a pattern fits the output at one position.
enum Fit {
    /// Wholly, ending before this offset.
    Whole(usize),
    /// So far, but the output ends before the pattern does.
    Prefix,
    No,
}

impl Pattern {
    fn fit(&self, buf: &[u8], start: usize) -> Fit {
        let mut j = start;
        for (k, &want) in self.bytes.iter().enumerate() {
            loop {
                let Some(&got) = buf.get(j) else {
                    return Fit::Prefix;
                };
                if self.across_lines && k > 0 && (got == b'\n' || got == b'\r') {
                    j += 1;
                    continue;
                }
                if got != want {
                    return Fit::No;
                }
                j += 1;
                break;
            }
        }
        Fit::Whole(j)
    }
}

/// The base64 characters of `bytes` that depend on nothing else, when
/// `bytes` sits `offset` (0, 1 or 2) bytes into a base64 stream.
fn stable_base64(bytes: &[u8], offset: usize) -> Vec<u8> {
    let mut padded = vec![0u8; offset];
    padded.extend_from_slice(bytes);
    let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&padded);
    // Character j holds bits [6j, 6j + 6); the value's are [8 * offset,
    // 8 * (offset + len)).
    let first = (8 * offset).div_ceil(6);
    let end = (8 * (offset + bytes.len())) / 6;
    encoded.as_bytes()[first.min(end)..end].to_vec()
}

/// The base64 forms of `value` worth masking (see the module's comment).
fn base64_forms(value: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = Vec::new();
    let mut with_newline = value.to_vec();
    with_newline.push(b'\n');
    for bytes in [value, &with_newline[..]] {
        forms.push(
            base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into_bytes(),
        );
        for offset in 0..3 {
            forms.push(stable_base64(bytes, offset));
        }
    }
    forms.retain(|f| f.len() >= MIN_BASE64);
    forms
}

pub struct Masker {
    /// Longest first, so a value wins over one of its own lines.
    patterns: Vec<Pattern>,
    pending: Vec<u8>,
}

impl Masker {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Masker {
        let mut patterns: Vec<Pattern> = Vec::new();
        let plain = |bytes: &[u8]| Pattern {
            bytes: bytes.to_vec(),
            across_lines: false,
        };
        let encoded = |bytes: Vec<u8>| Pattern {
            bytes,
            across_lines: true,
        };
        for value in secrets {
            if value.is_empty() {
                continue;
            }
            patterns.push(plain(value.as_bytes()));
            // The exact encoding, however short (as before).
            patterns.push(encoded(
                base64::engine::general_purpose::STANDARD
                    .encode(value)
                    .into_bytes(),
            ));
            patterns.extend(base64_forms(value.as_bytes()).into_iter().map(encoded));
            if value.contains('\n') {
                for line in value.lines().map(str::trim_end) {
                    if line.len() >= MIN_LINE {
                        patterns.push(plain(line.as_bytes()));
                        patterns.extend(base64_forms(line.as_bytes()).into_iter().map(encoded));
                    }
                }
            }
        }
        patterns.sort_by(|a, b| {
            b.bytes
                .len()
                .cmp(&a.bytes.len())
                .then_with(|| a.bytes.cmp(&b.bytes))
        });
        let mut unique: Vec<Pattern> = Vec::new();
        for p in patterns {
            match unique.last_mut() {
                Some(last) if last.bytes == p.bytes => last.across_lines |= p.across_lines,
                _ => unique.push(p),
            }
        }
        Masker {
            patterns: unique,
            pending: Vec::new(),
        }
    }

    /// Feed a chunk; returns what can be shown now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(chunk);
        let (out, rest) = self.scan(false);
        self.pending = rest;
        out
    }

    /// The end of the stream: everything left, masked.
    pub fn finish(&mut self) -> Vec<u8> {
        let (out, _) = self.scan(true);
        self.pending.clear();
        out
    }

    fn scan(&self, at_end: bool) -> (Vec<u8>, Vec<u8>) {
        let buf = &self.pending;
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        'outer: while i < buf.len() {
            for p in &self.patterns {
                match p.fit(buf, i) {
                    Fit::Whole(end) => {
                        out.extend_from_slice(MASK);
                        // Line breaks inside a wrapped base64 form stay.
                        if p.across_lines {
                            out.extend(buf[i..end].iter().filter(|&&b| b == b'\n'));
                        }
                        i = end;
                        continue 'outer;
                    }
                    // A longer secret may still be coming: wait for it
                    // rather than mask a shorter one inside it.
                    Fit::Prefix if !at_end => return (out, buf[i..].to_vec()),
                    Fit::Prefix | Fit::No => {}
                }
            }
            out.push(buf[i]);
            i += 1;
        }
        (out, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(secrets: &[&str], chunks: &[&str]) -> String {
        let mut m = Masker::new(secrets.iter().copied());
        let mut out = Vec::new();
        for c in chunks {
            out.extend(m.push(c.as_bytes()));
        }
        out.extend(m.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn masks_whole_split_base64_and_multiline_secrets() {
        assert_eq!(run(&["hunter2"], &["pw=hunter2!"]), "pw=********!");
        // Split across chunks, even one byte at a time.
        assert_eq!(run(&["hunter2"], &["pw=hun", "ter2 ok"]), "pw=******** ok");
        let bytes: Vec<String> = "a hunter2 b".chars().map(String::from).collect();
        let chunks: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(run(&["hunter2"], &chunks), "a ******** b");
        // base64 of the value.
        assert_eq!(run(&["hunter2"], &["aHVudGVyMg== end"]), "******** end");
        // A multi-line value: whole, and line by line.
        let key = "-----BEGIN KEY-----\nAAAABBBBCCCC\n-----END KEY-----";
        assert_eq!(run(&[key], &[key]), "********");
        assert_eq!(run(&[key], &["x AAAABBBBCCCC y"]), "x ******** y");
        // A prefix that does not complete is shown in the end.
        assert_eq!(run(&["hunter2"], &["hunt", "ing"]), "hunting");
        assert_eq!(run(&["hunter2"], &["hunte"]), "hunte");
        assert_eq!(run(&[], &["plain"]), "plain");
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// `base64` as coreutils and busybox print it: wrapped at 76 columns,
    /// each line ending in a newline.
    fn wrapped(bytes: &[u8]) -> String {
        let encoded = b64(bytes);
        let mut out = String::new();
        for line in encoded.as_bytes().chunks(76) {
            out.push_str(std::str::from_utf8(line).unwrap());
            out.push('\n');
        }
        out
    }

    /// No run of 8 characters of any base64 form of `secret` (at any offset,
    /// with or without a newline after it) is left in `output`.
    fn assert_no_base64_of(secret: &str, output: &str) {
        let joined: String = output.split('\n').collect();
        for tail in ["", "\n"] {
            for prefix in ["", "x", "xy"] {
                let stable = stable_base64(format!("{secret}{tail}").as_bytes(), prefix.len());
                for w in stable.windows(8) {
                    let w = std::str::from_utf8(w).unwrap();
                    assert!(
                        !joined.contains(w),
                        "{w:?} of {secret:?}{tail:?} at offset {} in {output:?}",
                        prefix.len()
                    );
                }
            }
        }
    }

    #[test]
    fn masks_base64_forms_at_every_offset_and_with_a_newline() {
        // 28 bytes: not a multiple of 3, so the encoding of the value plus a
        // newline does not start with the value's own encoding.
        let s = "correct-horse-battery-staple";
        // printf %s "$S" | base64 -w0
        assert_eq!(run(&[s], &[&b64(s.as_bytes())]), "********");
        // echo "$S" | base64: the value and a newline, wrapped output.
        let echoed = wrapped(format!("{s}\n").as_bytes());
        assert_eq!(run(&[s], &[&echoed]), "********\n");
        // ... and -w0.
        assert_eq!(run(&[s], &[&b64(format!("{s}\n").as_bytes())]), "********");
        // After one or two other bytes of the same stream.
        for prefix in ["x", "xy", "xyz", "pw="] {
            let encoded = b64(format!("{prefix}{s}\n").as_bytes());
            let out = run(&[s], &[&format!("data: {encoded} end")]);
            assert!(out.starts_with("data: ") && out.ends_with(" end"), "{out}");
            assert!(out.contains("********"), "{prefix}: {out}");
            assert_no_base64_of(s, &out);
        }
        // Split across chunks anywhere.
        let encoded = b64(format!("x{s}\n").as_bytes());
        for at in 1..encoded.len() {
            let out = run(&[s], &[&encoded[..at], &encoded[at..]]);
            assert_no_base64_of(s, &out);
        }
    }

    #[test]
    fn masks_wrapped_base64_of_a_long_secret_line_by_line() {
        let long: String = (0..150)
            .map(|i| (b'a' + (i * 7 % 26) as u8) as char)
            .collect();
        let output = wrapped(format!("{long}\n").as_bytes());
        assert!(output.lines().count() >= 3, "{output}");
        let out = run(&[&long], &[&output]);
        // Masked, and the lines are still lines.
        assert_eq!(
            out,
            format!("********{}", "\n".repeat(output.lines().count()))
        );
        // In the middle of a longer stream, at any offset, in small chunks.
        for prefix in ["", "a", "ab", "header line\n"] {
            let output = wrapped(format!("{prefix}{long}\n").as_bytes());
            let chunks: Vec<String> = output
                .as_bytes()
                .chunks(13)
                .map(|c| String::from_utf8(c.to_vec()).unwrap())
                .collect();
            let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
            let out = run(&[&long], &chunks);
            assert_no_base64_of(&long, &out);
            assert_eq!(out.lines().count(), output.lines().count(), "{out}");
        }
    }

    #[test]
    fn masks_each_line_of_a_multi_line_secret_and_their_base64() {
        let key = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\nAQEFAASCBKcwggSjAgEAAoIB\n-----END KEY-----";
        // The whole key's base64, as `echo "$KEY" | base64` prints it.
        let out = run(&[key], &[&wrapped(format!("{key}\n").as_bytes())]);
        assert!(!out.contains(|c: char| c.is_ascii_alphanumeric()), "{out}");
        for line in key.lines() {
            // Each line alone, and its base64 with and without a newline.
            assert_eq!(run(&[key], &[&format!("> {line} <")]), "> ******** <");
            let out = run(&[key], &[&wrapped(format!("{line}\n").as_bytes())]);
            assert_eq!(out, "********\n", "{line}");
            let out = run(&[key], &[&b64(format!("x{line}").as_bytes())]);
            assert_no_base64_of(line, &out);
        }
    }

    #[test]
    fn short_forms_do_not_mask_everything() {
        // A 4-byte secret's base64 fragments are too short to hide alone;
        // its exact encoding is still hidden.
        assert_eq!(run(&["abcd"], &["YWJjZA=="]), "********");
        let ordinary = "YWJj and YmNk appear in ordinary base64 output";
        assert_eq!(run(&["abcd"], &[ordinary]), ordinary);
        // Short lines of a multi-line secret are not masked alone.
        assert_eq!(run(&["}\nlong-enough-line"], &["} x"]), "} x");
        // Line breaks are not skipped in front of a form, nor in plain text.
        assert_eq!(run(&["hunter2"], &["hun\nter2"]), "hun\nter2");
        let encoded = b64(b"correct-horse-battery-staple");
        let out = run(
            &["correct-horse-battery-staple"],
            &[&format!("\n{encoded}")],
        );
        assert_eq!(out, "\n********");
    }
}
