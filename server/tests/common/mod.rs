//! Shared harness for the black-box interop tests.
//!
//! * [`TestServer`] runs the real `slipway` binary on a random port with a
//!   fresh data directory and a random admin password, and kills it on drop.
//! * [`OciLayout`] writes an OCI image layout with random layers that
//!   skopeo (`oci:DIR:TAG`) can push.
//! * Small blocking HTTP helpers read what the registry serves, so every test
//!   can check that digests round-trip bit-identical.
//! * [`Tool`] runs skopeo / buildah / podman / python and fails the test with
//!   the tool's output when it exits non-zero (or is not installed).
//! * [`browser::Browser`] is a headless Chromium over WebDriver for the UI.
//!
//! Everything here is blocking (no async runtime): tests that need one build
//! their own and call into this module outside of it.

#![allow(dead_code)]

pub mod browser;
pub mod deploy_peers;
pub mod fake_forge;
pub mod kube_env;
pub mod web;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, RngCore};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// Accept header listing every manifest type the registry may store.
pub const ALL_MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const READY_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Digests
// ---------------------------------------------------------------------------
/// Bytes of a process's output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The CLI as admin against `server`.
pub fn slipway(server: &TestServer, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(args)
        .env("SLIPWAY_SERVER", server.url())
        .env("SLIPWAY_USER", "admin")
        .env("SLIPWAY_PASSWORD", server.admin_password())
        .env_remove("SLIPWAY_TOKEN")
        .output()
        .unwrap()
}

/// `git ARGS` in `dir` as a fixed author; fails the test with git's stderr.
pub fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The hex part of a `sha256:<hex>` digest.
pub fn digest_hex(digest: &str) -> &str {
    digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("not a sha256 digest: {digest:?}"))
}

pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

pub fn random_hex(len_bytes: usize) -> String {
    hex::encode(random_bytes(len_bytes))
}

pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("layer is not valid gzip");
    out
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Assert two byte strings are equal without dumping megabytes on failure:
/// the message gives their sizes and digests instead.
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        panic!(
            "{what}: got {} bytes ({}), expected {} bytes ({})",
            got.len(),
            sha256_digest(got),
            want.len(),
            sha256_digest(want)
        );
    }
}

/// `map[digest]`, or a failure naming the missing blob.
pub fn blob<'a>(map: &'a BTreeMap<String, Vec<u8>>, digest: &str, what: &str) -> &'a [u8] {
    map.get(digest).unwrap_or_else(|| {
        panic!(
            "{what}: blob {digest} missing (have {:?})",
            map.keys().collect::<Vec<_>>()
        )
    })
}

/// Undo the layer compression implied by `media_type` (gzip or none).
pub fn uncompressed_layer(media_type: &str, data: &[u8]) -> Vec<u8> {
    if media_type.ends_with("gzip") {
        gunzip(data)
    } else if media_type.ends_with(".tar") || media_type.ends_with("diff.tar") {
        data.to_vec()
    } else {
        panic!("unexpected layer media type {media_type}")
    }
}

/// Files (path -> content) in a tar archive; directories are skipped.
pub fn tar_files(tar_bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(tar_bytes);
    for entry in archive.entries().expect("not a tar archive") {
        let mut entry = entry.expect("bad tar entry");
        if entry.header().entry_type().is_file() {
            let path = entry
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            files.insert(path, content);
        }
    }
    files
}

// ---------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------

/// A running `slipway server` owned by one test.
pub struct TestServer {
    child: Option<Child>,
    url: String,
    host_port: String,
    admin_password: String,
    log: Arc<Mutex<Vec<String>>>,
    data_dir: TempDir,
    env: Vec<(String, String)>,
    /// PEM of the CA that signed an HTTPS server's certificate.
    ca: Option<Vec<u8>>,
}

