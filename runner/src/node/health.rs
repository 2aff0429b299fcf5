//! Health checks: `GET <health>` on `127.0.0.1:<port>` inside the instance's
//! network namespace (through [`crate::container::netns::connect`]), often
//! while an instance starts and less often once it is ready. 2xx makes it
//! `Ready`; `failures` failures in a row make a ready instance `Unhealthy`.
//! The last result is kept as the reason people read ("/healthz answered 500",
//! "/healthz: connection refused").

use std::path::Path;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Inner, Instance, InstanceState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthTiming {
    /// Between checks while the instance is not ready.
    pub starting_interval: Duration,
    /// Between checks once it is ready.
    pub ready_interval: Duration,
    /// Deadline of one check (connect, request, status line); the action:
    /// count it as failed, "no answer within …".
    pub timeout: Duration,
    /// Failures in a row that make a ready instance unhealthy.
    pub failures: u32,
}

impl Default for HealthTiming {
    fn default() -> Self {
        HealthTiming {
            starting_interval: Duration::from_millis(200),
            ready_interval: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            failures: 3,
        }
    }
}

/// One health check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthResult {
    pub at: SystemTime,
    /// The HTTP status it answered with.
    pub status: Option<u16>,
    /// Why there was no answer.
    pub error: Option<String>,
    /// For people: "/healthz answered 500", "/healthz: connection refused".
    pub text: String,
}

impl HealthResult {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Check `path` on `port` in the network namespace `netns` once.
pub async fn check(netns: &Path, port: u16, path: &str, timeout: Duration) -> HealthResult {
    let answer = tokio::time::timeout(timeout, request(netns, port, path)).await;
    let (status, error) = match answer {
        Ok(Ok(status)) => (Some(status), None),
        Ok(Err(e)) => (None, Some(e.to_string())),
        Err(_) => (None, Some(format!("no answer within {timeout:?}"))),
    };
    let text = match (&status, &error) {
        (Some(s), _) => format!("{path} answered {s}"),
        (None, Some(e)) => format!("{path}: {e}"),
        (None, None) => unreachable!("a status or an error"),
    };
    HealthResult {
        at: SystemTime::now(),
        status,
        error,
        text,
    }
}

/// The status code of `GET path`, from the response's status line.
async fn request(netns: &Path, port: u16, path: &str) -> std::io::Result<u16> {
    let mut stream = crate::container::netns::connect(netns, port).await?;
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: slipway-health\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let mut line = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !line.windows(2).any(|w| w == b"\r\n") && line.len() < 1024 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        line.extend_from_slice(&buf[..n]);
    }
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the answer is not an HTTP response",
        )
    };
    let text = String::from_utf8_lossy(&line);
    let first = text.lines().next().ok_or_else(bad)?;
    let mut parts = first.split(' ');
    match (parts.next(), parts.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/") => {
            code.parse().map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}

/// Check the instance until the task is dropped, updating its state.
pub(super) async fn watch(inner: &Inner, instance: &Instance) {
    let timing = inner.options.health;
    loop {
        let result = check(
            &instance.netns(),
            instance.port,
            &instance.health,
            timing.timeout,
        )
        .await;
        let ready = record(inner, instance, result, timing.failures);
        let interval = if ready {
            timing.ready_interval
        } else {
            timing.starting_interval
        };
        tokio::time::sleep(interval).await;
    }
}

/// Apply one result; says whether the instance is ready now.
fn record(inner: &Inner, instance: &Instance, result: HealthResult, failures: u32) -> bool {
    let mut live = instance.live.lock().unwrap();
    let before = (
        live.state.clone(),
        live.last_health.as_ref().map(|h| h.text.clone()),
    );
    if result.ok() {
        live.failures = 0;
        if matches!(
            live.state,
            InstanceState::Starting | InstanceState::Unhealthy
        ) {
            live.state = InstanceState::Ready;
            live.ready_since = Some(result.at);
        }
    } else {
        live.failures = live.failures.saturating_add(1);
        if live.state == InstanceState::Ready && live.failures >= failures {
            live.state = InstanceState::Unhealthy;
            live.ready_since = None;
        }
    }
    let changed = before != (live.state.clone(), Some(result.text.clone()));
    live.last_health = Some(result);
    let ready = live.state == InstanceState::Ready;
    drop(live);
    if changed {
        inner.notify();
    }
    ready
}
