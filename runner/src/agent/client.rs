//! HTTP calls to the server's runner API, with retries for the ones that must
//! eventually arrive (reports and logs survive a server restart).
//!
//! The client keeps each leased job's lease token and sends it on every
//! `/jobs/{job}/…` call (the server refuses them without it), from the lease
//! until the job's end is reported.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::{
    Heartbeat, HeartbeatResponse, ImageReport, JobCredentials, JobReport, Lease, LeaseRequest,
    LogAck, RegisterRequest, RegisterResponse, StepReport, LEASE_HEADER,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{what}: {source}")]
    Http {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server's TLS certificate was not trusted: retrying cannot help.
    #[error("{what}: the server's TLS certificate is not trusted ({detail}); give the runner the CA that signed it with --ca-cert FILE")]
    Certificate { what: String, detail: String },
    #[error("{what}: the server answered {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    /// The server says this attempt is no longer ours.
    #[error("{what}: the lease is gone (stale attempt)")]
    Stale { what: String },
}

impl ClientError {
    /// Worth trying again (the server is down or restarting).
    pub fn transient(&self) -> bool {
        match self {
            ClientError::Http { .. } => true,
            ClientError::Certificate { .. } => false,
            ClientError::Status { status, .. } => *status >= 500,
            ClientError::Stale { .. } => false,
        }
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// The lease token of each job this runner holds, by job id.
    leases: Arc<Mutex<HashMap<i64, String>>>,
}

/// A failed request as a `ClientError`: certificate problems (found in the
/// error's sources, where rustls puts them) apart, since they are not transient.
fn http_error(what: &str, source: reqwest::Error) -> ClientError {
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(&source);
    while let Some(e) = cause {
        let text = e.to_string();
        if text.contains("certificate") {
            return ClientError::Certificate {
                what: what.to_owned(),
                detail: text,
            };
        }
        cause = e.source();
    }
    ClientError::Http {
        what: what.to_owned(),
        source,
    }
}

impl Client {
    /// A client of `server`, trusting the system's CAs and `extra_roots`.
    pub fn new(server: &str, extra_roots: &[reqwest::Certificate]) -> Client {
        let mut http = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        for root in extra_roots {
            http = http.add_root_certificate(root.clone());
        }
        Client {
            http: http.build().expect("an HTTP client"),
            base: format!("{}/api/v1/runner", server.trim_end_matches('/')),
            token: None,
            leases: Arc::default(),
        }
    }

    pub fn with_token(mut self, token: String) -> Client {
        self.token = Some(token);
        self
    }

    /// A call to `path`; one about a job (`/jobs/{job}/…`) carries the
    /// job's lease token, here so no job call can go without it.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let job = path
            .strip_prefix("/jobs/")
            .and_then(|rest| rest.split('/').next())
            .and_then(|id| id.parse::<i64>().ok());
        if let Some(lease) = job.and_then(|j| self.leases.lock().unwrap().get(&j).cloned()) {
            req = req.header(LEASE_HEADER, lease);
        }
        req
    }

    async fn send(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let response = req
            .send()
            .await
            .map_err(|source| http_error(what, source))?;
        let status = response.status().as_u16();
        if status == 409 {
            return Err(ClientError::Stale {
                what: what.to_owned(),
            });
        }
        if status >= 300 {
            let body = response.text().await.unwrap_or_default();
            return Err(ClientError::Status {
                what: what.to_owned(),
                status,
                body: body.chars().take(500).collect(),
            });
        }
        Ok(response)
    }

    async fn json<B: Serialize, T: DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<Option<T>, ClientError> {
        let req = self
            .request(reqwest::Method::POST, path)
            .timeout(timeout)
            .json(body);
        let response = self.send(what, req).await?;
        if response.status().as_u16() == 204 {
            return Ok(None);
        }
        let parsed = response.json().await.map_err(|source| ClientError::Http {
            what: what.to_owned(),
            source,
        })?;
        Ok(Some(parsed))
    }

    pub async fn register(&self, body: &RegisterRequest) -> Result<RegisterResponse, ClientError> {
        self.json("registering", "/register", body, Duration::from_secs(30))
            .await?
            .ok_or_else(|| ClientError::Status {
                what: "registering".into(),
                status: 204,
                body: String::new(),
            })
    }

    /// Lease a job, then fetch its credentials (secret values, registry
    /// tokens) with the lease's token; the lease comes back with them filled.
    pub async fn lease(&self, free: u32, wait: Duration) -> Result<Option<Lease>, ClientError> {
        let body = LeaseRequest {
            free,
            wait_ms: wait.as_millis() as u64,
        };
        let lease: Option<Lease> = self
            .json(
                "asking for a job",
                "/lease",
                &body,
                wait + Duration::from_secs(10),
            )
            .await?;
        let Some(mut lease) = lease else {
            return Ok(None);
        };
        self.leases
            .lock()
            .unwrap()
            .insert(lease.job_id, lease.lease_token.clone());
        let (job, attempt) = (lease.job_id, lease.attempt);
        let what = "fetching the job's credentials";
        let path = format!("/jobs/{job}/credentials?attempt={attempt}");
        let fetched = retry(Duration::from_secs(30), || async {
            let req = self
                .request(reqwest::Method::GET, &path)
                .timeout(Duration::from_secs(30));
            self.send(what, req)
                .await?
                .json::<JobCredentials>()
                .await
                .map_err(|source| ClientError::Http {
                    what: what.into(),
                    source,
                })
        })
        .await;
        match fetched {
            Ok(credentials) => {
                lease.fill(credentials);
                Ok(Some(lease))
            }
            Err(e) => {
                // The lease runs out on the server and the job is queued again.
                self.leases.lock().unwrap().remove(&job);
                Err(e)
            }
        }
    }