static TOKEN_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with_env(&[])
    }

    /// Start the server with extra environment variables (e.g.
    /// `("SLIPWAY_REGISTRY__ANONYMOUS_PULL", "true")`).
    pub fn start_with_env(env: &[(&str, &str)]) -> TestServer {
        Self::start_inner(env, None)
    }

    /// An HTTPS server (`env` names its certificate and key) whose
    /// certificate `ca_pem` signed; [`http`](Self::http) trusts it.
    pub fn start_tls(env: &[(&str, &str)], ca_pem: &[u8]) -> TestServer {
        Self::start_inner(env, Some(ca_pem.to_vec()))
    }

    /// A client for this server, trusting its CA if it speaks HTTPS.
    pub fn http(&self) -> reqwest::blocking::Client {
        let mut builder = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &self.ca {
            builder =
                builder.add_root_certificate(reqwest::Certificate::from_pem(ca).expect("a PEM CA"));
        }
        builder.build().unwrap()
    }

    fn start_inner(env: &[(&str, &str)], ca: Option<Vec<u8>>) -> TestServer {
        let data_dir = tempfile::Builder::new()
            .prefix("slipway-test-data-")
            .tempdir()
            .expect("create data dir");
        let admin_password = format!("pw-{}", random_hex(12));

        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, url, log) = launch(data_dir.path(), Some(&admin_password), &env);
        let host_port = host_port_of(&url);

        let server = TestServer {
            child: Some(child),
            url,
            host_port,
            admin_password,
            log,
            data_dir,
            env,
            ca,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let client = self.http();
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last;
        loop {
            match client.get(format!("{}/readyz", self.url)).send() {
                Ok(r) if r.status() == 200 => return,
                Ok(r) => last = format!("status {}", r.status()),
                Err(e) => last = format!("error {e}"),
            }
            if Instant::now() > deadline {
                panic!(
                    "GET {}/readyz did not return 200 within {READY_TIMEOUT:?} (last: {last}); output:\n{}",
                    self.url,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the server");
            child.wait().expect("reap the server");
        }
    }

    /// SIGTERM, then wait (bounded) for the process to exit by itself.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -TERM failed");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait for the server") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server did not exit within {within:?} of SIGTERM; output:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start a new server process on the same data directory (after
    /// `kill_hard` or `terminate`). The address changes.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server before restarting it");
        let (child, url, log) = launch(self.data_dir.path(), Some(&self.admin_password), &self.env);
        self.log
            .lock()
            .unwrap()
            .extend(log.lock().unwrap().drain(..));
        self.log = log;
        self.child = Some(child);
        self.host_port = host_port_of(&url);
        self.url = url;
        self.wait_ready();
    }

    /// Like [`restart`](Self::restart), on the same address, so clients that
    /// hold the URL (runners) reconnect. Retries briefly while the port is
    /// still being released.
    pub fn restart_same_address(&mut self) {
        assert!(self.child.is_none(), "stop the server before restarting it");
        let (child, url, log) = launch_on(
            self.data_dir.path(),
            Some(&self.admin_password),
            &self.env,
            &self.host_port,
        );
        self.log
            .lock()
            .unwrap()
            .extend(log.lock().unwrap().drain(..));
        self.log = log;
        self.child = Some(child);
        assert_eq!(url, self.url, "the server came back on another address");
        self.wait_ready();
    }

    /// Any request as the admin (see [`request_as`]).
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> HttpResponse {
        request_as(&self.url, &self.admin_auth(), method, path, headers, body)
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `127.0.0.1:PORT`, the registry host for image references.
    pub fn host_port(&self) -> &str {
        &self.host_port
    }

    pub fn admin_password(&self) -> &str {
        &self.admin_password
    }

    /// `admin:PASSWORD`, as used by `--creds` style flags.
    pub fn admin_creds(&self) -> String {
        format!("admin:{}", self.admin_password)
    }

    pub fn admin_auth(&self) -> Auth {
        Auth::Basic("admin".into(), self.admin_password.clone())
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Everything the server printed so far.
    /// Run one SQL statement on the server's database (to age a row, or to
    /// try what an attacker with the file could); its error as text.
    pub fn sql(&self, statement: &str) -> Result<(), String> {
        let path = self.data_dir().join("slipway.db");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(statement)
                    .execute(&pool)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
    }

    pub fn logs(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Register a runner called `name` (a registration token from the admin,
    /// then `POST /api/v1/runner/register`); returns the runner's token.
    pub fn register_runner(&self, name: &str) -> String {
        let r = self.request(reqwest::Method::POST, "/api/v1/runner-tokens", &[], None);
        assert_eq!(r.status, 201, "{}", r.describe());
        let registration = r.json()["token"].as_str().unwrap().to_owned();
        let body = serde_json::json!({
            "registration_token": registration, "name": name, "labels": [], "capacity": 1
        });
        let r = request_as(
            self.url(),
            &Auth::None,
            reqwest::Method::POST,
            "/api/v1/runner/register",
            &[("content-type", "application/json")],
            Some(serde_json::to_vec(&body).unwrap()),
        );
        assert_eq!(r.status, 201, "{}", r.describe());
        r.json()["token"].as_str().unwrap().to_owned()
    }

    /// Create an API token through `POST /api/v1/tokens` (admin basic auth).
    pub fn create_token(&self, scopes: &[&str], repo_pattern: &str) -> String {
        let name = format!(
            "interop-{}-{}",
            TOKEN_COUNTER.fetch_add(1, Ordering::SeqCst),
            random_hex(3)
        );
        let body = json!({ "name": name, "scopes": scopes, "repository": repo_pattern });
        let resp = http_client()
            .post(format!("{}/api/v1/tokens", self.url))
            .basic_auth("admin", Some(&self.admin_password))
            .json(&body)
            .send()
            .expect("POST /api/v1/tokens");
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        assert_eq!(
            status, 201,
            "POST /api/v1/tokens {body} returned {status}: {text}"
        );
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("token response is not JSON ({e}): {text}"));
        let token = v["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no `token` in {text}"))
            .to_string();
        assert!(
            token.starts_with("slp_"),
            "API token does not start with slp_: {text}"
        );
        token
    }

    // -- registry reads, used to check what the server really stores -------

    /// `GET /v2/<repo>/manifests/<reference>` accepting every manifest type.
    pub fn get_manifest(&self, repo: &str, reference: &str, auth: &Auth) -> HttpResponse {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.url);
        let req = http_client().get(&url).header("Accept", ALL_MANIFEST_TYPES);
        HttpResponse::send("GET", &url, auth.apply(req))
    }

    /// `HEAD /v2/<repo>/manifests/<reference>`.
    pub fn head_manifest(&self, repo: &str, reference: &str, auth: &Auth) -> HttpResponse {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.url);
        let req = http_client()
            .head(&url)
            .header("Accept", ALL_MANIFEST_TYPES);
        HttpResponse::send("HEAD", &url, auth.apply(req))
    }

    /// `GET /v2/<repo>/blobs/<digest>`, asserting 200 and that the body hashes to `digest`.
    pub fn get_blob(&self, repo: &str, digest: &str, auth: &Auth) -> Vec<u8> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.url);
        let r = HttpResponse::send("GET", &url, auth.apply(http_client().get(&url)));
        assert_eq!(r.status, 200, "GET {url}: {}", r.describe());
        assert_eq!(
            sha256_digest(&r.body),
            digest,
            "GET {url}: body does not hash to the requested digest"
        );
        if let Some(d) = r.header("docker-content-digest") {
            assert_eq!(d, digest, "GET {url}: Docker-Content-Digest header");
        }
        r.body
    }

    /// Any GET on the server, with auth.
    pub fn get(&self, path_and_query: &str, auth: &Auth) -> HttpResponse {
        let url = format!("{}{path_and_query}", self.url);
        HttpResponse::send("GET", &url, auth.apply(http_client().get(&url)))
    }

    /// Fetch a manifest and check the digest invariants every test relies on:
    /// 200, `Docker-Content-Digest` == `expected`, sha256(body) == `expected`,
    /// and the Content-Type equals the manifest's own `mediaType` (if any).
    /// Returns the body.
    pub fn assert_manifest_served(
        &self,
        repo: &str,
        reference: &str,
        expected_digest: &str,
        auth: &Auth,
    ) -> Vec<u8> {
        let r = self.get_manifest(repo, reference, auth);
        let what = format!("GET /v2/{repo}/manifests/{reference}");
        assert_eq!(r.status, 200, "{what}: {}", r.describe());
        assert_eq!(
            r.header("docker-content-digest"),
            Some(expected_digest),
            "{what}: Docker-Content-Digest header; {}",
            r.describe()
        );
        assert_eq!(
            sha256_digest(&r.body),
            expected_digest,
            "{what}: sha256 of the served body differs from the pushed digest"
        );
        let v: Value = serde_json::from_slice(&r.body).expect("manifest is not JSON");
        if let Some(mt) = v["mediaType"].as_str() {
            assert_eq!(
                r.header("content-type"),
                Some(mt),
                "{what}: Content-Type differs from the manifest's mediaType"
            );
        }
        let h = self.head_manifest(repo, reference, auth);
        assert_eq!(
            h.status,
            200,
            "HEAD /v2/{repo}/manifests/{reference}: {}",
            h.describe()
        );
        assert_eq!(
            h.header("docker-content-digest"),
            Some(expected_digest),
            "HEAD /v2/{repo}/manifests/{reference}: Docker-Content-Digest; {}",
            h.describe()
        );
        r.body
    }

    /// Check every blob a manifest references (config + layers) is served
    /// and hashes to its digest. Returns digest -> bytes.
    pub fn assert_manifest_blobs_served(
        &self,
        repo: &str,
        manifest: &[u8],
        auth: &Auth,
    ) -> BTreeMap<String, Vec<u8>> {
        let v: Value = serde_json::from_slice(manifest).expect("manifest is not JSON");
        let mut out = BTreeMap::new();
        for desc in descriptors(&v) {
            let digest = desc["digest"].as_str().unwrap().to_string();
            let data = self.get_blob(repo, &digest, auth);
            assert_eq!(
                data.len() as u64,
                desc["size"].as_u64().unwrap(),
                "blob {digest}: size differs from the descriptor"
            );
            out.insert(digest, data);
        }
        out
    }

    /// Push an OCI layout's image with plain HTTP calls (monolithic
    /// POST + PUT uploads, then PUT manifest). Used where the test is about
    /// another client and only needs an image to exist.
    pub fn push_layout_http(&self, layout: &OciLayout, repo: &str, tag: &str, auth: &Auth) {
        let client = http_client();
        let mut blobs: Vec<(String, Vec<u8>)> =
            vec![(layout.config_digest.clone(), layout.config_bytes.clone())];
        for l in &layout.layers {
            blobs.push((l.digest.clone(), l.data.clone()));
        }
        for (digest, data) in blobs {
            let url = format!("{}/v2/{repo}/blobs/uploads/", self.url);
            let r = HttpResponse::send("POST", &url, auth.apply(client.post(&url)));
            assert_eq!(r.status, 202, "POST {url}: {}", r.describe());
            let location = r
                .header("location")
                .expect("upload without Location")
                .to_string();
            let mut put_url = if location.starts_with('/') {
                format!("{}{location}", self.url)
            } else {
                location
            };
            put_url.push(if put_url.contains('?') { '&' } else { '?' });
            put_url.push_str(&format!("digest={digest}"));
            let req = client
                .put(&put_url)
                .header("Content-Type", "application/octet-stream")
                .body(data);
            let r = HttpResponse::send("PUT", &put_url, auth.apply(req));
            assert_eq!(r.status, 201, "PUT {put_url}: {}", r.describe());
        }
        let url = format!("{}/v2/{repo}/manifests/{tag}", self.url);
        let req = client
            .put(&url)
            .header("Content-Type", OCI_MANIFEST)
            .body(layout.manifest_bytes.clone());
        let r = HttpResponse::send("PUT", &url, auth.apply(req));
        assert_eq!(r.status, 201, "PUT {url}: {}", r.describe());
        assert_eq!(
            r.header("docker-content-digest"),
            Some(layout.manifest_digest.as_str()),
            "PUT {url}: Docker-Content-Digest"
        );
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = self.log.lock().unwrap();
            let start = log.len().saturating_sub(150);
            eprintln!(
                "---- slipway server output (last {} of {} lines) ----\n{}\n---- end of server output ----",
                log.len() - start,
                log.len(),
                log[start..].join("\n")
            );
        }
    }
}

