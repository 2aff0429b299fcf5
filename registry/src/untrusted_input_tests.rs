//! Randomised robustness tests for every parser that reads client input: random
//! and mutated inputs must give a clean error (or a valid value), never a panic.
//! (cargo-fuzz needs a nightly toolchain this project's machines do not have; these
//! run on stable in the ordinary test suite, seeded so a failure reproduces.)

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::digest::Digest;
use crate::error::RegistryError;
use crate::manifest::validate::{parse, OCI_INDEX, OCI_MANIFEST};
use crate::name::{check_name, Reference};
use crate::routes::RegistryPath;

const ROUNDS: usize = 20_000;

fn seeds() -> StdRng {
    StdRng::seed_from_u64(0x5_11_9a_77)
}

fn random_text(rng: &mut StdRng, max: usize) -> String {
    const ALPHABET: &[u8] = b"abcAZ09:/.-_@*%,;= \\\"{}[]\x00\xff\xc3\xa9";
    let len = rng.gen_range(0..max);
    let bytes: Vec<u8> = (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())])
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.gen_range(1..6) {
        if out.is_empty() {
            out.push(rng.gen());
            continue;
        }
        let at = rng.gen_range(0..out.len());
        match rng.gen_range(0..5) {
            0 => out[at] = rng.gen(),
            1 => {
                out.remove(at);
            }
            2 => out.insert(at, *b"{}[]\",:0-e9".get(rng.gen_range(0..11)).unwrap()),
            3 => out.truncate(at),
            _ => {
                let end = (at + rng.gen_range(1..40)).min(out.len());
                let piece = out[at..end].to_vec();
                let to = rng.gen_range(0..out.len());
                out.splice(to..to, piece);
            }
        }
    }
    out
}

fn seed_manifests() -> Vec<String> {
    let d = |s: &str| Digest::of(s.as_bytes()).to_string();
    vec![
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":3,"urls":["http://x"]}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":9}},"annotations":{{"a":"b"}}}}"#,
            d("c"),
            d("l"),
            d("s")
        ),
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":7}}]}}"#,
            d("m")
        ),
    ]
}

#[test]
fn manifest_parser_never_panics_on_mutated_or_random_input() {
    let mut rng = seeds();
    let seeds = seed_manifests();
    let types = [
        None,
        Some(OCI_MANIFEST),
        Some(OCI_INDEX),
        Some("text/plain"),
        Some("application/json; charset=x"),
    ];
    for round in 0..ROUNDS {
        let body = if round % 4 == 0 {
            random_text(&mut rng, 200).into_bytes()
        } else {
            let seed = seeds[rng.gen_range(0..seeds.len())].as_bytes();
            mutate(&mut rng, seed)
        };
        let content_type = types[rng.gen_range(0..types.len())];
        match parse(content_type, &body) {
            Ok(m) => assert!(!m.media_type.is_empty()),
            Err(RegistryError::ManifestInvalid(message)) => assert!(!message.is_empty()),
            Err(other) => panic!(
                "unexpected error kind {other:?} for {:?}",
                String::from_utf8_lossy(&body)
            ),
        }
    }
}

#[test]
fn digests_names_references_and_paths_never_panic() {
    let mut rng = seeds();
    let valid_digest = Digest::of(b"x").to_string();
    for _ in 0..ROUNDS {
        let text = if rng.gen_bool(0.5) {
            random_text(&mut rng, 90)
        } else {
            String::from_utf8_lossy(&mutate(&mut rng, valid_digest.as_bytes())).into_owned()
        };
        if let Ok(d) = text.parse::<Digest>() {
            assert_eq!(d.to_string(), text, "a parsed digest prints back unchanged");
            assert_eq!(d.hex().len(), 64);
            assert!(!d.hex().contains('/') && !d.hex().contains('.'));
        }
        if check_name(&text).is_ok() {
            assert!(
                !text
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == ".."),
                "{text:?}"
            );
        }
        let _ = Reference::parse(&text);
        let path = format!("{text}/blobs/{text}");
        let _ = RegistryPath::parse(&path);
        let _ = RegistryPath::parse(&text);
    }
}

#[test]
fn range_parsers_never_panic_and_stay_in_bounds() {
    let mut rng = seeds();
    for _ in 0..ROUNDS {
        let size: u64 = rng.gen_range(0..10_000);
        let a: i64 = rng.gen_range(-5..12_000);
        let b: i64 = rng.gen_range(-5..12_000);
        let forms = [
            format!("bytes={a}-{b}"),
            format!("bytes={a}-"),
            format!("bytes=-{b}"),
            format!("{a}-{b}"),
            format!("bytes {a}-{b}/*"),
            random_text(&mut rng, 30),
        ];
        for form in &forms {
            if let Ok((first, last)) = crate::routes::blob_range(form, size) {
                assert!(
                    first <= last && last < size,
                    "{form} against {size} gave {first}-{last}"
                );
            }
            if let Ok((start, end)) = crate::routes::upload_content_range(form) {
                assert!(start <= end, "{form} gave {start}-{end}");
            }
        }
    }
}