    pub async fn heartbeat(
        &self,
        job: i64,
        attempt: i64,
    ) -> Result<HeartbeatResponse, ClientError> {
        self.json(
            "heartbeat",
            &format!("/jobs/{job}/heartbeat"),
            &Heartbeat { attempt },
            Duration::from_secs(5),
        )
        .await?
        .ok_or_else(|| ClientError::Stale {
            what: "heartbeat".into(),
        })
    }

    /// A GET whose whole body is wanted (a tar).
    async fn download(&self, what: &str, path: &str) -> Result<bytes::Bytes, ClientError> {
        let req = self
            .request(reqwest::Method::GET, path)
            .timeout(Duration::from_secs(600));
        self.send(what, req)
            .await?
            .bytes()
            .await
            .map_err(|source| ClientError::Http {
                what: what.into(),
                source,
            })
    }

    pub async fn source(&self, job: i64, attempt: i64) -> Result<bytes::Bytes, ClientError> {
        self.download(
            "downloading the source",
            &format!("/jobs/{job}/source?attempt={attempt}"),
        )
        .await
    }

    /// The artifacts `from` left, for `job`.
    pub async fn artifacts(
        &self,
        job: i64,
        attempt: i64,
        from: i64,
    ) -> Result<bytes::Bytes, ClientError> {
        self.download(
            "downloading artifacts",
            &format!("/jobs/{job}/artifacts/{from}?attempt={attempt}"),
        )
        .await
    }

    pub async fn upload_artifacts(
        &self,
        job: i64,
        attempt: i64,
        tar: Vec<u8>,
    ) -> Result<(), ClientError> {
        let req = self
            .request(
                reqwest::Method::POST,
                &format!("/jobs/{job}/artifacts?attempt={attempt}"),
            )
            .timeout(Duration::from_secs(600))
            .body(tar);
        self.send("uploading artifacts", req).await.map(|_| ())
    }

    pub async fn step(
        &self,
        job: i64,
        position: i64,
        report: &StepReport,
    ) -> Result<(), ClientError> {
        self.json::<_, serde_json::Value>(
            "reporting a step",
            &format!("/jobs/{job}/steps/{position}"),
            report,
            Duration::from_secs(30),
        )
        .await
        .map(|_| ())
    }

    /// Append log bytes at `offset`; returns the server's length afterwards
    /// (on a gap, the length to resend from).
    pub async fn log(
        &self,
        job: i64,
        position: i64,
        attempt: i64,
        offset: u64,
        bytes: Vec<u8>,
    ) -> Result<u64, ClientError> {
        let what = "sending log output";
        let req = self
            .request(
                reqwest::Method::POST,
                &format!("/jobs/{job}/steps/{position}/log?attempt={attempt}&offset={offset}"),
            )
            .timeout(Duration::from_secs(30))
            .body(bytes);
        let response = req.send().await.map_err(|source| ClientError::Http {
            what: what.into(),
            source,
        })?;
        let status = response.status().as_u16();
        if status == 200 || status == 409 {
            // 409 with a body is a gap (the length to resend from); without one
            // it is a stale attempt.
            return match response.json::<LogAck>().await {
                Ok(ack) => Ok(ack.length),
                Err(_) => Err(ClientError::Stale { what: what.into() }),
            };
        }
        Err(ClientError::Status {
            what: what.into(),
            status,
            body: response.text().await.unwrap_or_default(),
        })
    }

    pub async fn report_image(&self, job: i64, report: &ImageReport) -> Result<(), ClientError> {
        self.json::<_, serde_json::Value>(
            "reporting an image",
            &format!("/jobs/{job}/images"),
            report,
            Duration::from_secs(30),
        )
        .await
        .map(|_| ())
    }

    /// Report the job's end; once it is recorded (or the lease is gone),
    /// its lease token is forgotten.
    pub async fn finish(&self, job: i64, report: &JobReport) -> Result<(), ClientError> {
        let result = self
            .json::<_, serde_json::Value>(
                "reporting the job's end",
                &format!("/jobs/{job}/finish"),
                report,
                Duration::from_secs(30),
            )
            .await
            .map(|_| ());
        if matches!(result, Ok(()) | Err(ClientError::Stale { .. })) {
            self.leases.lock().unwrap().remove(&job);
        }
        result
    }
}

/// Retry `f` while it fails transiently, with backoff up to 5 s between tries,
/// for as long as `give_up` allows.
pub async fn retry<T, F, Fut>(give_up: Duration, mut f: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let start = std::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        match f().await {
            Err(e) if e.transient() && start.elapsed() < give_up => {
                tracing::warn!(error = %e, "server unreachable; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}