/// `127.0.0.1:PORT` of `http(s)://127.0.0.1:PORT`.
fn host_port_of(url: &str) -> String {
    url.split_once("://")
        .map_or(url, |(_, rest)| rest)
        .to_string()
}

/// Start `slipway server` on `data_dir` and wait for its `listening on` line.
/// Returns the process, its URL and the log its output is collected into.
pub fn launch(
    data_dir: &Path,
    admin_password: Option<&str>,
    env: &[(String, String)],
) -> (Child, String, Arc<Mutex<Vec<String>>>) {
    launch_on(data_dir, admin_password, env, "127.0.0.1:0")
}

/// [`launch`] on a given address.
pub fn launch_on(
    data_dir: &Path,
    admin_password: Option<&str>,
    env: &[(String, String)],
    listen: &str,
) -> (Child, String, Arc<Mutex<Vec<String>>>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_slipway"));
    cmd.arg("server")
        .arg("--listen")
        .arg(listen)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("SLIPWAY_ADMIN_PASSWORD")
        .env("NO_COLOR", "1")
        .env("SLIPWAY_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(password) = admin_password {
        cmd.env("SLIPWAY_ADMIN_PASSWORD", password);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", env!("CARGO_BIN_EXE_slipway")));

    // Drain stdout and stderr for the whole life of the process so the
    // pipes never fill up; every line goes to `log`, and lines are also
    // sent to this thread until the address has been found.
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    spawn_drain(stdout, "out", log.clone(), tx.clone());
    spawn_drain(stderr, "err", log.clone(), tx);

    let re = regex::Regex::new(r"listening on (https?://[0-9.:]+)").unwrap();
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let url = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                if let Some(c) = re.captures(&line) {
                    break c[1].trim_end_matches([':', '.']).to_string();
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Both pipes closed: the process is gone.
                let status = child.wait().ok();
                panic!(
                    "slipway exited ({status:?}) before printing `listening on http://…`; output:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Give the drain threads a moment to collect the last lines.
            while rx.recv_timeout(Duration::from_millis(200)).is_ok() {}
            panic!(
                "slipway exited ({status}) before printing `listening on http://…`; output:\n{}",
                log.lock().unwrap().join("\n")
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "slipway did not print `listening on http://…` within {STARTUP_TIMEOUT:?}; output:\n{}",
                log.lock().unwrap().join("\n")
            );
        }
    };
    (child, url, log)
}

fn spawn_drain(
    pipe: impl Read + Send + 'static,
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
    tx: mpsc::Sender<String>,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = strip_ansi(&String::from_utf8_lossy(&buf));
                    let line = line.trim_end().to_string();
                    log.lock().unwrap().push(format!("[{name}] {line}"));
                    let _ = tx.send(line);
                }
            }
        }
    });
}

