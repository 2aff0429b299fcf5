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

/// Lints `text` as `.slipway.yml` in a fresh directory: (success, stderr).
fn lint_text(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".slipway.yml"), text).unwrap();
    let out = lint(dir.path(), ".slipway.yml");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The reported attack: a 16×16 matrix over 7,000 steps made with `<<`
/// merges (a 200 KB file) expands to 1.8 million steps. Before the bound it
/// passed lint and took 81 s and 920 MB of database to create.
#[test]
fn a_matrix_over_merged_steps_is_refused_with_its_count() {
    let mut text = String::from(
        "x-step: &s {image: busybox, commands: [echo hi]}\njobs:\n  big:\n    matrix:\n      A: [",
    );
    text.push_str(
        &(0..16)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    );
    text.push_str("]\n      B: [");
    text.push_str(
        &(0..16)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    );
    text.push_str("]\n    steps:\n");
    for i in 0..7000 {
        text.push_str(&format!("      - {{<<: *s, name: s{i}}}\n"));
    }
    assert!(text.len() < 256 << 10, "{}", text.len());
    let started = std::time::Instant::now();
    let (ok, stderr) = lint_text(&text);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(
            ".slipway.yml:3:3: the pipeline expands to 1792000 steps after the matrix; \
             at most 2000 are allowed (job \"big\" runs 256 time(s) with 7000 step(s)"
        ),
        "{stderr}"
    );
    // Not a timing assertion on the machine's speed: a bound on work that
    // was minutes before (lint parses and counts, it expands nothing).
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn too_many_jobs_commands_or_bytes_are_refused_where_they_are() {
    // 2 jobs × 256 combinations = 512 jobs.
    let matrix = "    matrix:\n      A: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\n      B: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\n";
    let text = format!(
        "jobs:\n  a:\n{matrix}    steps: [{{image: busybox, commands: [true]}}]\n  b:\n{matrix}    steps: [{{image: busybox, commands: [true]}}]\n"
    );
    let (ok, stderr) = lint_text(&text);
    assert!(!ok);
    assert!(
        stderr.contains(".slipway.yml:7:3: the pipeline expands to 512 jobs after the matrix; at most 500 are allowed (job \"b\""),
        "{stderr}"
    );

    // 1,001 commands in one step.
    let commands = vec!["true"; 1001].join(", ");
    let (ok, stderr) = lint_text(&format!(
        "jobs:\n  a:\n    steps:\n      - image: busybox\n        commands: [{commands}]\n"
    ));
    assert!(!ok);
    assert!(
        stderr.contains(".slipway.yml:4:9: step \"step-1\" of job \"a\" has 1001 commands; at most 1000 are allowed"),
        "{stderr}"
    );

    // One 100 KB command run by 256 combinations: 25.6 MB of steps.
    let long = "x".repeat(100_000);
    let values = (0..16)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let (ok, stderr) = lint_text(&format!(
        "jobs:\n  a:\n    matrix: {{A: [{values}], B: [{values}]}}\n    steps:\n      - image: busybox\n        commands: [\"echo {long}\"]\n"
    ));
    assert!(!ok);
    assert!(
        stderr.contains(".slipway.yml:2:3: the pipeline expands to 25610752 bytes of job definitions after the matrix; at most 16777216 are allowed"),
        "{stderr}"
    );

    // The pipeline's env is copied into every step: 900 KB × 20 steps.
    let big = "v".repeat(900_000);
    let steps = (0..20)
        .map(|i| format!("      - {{name: s{i}, image: busybox, commands: [true]}}\n"))
        .collect::<String>();
    let (ok, stderr) = lint_text(&format!(
        "env: {{BIG: {big}}}\njobs:\n  a:\n    steps:\n{steps}"
    ));
    assert!(!ok);
    assert!(
        stderr.contains(".slipway.yml:3:3: the pipeline expands to 18000")
            && stderr.contains(
                "bytes of job definitions after the matrix; at most 16777216 are allowed"
            ),
        "{stderr}"
    );

    // 21 services in one job.
    let services = (0..21)
        .map(|i| format!("      s{i}: {{image: busybox}}\n"))
        .collect::<String>();
    let (ok, stderr) = lint_text(&format!(
        "jobs:\n  a:\n    services:\n{services}    steps: [{{image: busybox, commands: [true]}}]\n"
    ));
    assert!(!ok);
    assert!(
        stderr.contains(".slipway.yml:2:3: job \"a\" has 21 services; at most 20 are allowed"),
        "{stderr}"
    );

    // A matrix job of 110 instances needing one of 100: 11,000 needs.
    let ten = (0..10)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let eleven = (0..11)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let (ok, stderr) = lint_text(&format!(
        "jobs:\n  a:\n    matrix: {{A: [{ten}], B: [{ten}]}}\n    steps: [{{image: busybox, commands: [true]}}]\n  b:\n    needs: [a]\n    matrix: {{A: [{eleven}], B: [{ten}]}}\n    steps: [{{image: busybox, commands: [true]}}]\n"
    ));
    assert!(!ok);
    assert!(
        stderr.contains(".slipway.yml:5:3: the pipeline expands to 11000 entries of needs after the matrix; at most 10000 are allowed (job \"b\""),
        "{stderr}"
    );
}

/// One long string repeated by aliases: few nodes, many bytes.
#[test]
fn an_alias_repeating_a_long_string_is_refused() {
    let long = "y".repeat(600_000);
    let mut text = format!("x-long: &l \"{long}\"\nx-copies: [");
    text.push_str(&vec!["*l"; 20].join(", "));
    text.push_str("]\njobs: {a: {steps: [{image: busybox, commands: [true]}]}}\n");
    let (ok, stderr) = lint_text(&text);
    assert!(!ok);
    assert!(
        stderr.contains(".slipway.yml:2:")
            && stderr
                .contains("the document expands to more than 8388608 bytes of text (aliases?)"),
        "{stderr}"
    );
}
