//! HTTP calls of the node protocol (`crate::node_protocol`).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::node_protocol::{Desired, JoinRequest, JoinResponse, LogAck, NodeStatus};

#[derive(Debug, thiserror::Error)]
pub enum NodeClientError {
    #[error("{what}: {source}")]
    Http {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what}: the server answered {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
}

impl NodeClientError {
    /// Worth trying again (the server is down or restarting).
    pub fn transient(&self) -> bool {
        match self {
            NodeClientError::Http { .. } => true,
            NodeClientError::Status { status, .. } => *status >= 500,
        }
    }
}

#[derive(Clone)]
pub struct NodeClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl NodeClient {
    pub fn new(server: &str, extra_roots: &[reqwest::Certificate]) -> NodeClient {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(50));
        for root in extra_roots {
            builder = builder.add_root_certificate(root.clone());
        }
        NodeClient {
            http: builder.build().expect("a reqwest client"),
            base: format!("{}/api/v1/node", server.trim_end_matches('/')),
            token: None,
        }
    }

    pub fn with_token(mut self, token: String) -> NodeClient {
        self.token = Some(token);
        self
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
    }

    async fn send(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, NodeClientError> {
        let response = request
            .send()
            .await
            .map_err(|source| NodeClientError::Http {
                what: what.to_owned(),
                source,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        let body = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or(body);
        Err(NodeClientError::Status {
            what: what.to_owned(),
            status: status.as_u16(),
            body,
        })
    }

    async fn json<T: DeserializeOwned>(
        what: &str,
        response: reqwest::Response,
    ) -> Result<T, NodeClientError> {
        response
            .json()
            .await
            .map_err(|source| NodeClientError::Http {
                what: what.to_owned(),
                source,
            })
    }

    async fn post<B: Serialize>(
        &self,
        what: &str,
        path: &str,
        body: &B,
    ) -> Result<reqwest::Response, NodeClientError> {
        self.send(what, self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    pub async fn join(&self, body: &JoinRequest) -> Result<JoinResponse, NodeClientError> {
        let response = self.post("joining the cluster", "/join", body).await?;
        Self::json("joining the cluster", response).await
    }

    /// The desired state once its revision passes `after`; `None` when the
    /// long-poll ended with nothing new.
    pub async fn desired(&self, after: i64) -> Result<Option<Desired>, NodeClientError> {
        let what = "asking for the desired state";
        let request = self
            .request(reqwest::Method::GET, &format!("/desired?after={after}"))
            .timeout(Duration::from_secs(
                crate::node_protocol::LONG_POLL_SECS + 15,
            ));
        let response = self.send(what, request).await?;
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        Self::json(what, response).await.map(Some)
    }

    pub async fn status(&self, status: &NodeStatus) -> Result<(), NodeClientError> {
        let request = self
            .request(reqwest::Method::POST, "/status")
            .json(status)
            .timeout(Duration::from_secs(15));
        self.send("reporting status", request).await.map(|_| ())
    }

    pub async fn log(
        &self,
        instance: &str,
        offset: u64,
        bytes: Vec<u8>,
    ) -> Result<u64, NodeClientError> {
        let what = format!("shipping {instance}'s log");
        let request = self
            .request(
                reqwest::Method::POST,
                &format!("/instances/{instance}/log?offset={offset}"),
            )
            .body(bytes)
            .timeout(Duration::from_secs(30));
        let response = self.send(&what, request).await?;
        let ack: LogAck = Self::json(&what, response).await?;
        Ok(ack.length)
    }
}