fn strip_ansi(s: &str) -> String {
    let re = regex::Regex::new(r"\x1b\[[0-9;?]*[A-Za-z]").unwrap();
    re.replace_all(s, "").into_owned()
}

// ---------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------

/// Any request to `path` (below `base`, or a full URL) with `auth`, headers
/// and an optional body, read in full.
pub fn request_as(
    base: &str,
    auth: &Auth,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> HttpResponse {
    let url = if path.starts_with("http") {
        path.to_owned()
    } else {
        format!("{base}{path}")
    };
    let mut req = http_client().request(method.clone(), &url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(body) = body {
        req = req.body(body);
    }
    HttpResponse::send(method.as_str(), &url, auth.apply(req))
}

pub fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// How a test authenticates its own HTTP requests to the registry.
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    Basic(String, String),
    Bearer(String),
}

impl Auth {
    pub fn apply(
        &self,
        req: reqwest::blocking::RequestBuilder,
    ) -> reqwest::blocking::RequestBuilder {
        match self {
            Auth::None => req,
            Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
            Auth::Bearer(t) => req.bearer_auth(t),
        }
    }
}

/// A fully read HTTP response.
pub struct HttpResponse {
    pub method: String,
    pub url: String,
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn send(method: &str, url: &str, req: reqwest::blocking::RequestBuilder) -> HttpResponse {
        let resp = req
            .send()
            .unwrap_or_else(|e| panic!("{method} {url} failed: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().map(|b| b.to_vec()).unwrap_or_default();
        HttpResponse {
            method: method.into(),
            url: url.into(),
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: body is not JSON ({e}): {}",
                self.method,
                self.url,
                self.body_text()
            )
        })
    }

    pub fn body_text(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        if text.len() > 2000 {
            format!("{}… ({} bytes)", &text[..2000], self.body.len())
        } else {
            text.into_owned()
        }
    }

    /// Status, headers and body, for assertion messages.
    pub fn describe(&self) -> String {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
            .collect();
        format!(
            "{} {} -> {}\n  headers: {}\n  body: {}",
            self.method,
            self.url,
            self.status,
            headers.join("; "),
            self.body_text()
        )
    }
}

/// The config and layer descriptors of an image manifest.
pub fn descriptors(manifest: &Value) -> Vec<Value> {
    let mut out = vec![manifest["config"].clone()];
    out.extend(manifest["layers"].as_array().cloned().unwrap_or_default());
    out.retain(|d| d.is_object());
    out
}

/// Layer digests of an image manifest, in order.
pub fn layer_digests(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .expect("manifest has no layers array")
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// OCI image layouts
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// `application/vnd.oci.image.layer.v1.tar`
    None,
    /// `application/vnd.oci.image.layer.v1.tar+gzip`
    Gzip,
}

/// One layer of a generated image.
#[derive(Clone, Debug)]
pub struct LayerInfo {
    pub media_type: String,
    /// Digest of the blob as stored (compressed if gzip).
    pub digest: String,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: String,
    pub data: Vec<u8>,
    /// Files in the layer (path -> content).
    pub files: BTreeMap<String, Vec<u8>>,
}

/// An image written as an OCI image layout directory.
pub struct OciLayout {
    pub dir: PathBuf,
    pub tag: String,
    pub manifest_digest: String,
    pub manifest_bytes: Vec<u8>,
    pub config_digest: String,
    pub config_bytes: Vec<u8>,
    pub layers: Vec<LayerInfo>,
}

impl OciLayout {
    /// Write an image whose layers each hold a random file of the given
    /// size, compressed as given, into `dir` (an OCI layout, tag `tag`).
    pub fn write(dir: &Path, tag: &str, layers: &[(Compression, usize)]) -> OciLayout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        let write_blob = |data: &[u8]| -> String {
            let digest = sha256_digest(data);
            std::fs::write(dir.join("blobs/sha256").join(digest_hex(&digest)), data).unwrap();
            digest
        };

        let mut infos = Vec::new();
        for (i, (compression, size)) in layers.iter().enumerate() {
            let mut files = BTreeMap::new();
            files.insert(format!("layer{i}/data.bin"), random_bytes(*size));
            files.insert(
                format!("layer{i}/README.txt"),
                format!(
                    "layer {i} of a slipway interop test image, {}\n",
                    random_hex(8)
                )
                .into_bytes(),
            );
            let tar_bytes = make_tar(&files);
            let diff_id = sha256_digest(&tar_bytes);
            let (media_type, data) = match compression {
                Compression::None => (OCI_LAYER_TAR, tar_bytes),
                Compression::Gzip => (OCI_LAYER_GZIP, gzip(&tar_bytes)),
            };
            let digest = write_blob(&data);
            infos.push(LayerInfo {
                media_type: media_type.into(),
                digest,
                diff_id,
                data,
                files,
            });
        }

        let config = json!({
            "created": "2024-01-01T00:00:00Z",
            "architecture": "amd64",
            "os": "linux",
            "config": { "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["/bin/true"] },
            "rootfs": {
                "type": "layers",
                "diff_ids": infos.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
            },
        });
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let config_digest = write_blob(&config_bytes);

        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config_bytes.len() },
            "layers": infos.iter().map(|l| json!({
                "mediaType": l.media_type, "digest": l.digest, "size": l.data.len(),
            })).collect::<Vec<_>>(),
            "annotations": { "org.opencontainers.image.description": format!("slipway interop test {}", random_hex(4)) },
        });
        let manifest_bytes = serde_json::to_vec_pretty(&manifest).unwrap();
        let manifest_digest = write_blob(&manifest_bytes);

        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_bytes.len(),
                "annotations": { "org.opencontainers.image.ref.name": tag },
            }],
        });
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();

        OciLayout {
            dir: dir.to_path_buf(),
            tag: tag.into(),
            manifest_digest,
            manifest_bytes,
            config_digest,
            config_bytes,
            layers: infos,
        }
    }

    /// `oci:DIR:TAG`, the skopeo/podman transport reference.
    pub fn transport_ref(&self) -> String {
        format!("oci:{}:{}", self.dir.display(), self.tag)
    }

    pub fn layer_by_digest(&self, digest: &str) -> Option<&LayerInfo> {
        self.layers.iter().find(|l| l.digest == digest)
    }
}

