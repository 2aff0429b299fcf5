//! Typed settings, layered: built-in defaults, then a TOML file, then `SLIPWAY_*`
//! environment variables (nested keys joined by `__`, e.g.
//! `SLIPWAY_REGISTRY__GC__GRACE_PERIOD=30m`), then command-line flags. Loading
//! reads and validates; it creates nothing.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// A string that never appears in `Debug` output or logs.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The URL clients reach this server at, for token realms and links. When
    /// unset it is taken from each request's `Host` header.
    pub public_url: Option<String>,
    /// A tracing filter such as `info` or `slipway=debug,sqlx=warn`.
    pub log: String,
    pub log_format: LogFormat,
    /// Password of the first `admin` user, used only when no user exists yet.
    pub admin_password: Option<Secret>,
    /// Key for pipeline secrets at rest: 64 hex digits (32 bytes). When unset,
    /// one is generated at first start into `<data_dir>/secrets.key` (mode 0600).
    pub secrets_key: Option<Secret>,
    /// How long in-flight requests get to finish after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// PEM certificate chain for HTTPS (with `tls_key`); re-read on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    pub http: HttpSettings,
    pub registry: RegistrySettings,
}

/// Connection handling: what a client may hold open, and for how long.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    /// A request head (request line and headers) must arrive within this
    /// time; so must a new connection's first request (TLS handshake
    /// included). Bodies are not limited by it.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight is closed after this long. For
    /// HTTP/1 the header timeout already runs while waiting for the next
    /// request, so an idle HTTP/1 connection closes after the shorter of the two.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A request body that sends no data for this long while the server waits
    /// for it is aborted (the request fails, its connection closes). Only
    /// pauses count: a slow but steady upload is never cut.
    #[serde(with = "humantime_serde")]
    pub body_idle_timeout: Duration,
    /// Open connections in all. At start it is lowered to fit the process's
    /// open-file limit (raised to its hard limit first) with room to spare.
    pub max_connections: usize,
    /// Open connections from one IP address.
    pub max_connections_per_ip: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RegistrySettings {
    pub anonymous_pull: bool,
    /// Regular expressions; a tag matching one never moves once set.
    pub immutable_tags: Vec<String>,
    pub max_manifest_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub upload_expiry: Duration,
    /// Lifetime of the scoped tokens `/auth/token` hands out.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    pub gc: GcSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GcSettings {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    #[serde(with = "humantime_serde")]
    pub untagged_retention: Option<Duration>,
    pub batch: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: "127.0.0.1:8080".parse().unwrap(),
            data_dir: PathBuf::from("slipway-data"),
            public_url: None,
            log: "info".into(),
            log_format: LogFormat::Human,
            admin_password: None,
            secrets_key: None,
            shutdown_grace: Duration::from_secs(10),
            tls_cert: None,
            tls_key: None,
            http: HttpSettings::default(),
            registry: RegistrySettings::default(),
        }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_idle_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_connections_per_ip: 256,
        }
    }
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            anonymous_pull: false,
            immutable_tags: vec!["^[0-9a-f]{40}$".into()],
            max_manifest_bytes: 4 * 1024 * 1024,
            upload_expiry: Duration::from_secs(24 * 3600),
            token_ttl: Duration::from_secs(300),
            gc: GcSettings::default(),
        }
    }
}

impl Default for GcSettings {
    fn default() -> Self {
        GcSettings {
            enabled: true,
            interval: Duration::from_secs(600),
            grace_period: Duration::from_secs(3600),
            untagged_retention: None,
            batch: 100,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Inconsistent(String),
    #[error("invalid configuration: registry.immutable_tags entry {pattern:?} is not a valid regular expression: {error}")]
    BadPattern {
        pattern: String,
        error: regex::Error,
    },
}

/// Flags from the command line, which win over every other source.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

/// Environment variables that configure the CLI client, not the server.
const CLIENT_ENV: [&str; 4] = ["server", "token", "user", "password"];

pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Settings, ConfigError> {
    load_from(
        file,
        overrides,
        Env::prefixed("SLIPWAY_").split("__").ignore(&CLIENT_ENV),
    )
}

fn load_from(
    file: Option<&Path>,
    overrides: &Overrides,
    env: Env,
) -> Result<Settings, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(Settings::default()));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::MissingFile(path.to_owned()));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    let settings: Settings = figment
        .merge(env)
        .merge(Serialized::defaults(overrides))
        .extract()
        .map_err(Box::new)?;
    settings.immutable_tag_patterns()?;
    settings.check()?;
    Ok(settings)
}

