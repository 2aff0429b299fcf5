//! Native HTTPS with verification on: certificates from a test CA made here
//! with the openssl CLI. skopeo and podman push and pull trusting only that CA
//! (`--cert-dir`), and refuse the server without it; a runner given
//! `--ca-cert` runs a pipeline, one without it stops with a certificate error;
//! SIGHUP swaps in a new certificate for new connections.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// A CA, and a server certificate for 127.0.0.1 and localhost it signed.
struct TestPki {
    ca_pem: Vec<u8>,
    /// A directory holding only `ca.crt`, as skopeo's and podman's `--cert-dir`.
    cert_dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestPki {
    /// Under `dir/name/`.
    fn new(dir: &Path, name: &str) -> TestPki {
        let dir = dir.join(name);
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                &format!("/CN=Slipway test CA {name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        openssl(
            &dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &format!("0x{}", random_hex(8)),
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                "server.pem",
            ],
        );
        let ca_pem = std::fs::read(dir.join("ca.pem")).unwrap();
        std::fs::write(dir.join("certs/ca.crt"), &ca_pem).unwrap();
        TestPki {
            ca_pem,
            cert_dir: dir.join("certs"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }
}

/// A server on HTTPS with `pki`'s certificate, from files under `scratch`
/// (so a test can replace them).
fn tls_server(scratch: &Path, pki: &TestPki) -> (TestServer, PathBuf, PathBuf) {
    let cert = scratch.join("server.pem");
    let key = scratch.join("server.key");
    std::fs::copy(&pki.cert, &cert).unwrap();
    std::fs::copy(&pki.key, &key).unwrap();
    let server = TestServer::start_tls(
        &[
            ("SLIPWAY_TLS_CERT", cert.to_str().unwrap()),
            ("SLIPWAY_TLS_KEY", key.to_str().unwrap()),
        ],
        &pki.ca_pem,
    );
    (server, cert, key)
}

/// A client trusting only `ca_pem`, on a new connection every time.
fn trusting_only(ca_pem: &[u8]) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).unwrap())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[test]
fn skopeo_and_podman_push_and_pull_with_tls_verification() {
    let scratch = scratch_dir("tls-clients");
    let pki = TestPki::new(scratch.path(), "one");
    let (server, _, _) = tls_server(scratch.path(), &pki);
    assert!(server.url().starts_with("https://"), "{}", server.url());

    // The token realm follows the scheme: clients fetch tokens over HTTPS.
    let r = server
        .http()
        .get(format!("{}/v2/", server.url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.contains(&format!(
            "realm=\"https://{}/auth/token\"",
            server.host_port()
        )),
        "{challenge}"
    );
    // HTTP/2 is offered (ALPN) and spoken: curl verifying against the CA.
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--http2", "--cacert"])
        .arg(pki.cert_dir.join("ca.crt"))
        .args([
            "--write-out",
            "%{http_version} %{http_code}",
            "--output",
            "/dev/null",
        ])
        .arg(format!("{}/healthz", server.url()))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2 200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let layout = OciLayout::write(
        &scratch.path().join("img"),
        "v1",
        &[(Compression::Gzip, 100_000)],
    );
    let reference = format!("{}/tls/app:v1", server.host_port());
    let cert_dir = pki.cert_dir.to_str().unwrap();

    // Without the CA, verification fails.
    let refused = skopeo(scratch.path())
        .args([
            "copy",
            "--dest-tls-verify=true",
            "--dest-creds",
            &server.admin_creds(),
        ])
        .arg(layout.transport_ref())
        .arg(format!("docker://{reference}"))
        .run_expect_failure();
    assert!(refused.contains("certificate"), "{refused}");

    // skopeo: push and pull trusting the CA.
    skopeo(scratch.path())
        .args([
            "copy",
            "--dest-tls-verify=true",
            "--dest-cert-dir",
            cert_dir,
            "--dest-creds",
            &server.admin_creds(),
        ])
        .arg(layout.transport_ref())
        .arg(format!("docker://{reference}"))
        .run();
    let back = scratch.path().join("back");
    skopeo(scratch.path())
        .args([
            "copy",
            "--src-tls-verify=true",
            "--src-cert-dir",
            cert_dir,
            "--src-creds",
            &server.admin_creds(),
        ])
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:v1", back.display()))
        .run();
    let (digest, _) = read_oci_layout(&back, Some("v1"));
    assert_eq!(digest, layout.manifest_digest);

    // podman: pull, then push under another name, trusting the CA.
    let storage = scratch.path().join("podman");
    podman(&storage)
        .args([
            "pull",
            "--tls-verify=true",
            "--cert-dir",
            cert_dir,
            "--creds",
            &server.admin_creds(),
            &reference,
        ])
        .run();
    let copy = format!("{}/tls/copy:v2", server.host_port());
    podman(&storage).args(["tag", &reference, &copy]).run();
    podman(&storage)
        .args([
            "push",
            "--tls-verify=true",
            "--cert-dir",
            cert_dir,
            "--creds",
            &server.admin_creds(),
            &copy,
        ])
        .run();
    let r = server
        .http()
        .get(format!("{}/v2/tls/copy/tags/list", server.url()))
        .basic_auth("admin", Some(server.admin_password()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().unwrap().contains("v2"));
    // And podman without the CA is refused.
    let refused = podman(&storage)
        .args([
            "pull",
            "--tls-verify=true",
            "--creds",
            &server.admin_creds(),
            &reference,
        ])
        .run_expect_failure();
    assert!(refused.contains("certificate"), "{refused}");
}

#[test]
fn sighup_swaps_the_certificate_for_new_connections() {
    let scratch = scratch_dir("tls-reload");
    let one = TestPki::new(scratch.path(), "one");
    let two = TestPki::new(scratch.path(), "two");
    let (server, cert, key) = tls_server(scratch.path(), &one);
    let healthz = |client: &reqwest::blocking::Client| {
        client
            .get(format!("{}/healthz", server.url()))
            .send()
            .map(|r| r.status().as_u16())
    };
    assert_eq!(healthz(&trusting_only(&one.ca_pem)).unwrap(), 200);
    let err = healthz(&trusting_only(&two.ca_pem)).unwrap_err();
    assert!(err.is_connect(), "{err:?}");

    // A SIGHUP with unchanged files changes nothing.
    let hup = || {
        let ok = Command::new("kill")
            .args(["-HUP", &server.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    hup();
    wait_for(
        "the unchanged reload to be logged",
        Duration::from_secs(10),
        || server.logs().contains("TLS certificate unchanged"),
    );
    assert_eq!(healthz(&trusting_only(&one.ca_pem)).unwrap(), 200);

    // A broken pair is refused and the current certificate stays.
    std::fs::write(&cert, b"not a certificate").unwrap();
    hup();
    wait_for(
        "the failed reload to be logged",
        Duration::from_secs(10),
        || server.logs().contains("TLS certificate not reloaded"),
    );
    assert_eq!(healthz(&trusting_only(&one.ca_pem)).unwrap(), 200);

    // The new certificate, then SIGHUP: new connections see it.
    std::fs::copy(&two.key, &key).unwrap();
    std::fs::copy(&two.cert, &cert).unwrap();
    hup();
    wait_for(
        "new connections to get the new certificate",
        Duration::from_secs(10),
        || healthz(&trusting_only(&two.ca_pem)).is_ok_and(|s| s == 200),
    );
    assert!(healthz(&trusting_only(&one.ca_pem)).is_err());
    assert!(server.logs().contains("TLS certificate reloaded"));
}

/// `slipway` as admin against `server`, trusting `ca` through SLIPWAY_CA_CERT.
fn slipway(server: &TestServer, ca: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(args)
        .env("SLIPWAY_SERVER", server.url())
        .env("SLIPWAY_USER", "admin")
        .env("SLIPWAY_PASSWORD", server.admin_password())
        .env("SLIPWAY_CA_CERT", ca)
        .env_remove("SLIPWAY_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "slipway {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn a_runner_with_ca_cert_runs_a_pipeline_over_https() {
    let scratch = scratch_dir("tls-runner");
    // Steps run as container root, uid 100000, which must reach the runner's dirs.
    std::fs::set_permissions(
        scratch.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let pki = TestPki::new(scratch.path(), "one");
    let (server, _, _) = tls_server(scratch.path(), &pki);
    let ca = pki.cert_dir.join("ca.crt");
    slipway(&server, &ca, &["image", "bootstrap", "busybox"]);

    let repo = scratch.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(
        repo.join(".slipway.yml"),
        "jobs:\n  build:\n    steps:\n      - image: busybox\n        commands: [echo hello over https]\n",
    )
    .unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "."],
        &[
            "-c",
            "user.name=Dev",
            "-c",
            "user.email=dev@example.com",
            "commit",
            "-q",
            "-m",
            "pipeline",
        ],
    ] {
        let ok = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .status()
            .unwrap();
        assert!(ok.success(), "git {args:?}");
    }
    slipway(
        &server,
        &ca,
        &["repo", "add", "team/tls", "--url", repo.to_str().unwrap()],
    );

    // Without the CA the runner stops at once, saying why.
    let token = slipway(&server, &ca, &["runner-token", "create"])
        .trim()
        .to_owned();
    let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args([
            "runner",
            "--server",
            server.url(),
            "--token",
            &token,
            "--work-dir",
        ])
        .arg(scratch.path().join("untrusting"))
        .env_remove("SLIPWAY_CA_CERT")
        .env("SLIPWAY_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("certificate is not trusted") && stderr.contains("--ca-cert"),
        "{stderr}"
    );

    // With --ca-cert it registers, pulls and runs.
    let mut runner = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args([
            "runner",
            "--server",
            server.url(),
            "--token",
            &token,
            "--capacity",
            "1",
        ])
        .arg("--ca-cert")
        .arg(&ca)
        .arg("--work-dir")
        .arg(scratch.path().join("runner"))
        .env("SLIPWAY_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let logs = slipway(&server, &ca, &["run", "team/tls", "--wait"]);
    let _ = Command::new("kill").arg(runner.id().to_string()).status();
    let _ = runner.wait();
    assert!(logs.contains("hello over https"), "{logs}");
}
