//! The first admin (generated, configured, or added with `slipway user add`) and
//! the client commands' credentials.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};

use common::*;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn whoami(url: &str, auth: &Auth) -> HttpResponse {
    let full = format!("{url}/api/v1/whoami");
    HttpResponse::send("GET", &full, auth.apply(http_client().get(&full)))
}

fn slipway(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_slipway"));
    cmd.args(args)
        .env_remove("SLIPWAY_TOKEN")
        .env_remove("SLIPWAY_USER")
        .env_remove("SLIPWAY_PASSWORD");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn generated_admin_password_is_printed_once_and_works() {
    let dir = scratch_dir("cli-gen");
    let (child, url, log) = launch(dir.path(), None, &[]);
    let server = Running(child);
    let line = log
        .lock()
        .unwrap()
        .iter()
        .find_map(|l| {
            l.split("created user admin with generated password: ")
                .nth(1)
                .map(str::to_owned)
        })
        .expect("the generated password is printed on first start");
    let password = line.trim().to_owned();
    assert!(password.len() >= 16, "{password:?}");
    assert_eq!(
        whoami(&url, &Auth::Basic("admin".into(), password.clone())).json()["role"],
        "admin"
    );
    assert_eq!(
        whoami(&url, &Auth::Basic("admin".into(), "wrong".into())).status,
        401
    );
    drop(server);
    // A second start on the same data never prints or changes it.
    let (child, url, log) = launch(dir.path(), None, &[]);
    let _server = Running(child);
    assert!(!log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("generated password")));
    assert_eq!(
        whoami(&url, &Auth::Basic("admin".into(), password)).status,
        200
    );
}

#[test]
fn user_add_then_token_create() {
    let dir = scratch_dir("cli-user");
    let data = dir.path().to_str().unwrap();
    let (ok, out, err) = slipway(
        &[
            "user",
            "add",
            "ops",
            "--admin",
            "--password-stdin",
            "--data-dir",
            data,
        ],
        &[],
        Some("long-enough-pw\n"),
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "created admin user ops");
    let (ok, _, err) = slipway(
        &["user", "add", "ops", "--password-stdin", "--data-dir", data],
        &[],
        Some("another-pw-123"),
    );
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = slipway(
        &[
            "user",
            "add",
            "Bad Name",
            "--password-stdin",
            "--data-dir",
            data,
        ],
        &[],
        Some("another-pw-123"),
    );
    assert!(!ok && err.contains("invalid"), "{err}");

    // A user exists, so no admin is generated.
    let (child, url, log) = launch(dir.path(), None, &[]);
    let _server = Running(child);
    assert!(!log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("created user admin")));
    let ops = Auth::Basic("ops".into(), "long-enough-pw".into());
    assert_eq!(whoami(&url, &ops).json()["role"], "admin");

    let creds = [
        ("SLIPWAY_USER", "ops"),
        ("SLIPWAY_PASSWORD", "long-enough-pw"),
    ];
    let (ok, out, err) = slipway(
        &[
            "token", "create", "--server", &url, "--name", "ci", "--scope", "pull", "--repo",
            "team/*",
        ],
        &creds,
        None,
    );
    assert!(ok, "{err}");
    let token = out.trim().to_owned();
    assert!(
        token.starts_with("slp_") && !token.contains(char::is_whitespace),
        "{out:?}"
    );
    let me = whoami(&url, &Auth::Bearer(token.clone())).json();
    assert_eq!(me["scopes"], serde_json::json!(["pull"]));
    assert_eq!(me["repositories"], "team/*");
    // The token is stored hashed: its text is nowhere in the database file.
    let db = std::fs::read(dir.path().join("slipway.db")).unwrap();
    assert!(!db.windows(token.len()).any(|w| w == token.as_bytes()));
    // The token as --token works for client commands too, within its scopes.
    let (ok, _, err) = slipway(
        &[
            "token", "create", "--server", &url, "--token", &token, "--scope", "push",
        ],
        &[],
        None,
    );
    assert!(!ok && err.contains("403"), "{err}");
    // No credentials at all: a clear error, not a request.
    let (ok, _, err) = slipway(
        &["token", "create", "--server", &url, "--scope", "pull"],
        &[],
        None,
    );
    assert!(!ok && err.contains("no credentials"), "{err}");
    // The password never shows up in the server's output.
    assert!(!log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("long-enough-pw")));
}
