//! What client commands need to talk to Slipway's registry: the registry host
//! (from `--server`), the protocol, and credentials in oci-client's form.

use anyhow::{bail, Context};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;

pub struct RegistryTarget {
    /// `host:port` of Slipway's registry, the default for image references.
    pub host: String,
    pub client: oci_client::Client,
    pub auth: RegistryAuth,
}

fn split_server(server: &str) -> anyhow::Result<(&str, String)> {
    let (scheme, rest) = server
        .split_once("://")
        .context("--server must be a URL such as http://127.0.0.1:8080")?;
    Ok((scheme, rest.split('/').next().unwrap_or(rest).to_owned()))
}

/// `host:port` of Slipway's registry, from `--server`.
pub fn registry_host(server: &str) -> anyhow::Result<String> {
    split_server(server).map(|(_, host)| host)
}

pub fn target(server: &str, token: Option<&str>) -> anyhow::Result<RegistryTarget> {
    let (scheme, host) = split_server(server)?;
    let protocol = match scheme {
        "http" => ClientProtocol::Http,
        "https" => ClientProtocol::Https,
        other => bail!("--server scheme {other:?} is not http or https"),
    };
    let auth = match (
        token,
        std::env::var("SLIPWAY_USER").ok(),
        std::env::var("SLIPWAY_PASSWORD").ok(),
    ) {
        (Some(t), _, _) => RegistryAuth::Basic("token".into(), t.to_owned()),
        (None, Some(user), Some(password)) => RegistryAuth::Basic(user, password),
        _ => RegistryAuth::Anonymous,
    };
    let extra_root_certificates = crate::client::ca_cert()?
        .map(|pem| Certificate {
            encoding: CertificateEncoding::Pem,
            data: pem,
        })
        .into_iter()
        .collect();
    let client = oci_client::Client::new(ClientConfig {
        protocol,
        extra_root_certificates,
        ..Default::default()
    });
    Ok(RegistryTarget { host, client, auth })
}