impl Settings {
    pub fn immutable_tag_patterns(&self) -> Result<Vec<regex::Regex>, ConfigError> {
        self.registry
            .immutable_tags
            .iter()
            .map(|p| {
                regex::Regex::new(p).map_err(|error| ConfigError::BadPattern {
                    pattern: p.clone(),
                    error,
                })
            })
            .collect()
    }

    /// What the types cannot say: TLS needs both files, limits are not zero.
    fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Inconsistent(m.to_owned()));
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return bad("tls_cert is set but tls_key is not"),
            (None, Some(_)) => return bad("tls_key is set but tls_cert is not"),
            _ => {}
        }
        if self.http.max_connections == 0 || self.http.max_connections_per_ip == 0 {
            return bad("http.max_connections and http.max_connections_per_ip must be at least 1");
        }
        if self.http.header_read_timeout.is_zero()
            || self.http.idle_timeout.is_zero()
            || self.http.body_idle_timeout.is_zero()
        {
            return bad(
                "http.header_read_timeout, http.idle_timeout and http.body_idle_timeout must be longer than 0s",
            );
        }
        Ok(())
    }

    /// Whether the server speaks HTTPS.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// `public_url` as configured, else `http(s)://<listen address>`.
    pub fn default_public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.clone(),
            None => {
                let scheme = if self.tls() { "https" } else { "http" };
                format!("{scheme}://{}", self.listen)
            }
        }
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("slipway.db")
    }

    pub fn registry_root(&self) -> PathBuf {
        self.data_dir.join("registry")
    }
}

#[cfg(test)]
// figment's Jail closures return its own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn layers_defaults_file_env_and_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "slipway.toml",
                r#"
                listen = "127.0.0.1:9000"
                data_dir = "/from/file"
                [registry.gc]
                grace_period = "30m"
                "#,
            )?;
            jail.set_env("SLIPWAY_DATA_DIR", "/from/env");
            jail.set_env("SLIPWAY_REGISTRY__ANONYMOUS_PULL", "true");
            jail.set_env("SLIPWAY_ADMIN_PASSWORD", "hunter2");
            jail.set_env("SLIPWAY_TOKEN", "client-side, ignored");
            let flags = Overrides {
                listen: Some("127.0.0.1:1".parse().unwrap()),
                data_dir: None,
            };
            let s = load(Some(Path::new("slipway.toml")), &flags).unwrap();
            assert_eq!(s.listen, "127.0.0.1:1".parse().unwrap());
            assert_eq!(s.data_dir, PathBuf::from("/from/env"));
            assert!(s.registry.anonymous_pull);
            assert_eq!(s.registry.gc.grace_period, Duration::from_secs(1800));
            assert_eq!(s.registry.gc.interval, Duration::from_secs(600));
            assert_eq!(s.admin_password.as_ref().unwrap().expose(), "hunter2");
            assert!(
                !format!("{s:?}").contains("hunter2"),
                "secrets must not show in Debug"
            );
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_problem() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "listen = 12\n")?;
            let err = load(Some(Path::new("bad.toml")), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("listen"), "{err}");
            let err = load(Some(Path::new("missing.toml")), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("missing.toml"), "{err}");
            jail.set_env("SLIPWAY_REGISTRY__IMMUTABLE_TAGS", "[\"(\"]");
            let err = load(None, &Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("immutable_tags"), "{err}");
            Ok(())
        });
    }
}