fn make_tar(files: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for path in files.keys() {
        if let Some((dir, _)) = path.rsplit_once('/') {
            dirs.insert(dir.to_string());
        }
    }
    for dir in dirs {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(1_700_000_000);
        h.set_size(0);
        builder
            .append_data(&mut h, format!("{dir}/"), std::io::empty())
            .unwrap();
    }
    for (path, content) in files {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_size(content.len() as u64);
        builder
            .append_data(&mut h, path, content.as_slice())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

/// Read an OCI layout written by a client: returns (manifest digest,
/// manifest bytes) of the entry tagged `tag` (or the only entry when `tag`
/// is None), after checking every blob in the layout hashes to its name.
pub fn read_oci_layout(dir: &Path, tag: Option<&str>) -> (String, Vec<u8>) {
    verify_blob_dir(&dir.join("blobs/sha256"), "oci layout");
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index.json"))
            .unwrap();
    let manifests = index["manifests"]
        .as_array()
        .expect("index.json has no manifests");
    let entry = match tag {
        Some(tag) => manifests
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap_or_else(|| panic!("no entry tagged {tag} in {index}")),
        None => {
            assert_eq!(manifests.len(), 1, "expected one manifest in {index}");
            &manifests[0]
        }
    };
    let digest = entry["digest"].as_str().unwrap().to_string();
    let bytes = std::fs::read(dir.join("blobs/sha256").join(digest_hex(&digest))).unwrap();
    assert_eq!(sha256_digest(&bytes), digest);
    (digest, bytes)
}

/// Read a containers-image `dir:` directory: (manifest.json bytes,
/// digest -> blob bytes) after checking each blob hashes to its file name.
pub fn read_dir_transport(dir: &Path) -> (Vec<u8>, BTreeMap<String, Vec<u8>>) {
    let manifest = std::fs::read(dir.join("manifest.json")).expect("dir: has no manifest.json");
    let mut blobs = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().to_string();
        if name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit()) {
            let data = std::fs::read(entry.path()).unwrap();
            let digest = format!("sha256:{name}");
            assert_eq!(
                sha256_digest(&data),
                digest,
                "dir: blob {name} does not hash to its name"
            );
            blobs.insert(digest, data);
        }
    }
    (manifest, blobs)
}

