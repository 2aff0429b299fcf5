//! A kubernetes cluster's kubeconfig is untrusted text from an admin. It must
//! be self-contained: the CA, the token or client certificate inline. One
//! that names a file (`certificate-authority`, `tokenFile`,
//! `client-certificate`, `client-key`) or runs something on the server's
//! machine (`exec`, `auth-provider`) is refused, naming the field. Its text
//! is never logged or returned; errors never quote it.

use std::fmt;
use std::time::Duration;

use ::kube::config::{KubeConfigOptions, Kubeconfig};

use super::KubeError;

/// The largest kubeconfig accepted (they are a few KiB).
pub const MAX_LEN: usize = 64 << 10;

/// Waits on the API server: connecting, and each answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// A kubeconfig's text; `Debug` never shows it.
#[derive(Clone)]
pub struct KubeconfigText(String);

impl KubeconfigText {
    pub fn new(text: String) -> KubeconfigText {
        KubeconfigText(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KubeconfigText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KubeconfigText(<{} bytes, redacted>)", self.0.len())
    }
}

/// A client for the kubeconfig's current context, and where it points.
pub struct Connection {
    pub client: ::kube::Client,
    /// `--namespace`, else the context's, else `default`.
    pub namespace: String,
    /// The API server's URL (not a secret: shown in messages).
    pub server: String,
}

/// Parses and checks `text`: YAML of a kubeconfig, self-contained.
pub fn parse(text: &KubeconfigText) -> Result<Kubeconfig, KubeError> {
    let text = text.expose();
    if text.len() > MAX_LEN {
        return Err(KubeError::Kubeconfig(format!(
            "the kubeconfig is {} bytes; at most {MAX_LEN} are accepted",
            text.len()
        )));
    }
    // The parser's own message may quote a value (a token): say only that
    // it is not a kubeconfig.
    let config = Kubeconfig::from_yaml(text).map_err(|_| {
        KubeError::Kubeconfig(
            "the kubeconfig is not a valid kubeconfig (YAML with clusters, users and contexts)"
                .into(),
        )
    })?;
    let refuse = |field: String, what: &str| -> Result<(), KubeError> {
        Err(KubeError::Kubeconfig(format!(
            "kubeconfig field {field} {what}; the server accepts only a self-contained kubeconfig \
             (certificate-authority-data, and a token or client-certificate-data with client-key-data)"
        )))
    };
    for (i, named) in config.clusters.iter().enumerate() {
        let Some(cluster) = &named.cluster else {
            continue;
        };
        if cluster.certificate_authority.is_some() {
            refuse(
                format!("clusters[{i}].cluster.certificate-authority"),
                "names a file on the server's machine",
            )?;
        }
    }
    for (i, named) in config.auth_infos.iter().enumerate() {
        let Some(user) = &named.auth_info else {
            continue;
        };
        let at = |field: &str| format!("users[{i}].user.{field}");
        if user.token_file.is_some() {
            refuse(at("tokenFile"), "names a file on the server's machine")?;
        }
        if user.client_certificate.is_some() {
            refuse(
                at("client-certificate"),
                "names a file on the server's machine",
            )?;
        }
        if user.client_key.is_some() {
            refuse(at("client-key"), "names a file on the server's machine")?;
        }
        if user.exec.is_some() {
            refuse(at("exec"), "would run a program on the server's machine")?;
        }
        if user.auth_provider.is_some() {
            refuse(
                at("auth-provider"),
                "would run an auth provider on the server's machine",
            )?;
        }
    }
    Ok(config)
}

/// A client for `text`'s current context, in `namespace` if given.
pub async fn connect(
    text: &KubeconfigText,
    namespace: Option<&str>,
) -> Result<Connection, KubeError> {
    let config = parse(text)?;
    let mut config = ::kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .map_err(|e| KubeError::Kubeconfig(format!("the kubeconfig cannot be used: {e}")))?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    let namespace = namespace
        .map(str::to_owned)
        .unwrap_or_else(|| config.default_namespace.clone());
    let server = config.cluster_url.to_string();
    let client = ::kube::Client::try_from(config)
        .map_err(|e| KubeError::Kubeconfig(format!("the kubeconfig cannot be used: {e}")))?;
    Ok(Connection {
        client,
        namespace,
        server,
    })
}
