//! The HTTP client behind the CLI's client commands: `--server` plus `--token` or
//! `SLIPWAY_USER`/`SLIPWAY_PASSWORD`.

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub enum ClientAuth {
    Token(String),
    Password { user: String, password: String },
}

pub struct Client {
    base: String,
    auth: ClientAuth,
    http: reqwest::Client,
}

/// The PEM file named by `SLIPWAY_CA_CERT`: CA certificates client commands
/// trust besides the system's (a server with a private CA's certificate).
pub fn ca_cert() -> anyhow::Result<Option<Vec<u8>>> {
    match std::env::var_os("SLIPWAY_CA_CERT") {
        None => Ok(None),
        Some(path) => std::fs::read(&path)
            .map(Some)
            .with_context(|| format!("reading SLIPWAY_CA_CERT {}", path.to_string_lossy())),
    }
}

impl Client {
    pub fn new(
        server: &str,
        token: Option<String>,
        user: Option<String>,
        password: Option<String>,
    ) -> anyhow::Result<Client> {
        let auth = match (token, user, password) {
            (Some(t), _, _) => ClientAuth::Token(t),
            (None, Some(user), Some(password)) => ClientAuth::Password { user, password },
            _ => bail!("no credentials: pass --token (or SLIPWAY_TOKEN), or set SLIPWAY_USER and SLIPWAY_PASSWORD"),
        };
        Ok(Client {
            base: server.trim_end_matches('/').to_owned(),
            auth,
            http: {
                let mut http = reqwest::Client::builder();
                if let Some(pem) = ca_cert()? {
                    for root in reqwest::Certificate::from_pem_bundle(&pem)
                        .context("SLIPWAY_CA_CERT: not PEM certificates")?
                    {
                        http = http.add_root_certificate(root);
                    }
                }
                http.build().context("building the HTTP client")?
            },
        })
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            ClientAuth::Token(t) => request.bearer_auth(t),
            ClientAuth::Password { user, password } => request.basic_auth(user, Some(password)),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<R> {
        let request = self.authorized(self.http.post(format!("{}{path}", self.base)).json(body));
        self.finish(path, request).await
    }

    pub async fn put<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<R> {
        let request = self.authorized(self.http.put(format!("{}{path}", self.base)).json(body));
        self.finish(path, request).await
    }

    /// POST expecting no body back (204).
    pub async fn post_empty<B: Serialize>(&self, path: &str, body: &B) -> anyhow::Result<()> {
        let response = self
            .authorized(self.http.post(format!("{}{path}", self.base)).json(body))
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or(text);
            bail!("{path}: {status}: {message}");
        }
        Ok(())
    }

    pub async fn get<R: DeserializeOwned>(&self, path: &str) -> anyhow::Result<R> {
        let request = self.authorized(self.http.get(format!("{}{path}", self.base)));
        self.finish(path, request).await
    }

    /// GET returning the raw body and the response headers.
    pub async fn get_raw(
        &self,
        path: &str,
    ) -> anyhow::Result<(Vec<u8>, reqwest::header::HeaderMap)> {
        let response = self
            .authorized(self.http.get(format!("{}{path}", self.base)))
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?.to_vec();
        if !status.is_success() {
            bail!("{path}: {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok((body, headers))
    }

    async fn finish<R: DeserializeOwned>(
        &self,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<R> {
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or(text);
            bail!("{path}: {status}: {message}");
        }
        serde_json::from_str(&text).with_context(|| format!("{path}: unexpected response {text:?}"))
    }
}
