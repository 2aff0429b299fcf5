//! HTTPS: the certificate and key from `tls_cert`/`tls_key`, re-read on
//! SIGHUP. New handshakes get whatever [`Certificates`] holds at that moment;
//! connections already open keep the certificate they started with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: PathBuf },
    #[error("{path}: {error}")]
    BadPem { path: PathBuf, error: String },
    #[error("{path} holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {error}")]
    BadKey { path: PathBuf, error: String },
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The server's certificate, swapped whole on reload.
#[derive(Debug)]
pub struct Certificates {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// sha256 of the files' bytes when last loaded: a reload with the same
    /// bytes changes nothing.
    loaded: Mutex<[u8; 32]>,
}

impl Certificates {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Certificates>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let (key, fingerprint) = read(cert_path, key_path, &provider)?;
        Ok(Arc::new(Certificates {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider,
            current: RwLock::new(Arc::new(key)),
            loaded: Mutex::new(fingerprint),
        }))
    }

    /// Read the files again; swap in what they hold if it changed. Returns
    /// whether it did. On error the current certificate stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (key, fingerprint) = read(&self.cert_path, &self.key_path, &self.provider)?;
        let mut loaded = self.loaded.lock().unwrap();
        if *loaded == fingerprint {
            return Ok(false);
        }
        *self.current.write().unwrap() = Arc::new(key);
        *loaded = fingerprint;
        Ok(true)
    }

    pub fn paths(&self) -> (&Path, &Path) {
        (&self.cert_path, &self.key_path)
    }

    /// A TLS acceptor offering HTTP/2 and HTTP/1.1 (ALPN), always with the
    /// certificate current at the handshake.
    pub fn acceptor(self: &Arc<Self>) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap().clone())
    }
}

fn read(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, [u8; 32]), TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|error| TlsError::Read {
            path: path.to_owned(),
            error,
        })
    };
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: cert_path.to_owned(),
            error: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::BadKey {
        path: key_path.to_owned(),
        error: e.to_string(),
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::BadKey {
            path: key_path.to_owned(),
            error: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    if certified.keys_match().is_err() {
        return Err(TlsError::Mismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
        });
    }
    let mut hash = Sha256::new();
    hash.update(&cert_pem);
    hash.update(&key_pem);
    Ok((certified, hash.finalize().into()))
}
