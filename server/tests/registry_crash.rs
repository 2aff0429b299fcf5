//! Crash safety: SIGKILL the server in the middle of large uploads, restart it on
//! the same data directory, and check that no partial blob is visible, the
//! database is consistent, the acknowledged part of a chunked upload survives,
//! and clients can upload again.

mod common;

use std::io::Read;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;

const MIB: usize = 1024 * 1024;

/// A request body that sends `first` bytes, then blocks until the test lets go,
/// so the server is reliably mid-request when it is killed.
struct StallingBody {
    data: Vec<u8>,
    pos: usize,
    stall_at: usize,
    release: mpsc::Receiver<()>,
}

impl Read for StallingBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.stall_at {
            let _ = self.release.recv();
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "test stopped sending",
            ));
        }
        let n = buf.len().min(self.stall_at - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn upload_files(server: &TestServer) -> Vec<(String, u64)> {
    std::fs::read_dir(server.data_dir().join("registry/uploads"))
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect()
}

fn blob_files(server: &TestServer) -> usize {
    walkdir(&server.data_dir().join("registry/blobs"))
}

fn walkdir(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|es| {
            es.flatten()
                .map(|e| {
                    if e.file_type().unwrap().is_dir() {
                        walkdir(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Wait (bounded) until `cond` holds, polling.
fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run SQL checks on the server's database with sqlx.
fn database_checks(server: &TestServer) -> (String, i64, i64, i64) {
    let path = server.data_dir().join("slipway.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&pool)
            .await
            .unwrap();
        let fk_violations = sqlx::query("PRAGMA foreign_key_check")
            .fetch_all(&pool)
            .await
            .unwrap()
            .len() as i64;
        let blobs: i64 = sqlx::query_scalar("SELECT count(*) FROM blobs")
            .fetch_one(&pool)
            .await
            .unwrap();
        let uploads: i64 = sqlx::query_scalar("SELECT count(*) FROM uploads")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        (integrity, fk_violations, blobs, uploads)
    })
}

#[test]
fn sigkill_mid_upload_leaves_no_partial_blob_and_uploads_resume() {
    let mut server = TestServer::start();
    let data = random_bytes(64 * MIB);
    let digest = sha256_digest(&data);
    let acknowledged = 16 * MIB;

    // A chunked upload whose first 16 MiB were acknowledged...
    let r = server.request(Method::POST, "/v2/crash/app/blobs/uploads/", &[], None);
    assert_eq!(r.status, 202);
    let location = r.header("location").unwrap().to_owned();
    let session = location.rsplit('/').next().unwrap().to_owned();
    let range = format!("0-{}", acknowledged - 1);
    let r = server.request(
        Method::PATCH,
        &location,
        &[("Content-Range", &range)],
        Some(data[..acknowledged].to_vec()),
    );
    assert_eq!(r.status, 202, "{}", r.describe());

    // ...then a streamed PATCH and a monolithic upload, both stalled mid-body.
    let mut releases = Vec::new();
    let mut clients = Vec::new();
    for (method, path) in [
        (Method::PATCH, location.clone()),
        (
            Method::POST,
            format!("/v2/crash/app/blobs/uploads/?digest={digest}"),
        ),
    ] {
        let (release, rx) = mpsc::channel();
        releases.push(release);
        let start = if method == Method::PATCH {
            acknowledged
        } else {
            0
        };
        let body = StallingBody {
            data: data[start..].to_vec(),
            pos: 0,
            stall_at: 24 * MIB,
            release: rx,
        };
        let url = format!("{}{path}", server.url());
        let auth = server.admin_auth();
        clients.push(std::thread::spawn(move || {
            let req = http_client()
                .request(method, &url)
                .body(reqwest::blocking::Body::new(body));
            auth.apply(req).send().map(|r| r.status().as_u16())
        }));
    }
    wait_for(
        "both uploads to be well under way on disk",
        Duration::from_secs(60),
        || {
            let files = upload_files(&server);
            let session_grew = files
                .iter()
                .any(|(name, len)| name == &session && *len > (acknowledged + 8 * MIB) as u64);
            let monolithic_grew = files
                .iter()
                .any(|(name, len)| name != &session && *len > (8 * MIB) as u64);
            session_grew && monolithic_grew
        },
    );
    server.kill_hard();
    drop(releases);
    for client in clients {
        let outcome = client.join().unwrap();
        assert!(
            !matches!(outcome, Ok(201) | Ok(202)),
            "a killed request cannot have succeeded: {outcome:?}"
        );
    }

    server.restart();
    // No partial blob is visible, on disk or through the API.
    assert_eq!(
        server
            .request(
                Method::HEAD,
                &format!("/v2/crash/app/blobs/{digest}"),
                &[],
                None
            )
            .status,
        404
    );
    assert_eq!(blob_files(&server), 0);
    let (integrity, fk_violations, blobs, uploads) = database_checks(&server);
    assert_eq!(integrity, "ok");
    assert_eq!(fk_violations, 0);
    assert_eq!(blobs, 0);
    assert_eq!(
        uploads, 1,
        "the chunked session survives; the monolithic upload had none"
    );

    // The session resumes at exactly the acknowledged offset...
    let r = server.request(Method::GET, &location, &[], None);
    assert_eq!(r.status, 204, "{}", r.describe());
    assert_eq!(r.header("range"), Some(range.as_str()));
    let rest = format!("{acknowledged}-{}", data.len() - 1);
    let r = server.request(
        Method::PATCH,
        &location,
        &[("Content-Range", &rest)],
        Some(data[acknowledged..].to_vec()),
    );
    assert_eq!(r.status, 202, "{}", r.describe());
    let r = server.request(
        Method::PUT,
        &format!("{location}?digest={digest}"),
        &[],
        None,
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    assert_eq!(
        server
            .get_blob("crash/app", &digest, &server.admin_auth())
            .len(),
        data.len()
    );

    // ...and a fresh monolithic upload works too.
    let other = random_bytes(MIB);
    let other_digest = sha256_digest(&other);
    let r = server.request(
        Method::POST,
        &format!("/v2/crash/other/blobs/uploads/?digest={other_digest}"),
        &[],
        Some(other),
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    assert_eq!(blob_files(&server), 2);
    let (integrity, fk_violations, blobs, _) = database_checks(&server);
    assert_eq!((integrity.as_str(), fk_violations, blobs), ("ok", 0, 2));
}

#[test]
fn sigterm_lets_requests_in_flight_finish() {
    let mut server = TestServer::start();
    let data = random_bytes(8 * MIB);
    let digest = sha256_digest(&data);
    let (release, rx) = mpsc::channel::<()>();
    // Stall after 4 MiB; once SIGTERM is sent, let the rest through.
    let body = StallingBody {
        data: data.clone(),
        pos: 0,
        stall_at: 4 * MIB,
        release: rx,
    };
    struct Resume(StallingBody, Vec<u8>, usize);
    impl Read for Resume {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.pos < self.0.stall_at {
                return self.0.read(buf);
            }
            if self.2 == self.0.stall_at {
                let _ = self.0.release.recv();
            }
            let n = buf.len().min(self.1.len() - self.2);
            buf[..n].copy_from_slice(&self.1[self.2..self.2 + n]);
            self.2 += n;
            Ok(n)
        }
    }
    let url = format!(
        "{}/v2/graceful/blobs/uploads/?digest={digest}",
        server.url()
    );
    let auth = server.admin_auth();
    let stall = 4 * MIB;
    let client = std::thread::spawn(move || {
        let req = http_client()
            .post(&url)
            .body(reqwest::blocking::Body::new(Resume(body, data, stall)));
        auth.apply(req)
            .send()
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    });
    wait_for(
        "the upload to be in flight",
        Duration::from_secs(30),
        || {
            upload_files(&server)
                .iter()
                .any(|(_, len)| *len >= (2 * MIB) as u64)
        },
    );
    let pid = server.pid();
    let killer = std::thread::spawn(move || {
        std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap();
    });
    killer.join().unwrap();
    // New connections are refused soon after the signal...
    let host = server.host_port().to_owned();
    wait_for("the listener to close", Duration::from_secs(10), || {
        std::net::TcpStream::connect(&host).is_err()
    });
    // ...while the upload already in flight completes.
    release.send(()).unwrap();
    assert_eq!(client.join().unwrap(), Ok(201));
    let status = server.terminate(Duration::from_secs(20));
    assert!(status.success(), "graceful exit: {status:?}");
}