fn verify_blob_dir(dir: &Path, what: &str) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{what}: {}: {e}", dir.display()))
    {
        let entry = entry.unwrap();
        let data = std::fs::read(entry.path()).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&data)),
            entry.file_name().to_string_lossy(),
            "{what}: blob does not hash to its file name"
        );
    }
}

// ---------------------------------------------------------------------------
// External tools
// ---------------------------------------------------------------------------

/// Path of `name` on PATH, or a test failure saying how to install it.
pub fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    let hint = match name {
        "skopeo" | "buildah" | "podman" => "apt-get install -y skopeo buildah podman",
        "python3" => "apt-get install -y python3 python3-pip && pip install oras",
        _ => "install it",
    };
    panic!("`{name}` is not installed (not found on PATH); these interop tests need it: {hint}");
}

/// A command line for an external tool, run with a private auth file so
/// tests never read or write the user's container credentials.
pub struct Tool {
    cmd: Command,
    display: String,
}

impl Tool {
    pub fn new(program: &str, scratch: &Path) -> Tool {
        let path = require_tool(program);
        // buildah/podman refuse a REGISTRY_AUTH_FILE that does not exist.
        std::fs::create_dir_all(scratch).unwrap();
        let auth_file = scratch.join("auth.json");
        if !auth_file.exists() {
            std::fs::write(&auth_file, r#"{"auths":{}}"#).unwrap();
        }
        let mut cmd = Command::new(path);
        cmd.env("REGISTRY_AUTH_FILE", scratch.join("auth.json"))
            .env("DOCKER_CONFIG", scratch.join("docker-config"))
            .stdin(Stdio::null());
        Tool {
            cmd,
            display: program.to_string(),
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Tool {
        let a = a.as_ref();
        self.display.push(' ');
        self.display.push_str(&a.to_string_lossy());
        self.cmd.arg(a);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Tool
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<OsStr>) -> Tool {
        self.cmd.env(k, v);
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Tool {
        self.cmd.current_dir(dir);
        self
    }

    fn output(mut self) -> (String, Output, Duration) {
        let start = Instant::now();
        let out = self
            .cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", self.display));
        (self.display, out, start.elapsed())
    }

    /// Run; returns (success, stdout + stderr) without judging the outcome.
    pub fn output_lossy(self) -> (bool, String) {
        let (_, out, _) = self.output();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Run; fail the test with stdout/stderr if it exits non-zero. Returns stdout.
    pub fn run(self) -> String {
        let (display, out, took) = self.output();
        let display = redact(&display);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            panic!(
                "`{display}` failed ({}) after {took:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
                out.status
            );
        }
        eprintln!("ok ({took:.1?}): {display}");
        stdout
    }

    /// Run and expect a non-zero exit; returns stderr.
    pub fn run_expect_failure(self) -> String {
        let (display, out, _) = self.output();
        let display = redact(&display);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            panic!("`{display}` succeeded but was expected to fail\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
        }
        eprintln!(
            "failed as expected: {}\n  {}",
            redact(&display),
            stderr.trim().lines().last().unwrap_or("")
        );
        stderr
    }
}

fn redact(s: &str) -> String {
    let re = regex::Regex::new(r"(--(?:src-|dest-)?creds[ =][^: ]+:)\S+").unwrap();
    let s = re.replace_all(s, "${1}***");
    let re = regex::Regex::new(r"(--password[ =])\S+").unwrap();
    re.replace_all(&s, "${1}***").into_owned()
}

/// `skopeo` with a permissive signature policy of its own (so the host's
/// /etc/containers/policy.json does not matter).
pub fn skopeo(scratch: &Path) -> Tool {
    let policy = write_policy(scratch);
    Tool::new("skopeo", scratch).arg("--policy").arg(policy)
}

/// `buildah` with private storage under `storage`.
pub fn buildah(storage: &Path) -> Tool {
    Tool::new("buildah", storage)
        .arg("--root")
        .arg(storage.join("root"))
        .arg("--runroot")
        .arg(storage.join("runroot"))
        .arg("--storage-driver")
        .arg("vfs")
        .env("BUILDAH_ISOLATION", "chroot")
}

/// `podman` with private storage under `storage` (pull/push only, no containers).
pub fn podman(storage: &Path) -> Tool {
    Tool::new("podman", storage)
        .arg("--root")
        .arg(storage.join("root"))
        .arg("--runroot")
        .arg(storage.join("runroot"))
        .arg("--tmpdir")
        .arg(storage.join("tmp"))
        .arg("--storage-driver")
        .arg("vfs")
        .arg("--cgroup-manager")
        .arg("cgroupfs")
        .arg("--events-backend")
        .arg("none")
}

/// A signature policy accepting anything, written into `scratch`.
pub fn write_policy(scratch: &Path) -> PathBuf {
    let path = scratch.join("policy.json");
    if !path.exists() {
        std::fs::create_dir_all(scratch).unwrap();
        std::fs::write(&path, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
    }
    path
}

/// Read a `--digestfile` written by skopeo/buildah/podman.
pub fn read_digest_file(path: &Path) -> String {
    let d = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("digest file {} not written: {e}", path.display()));
    let d = d.trim().to_string();
    assert!(
        d.starts_with("sha256:") && d.len() == 71,
        "digest file {} holds {d:?}, not a sha256 digest",
        path.display()
    );
    d
}

/// A fresh temporary directory.
pub fn scratch_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

/// Log how long a named step took (shown with --nocapture).
pub fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let r = f();
    eprintln!("[{:>7.2?}] {what}", start.elapsed());
    r
}

/// A random lowercase suffix for repository names.
pub fn rand_suffix() -> String {
    let n: u32 = rand::thread_rng().gen();
    format!("{n:08x}")
}

/// Poll `f` until it holds, failing the test after `limit`.
pub fn wait_for(what: &str, limit: std::time::Duration, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
