//! `slipway lint` on broken `.slipway.yml` files: every error, with
//! `file:line:column`, exactly as users read it (insta snapshots under
//! `tests/snapshots/`), and the README's example accepted.

use std::path::Path;
use std::process::Command;

fn lint(dir: &Path, file: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_slipway"))
        .arg("lint")
        .arg(file)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn broken_specs_report_every_error_with_its_position() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spec");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 15, "{files:?}");
    for file in files {
        let out = lint(&dir, &file);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{file}: {stderr}");
        assert!(out.stdout.is_empty(), "{file}");
        // Every error line points into the file.
        for line in stderr
            .lines()
            .filter(|l| !l.ends_with("error") && !l.ends_with("errors"))
        {
            assert!(line.starts_with(&format!("{file}:")), "{line}");
        }
        insta::assert_snapshot!(file.trim_end_matches(".yml"), stderr);
    }
}

#[test]
fn the_readme_example_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    // The first ```yaml block of the README is the pipeline example.
    let start = readme
        .find("```yaml\n")
        .expect("a yaml block in the README")
        + 8;
    let end = start + readme[start..].find("```").unwrap();
    std::fs::write(dir.path().join(".slipway.yml"), &readme[start..end]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .arg("lint")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        ".slipway.yml: ok (2 jobs, 2 steps)\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
}

#[test]
fn unreadable_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("binary.yml"), [0xff, 0xfe, 0x00, 0x01]).unwrap();
    let out = lint(dir.path(), "binary.yml");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("binary.yml: not UTF-8 text"));
    let big = "# padding\n".repeat(110_000);
    std::fs::write(dir.path().join("big.yml"), big).unwrap();
    let out = lint(dir.path(), "big.yml");
    assert!(String::from_utf8_lossy(&out.stderr).contains("big.yml:1:1: the file is 1100000 bytes"));
    let out = lint(dir.path(), "missing.yml");
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading missing.yml"));
}
