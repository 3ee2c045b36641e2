//! The server's configuration: one [`ServeConfig`] built from a TOML file, environment
//! variables and flags (flags win, then environment, then file, then defaults), validated
//! before any socket is bound. The admin token comes only from the environment or the file,
//! never from a flag (flags show up in `ps`).

use crate::images::DEFAULT_MAX_CONCURRENT_UPLOADS;
use crate::listener::{ConnectionLimits, TlsFiles};
use crate::serving::GuestThreadSettings;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// A configuration problem, reported before the server starts.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range.
    #[error("{field}: {problem}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// Default for `inline_max_run_us`: 1 ms.
pub const DEFAULT_INLINE_MAX_RUN_US: u64 = 1000;
/// Largest `inline_max_run_us`: 10 ms, the inline budget (a run that long would be stopped
/// and moved to a guest thread anyway).
pub const MAX_INLINE_MAX_RUN_US: u64 = 10_000;

/// Settings a config file may hold (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
    /// Data folder.
    pub data_dir: Option<PathBuf>,
    /// Bootstrap admin token.
    pub admin_token: Option<String>,
    /// Largest upload, MiB.
    pub max_upload_mib: Option<u64>,
    /// Largest unpacked package, MiB.
    pub max_unpacked_mib: Option<u64>,
    /// Sandbox slots.
    pub max_instances: Option<u32>,
    /// Meter fuel.
    pub fuel_metering: Option<bool>,
    /// Folder of the engine libraries.
    pub engines_dir: Option<PathBuf>,
    /// Longest run, in microseconds, that lets an entity's small requests run inline.
    pub inline_max_run_us: Option<u64>,
    /// PEM certificate chain for TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (behind a TLS-terminating proxy).
    pub plain_http: Option<bool>,
    /// Connections open at once.
    pub max_connections: Option<usize>,
    /// Seconds a client has for its TLS handshake and each request's headers.
    pub header_read_timeout_secs: Option<u64>,
    /// Longest pause, in seconds, while a request body is sent.
    pub body_read_timeout_secs: Option<u64>,
    /// Seconds a connection may sit with no request before it is closed.
    pub keep_alive_timeout_secs: Option<u64>,
    /// Guest threads one tenant may hold at once.
    pub tenant_guest_threads: Option<usize>,
    /// Server-wide memory budget for guests, request parsing and answer encoding, MiB.
    pub memory_budget_mib: Option<u64>,
    /// Uploads in progress at once across the server.
    pub max_concurrent_uploads: Option<usize>,
}

/// Largest `max_concurrent_uploads`.
pub const MAX_CONCURRENT_UPLOADS: usize = 1024;

/// The validated server configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Data folder (metadata, blobs, caches).
    pub data_dir: PathBuf,
    /// Bootstrap admin token, if given.
    pub admin_token: Option<String>,
    /// Largest upload, bytes.
    pub max_upload_bytes: u64,
    /// Largest unpacked package, bytes.
    pub max_unpacked_bytes: u64,
    /// Sandbox slots (requests running at once across the server).
    pub max_instances: u32,
    /// Meter fuel (needed by images that set `limits.fuel`).
    pub fuel_metering: bool,
    /// Folder of the engine libraries (`scripts/setup-engines.sh` fills `.engines`).
    pub engines_dir: Option<PathBuf>,
    /// An entity whose last run (instantiate + predict) took less than this runs its small
    /// requests inline on the async worker when the server is otherwise idle; zero turns
    /// inline runs off (see `serving/placement.rs`).
    pub inline_max_run: std::time::Duration,
    /// TLS certificate and key; plain HTTP when absent.
    pub tls: Option<TlsFiles>,
    /// Plain HTTP allowed on a non-loopback address.
    pub plain_http: bool,
    /// Connection cap and timeouts.
    pub connections: ConnectionLimits,
    /// The guest threads, and how many one tenant may hold.
    pub guest_threads: GuestThreadSettings,
    /// Server-wide memory budget for guest memories, request parsing and answer encoding,
    /// bytes.
    pub memory_budget_bytes: usize,
    /// Uploads in progress at once across the server; more are refused with 429 and
    /// `Retry-After` (each holds disk, a blocking thread and, while it compiles, memory).
    pub max_concurrent_uploads: usize,
}

/// Values given on the command line (or through their environment variables).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--max-upload-mib`.
    pub max_upload_mib: Option<u64>,
    /// `--max-unpacked-mib`.
    pub max_unpacked_mib: Option<u64>,
    /// `--max-instances`.
    pub max_instances: Option<u32>,
    /// `--fuel-metering`.
    pub fuel_metering: bool,
    /// `--engines-dir`.
    pub engines_dir: Option<PathBuf>,
    /// `--inline-max-run-us`.
    pub inline_max_run_us: Option<u64>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
    /// `--plain-http`.
    pub plain_http: bool,
    /// `--max-connections`.
    pub max_connections: Option<usize>,
    /// `--header-read-timeout-secs`.
    pub header_read_timeout_secs: Option<u64>,
    /// `--body-read-timeout-secs`.
    pub body_read_timeout_secs: Option<u64>,
    /// `--keep-alive-timeout-secs`.
    pub keep_alive_timeout_secs: Option<u64>,
    /// `--tenant-guest-threads`.
    pub tenant_guest_threads: Option<usize>,
    /// `--memory-budget-mib`.
    pub memory_budget_mib: Option<u64>,
    /// `--max-concurrent-uploads`.
    pub max_concurrent_uploads: Option<usize>,
}

/// Reads a config file.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

impl ServeConfig {
    /// Merges flags, the admin token from the environment, and the file; validates.
    pub fn resolve(
        flags: Overrides,
        env_admin_token: Option<String>,
        file: FileConfig,
    ) -> Result<Self, ConfigError> {
        let mib = |v: u64| v.saturating_mul(1 << 20);
        let defaults = ConnectionLimits::default();
        let mut guest_threads = GuestThreadSettings::for_this_machine();
        if let Some(per_tenant) = flags.tenant_guest_threads.or(file.tenant_guest_threads) {
            guest_threads.per_tenant = per_tenant;
        }
        let secs = |flag: Option<u64>, file: Option<u64>, default: Duration| {
            flag.or(file).map_or(default, Duration::from_secs)
        };
        let tls = match (
            flags.tls_cert.or(file.tls_cert),
            flags.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    field: "tls_cert / tls_key",
                    problem: "give both the certificate and the key (or neither for plain HTTP)"
                        .into(),
                })
            }
        };
        let config = Self {
            listen: flags
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            data_dir: flags
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("sandserve-data")),
            admin_token: env_admin_token
                .filter(|t| !t.is_empty())
                .or(file.admin_token),
            max_upload_bytes: mib(flags.max_upload_mib.or(file.max_upload_mib).unwrap_or(1024)),
            max_unpacked_bytes: mib(flags
                .max_unpacked_mib
                .or(file.max_unpacked_mib)
                .unwrap_or(4096)),
            max_instances: flags.max_instances.or(file.max_instances).unwrap_or(256),
            fuel_metering: flags.fuel_metering || file.fuel_metering.unwrap_or(false),
            engines_dir: flags.engines_dir.or(file.engines_dir),
            inline_max_run: std::time::Duration::from_micros(
                flags
                    .inline_max_run_us
                    .or(file.inline_max_run_us)
                    .unwrap_or(DEFAULT_INLINE_MAX_RUN_US),
            ),
            tls,
            plain_http: flags.plain_http || file.plain_http.unwrap_or(false),
            connections: ConnectionLimits {
                max_connections: flags
                    .max_connections
                    .or(file.max_connections)
                    .unwrap_or(defaults.max_connections),
                header_read_timeout: secs(
                    flags.header_read_timeout_secs,
                    file.header_read_timeout_secs,
                    defaults.header_read_timeout,
                ),
                body_read_timeout: secs(
                    flags.body_read_timeout_secs,
                    file.body_read_timeout_secs,
                    defaults.body_read_timeout,
                ),
                keep_alive_timeout: secs(
                    flags.keep_alive_timeout_secs,
                    file.keep_alive_timeout_secs,
                    defaults.keep_alive_timeout,
                ),
            },
            guest_threads,
            memory_budget_bytes: flags
                .memory_budget_mib
                .or(file.memory_budget_mib)
                .map_or_else(crate::runtime::default_budget_bytes, |m| {
                    usize::try_from(mib(m)).unwrap_or(usize::MAX)
                }),
            max_concurrent_uploads: flags
                .max_concurrent_uploads
                .or(file.max_concurrent_uploads)
                .unwrap_or(DEFAULT_MAX_CONCURRENT_UPLOADS),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(token) = &self.admin_token {
            if token.len() < 16 {
                return Err(ConfigError::Invalid {
                    field: "SANDSERVE_ADMIN_TOKEN",
                    problem: "the admin token must be at least 16 characters".into(),
                });
            }
        }
        if self.max_upload_bytes == 0 {
            return Err(ConfigError::Invalid {
                field: "max_upload_mib",
                problem: "must be at least 1".into(),
            });
        }
        if self.max_unpacked_bytes < self.max_upload_bytes {
            return Err(ConfigError::Invalid {
                field: "max_unpacked_mib",
                problem: "must be at least max_upload_mib".into(),
            });
        }
        if self.inline_max_run > std::time::Duration::from_micros(MAX_INLINE_MAX_RUN_US) {
            return Err(ConfigError::Invalid {
                field: "inline_max_run_us",
                problem: format!(
                    "must be at most {MAX_INLINE_MAX_RUN_US} (0 turns inline runs off)"
                ),
            });
        }
        if self.tls.is_none() && !self.listen.ip().is_loopback() && !self.plain_http {
            return Err(ConfigError::Invalid {
                field: "listen",
                problem: format!(
                    "{} is reachable from other machines: give --tls-cert and --tls-key (for a \
                     development certificate: sandserve cert --self-signed), or --plain-http when \
                     a TLS-terminating proxy sits in front",
                    self.listen
                ),
            });
        }
        if !(1..=1_000_000).contains(&self.connections.max_connections) {
            return Err(ConfigError::Invalid {
                field: "max_connections",
                problem: "must be between 1 and 1000000".into(),
            });
        }
        for (field, value) in [
            (
                "header_read_timeout_secs",
                self.connections.header_read_timeout,
            ),
            ("body_read_timeout_secs", self.connections.body_read_timeout),
            (
                "keep_alive_timeout_secs",
                self.connections.keep_alive_timeout,
            ),
        ] {
            if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&value) {
                return Err(ConfigError::Invalid {
                    field,
                    problem: "must be between 1 and 3600 seconds".into(),
                });
            }
        }
        if !(1..=self.guest_threads.threads).contains(&self.guest_threads.per_tenant) {
            return Err(ConfigError::Invalid {
                field: "tenant_guest_threads",
                problem: format!(
                    "must be between 1 and the {} guest threads of this machine",
                    self.guest_threads.threads
                ),
            });
        }
        if self.memory_budget_bytes < 64 << 20 {
            return Err(ConfigError::Invalid {
                field: "memory_budget_mib",
                problem: "must be at least 64".into(),
            });
        }
        if !(1..=MAX_CONCURRENT_UPLOADS).contains(&self.max_concurrent_uploads) {
            return Err(ConfigError::Invalid {
                field: "max_concurrent_uploads",
                problem: format!("must be between 1 and {MAX_CONCURRENT_UPLOADS}"),
            });
        }
        if !(1..=100_000).contains(&self.max_instances) {
            return Err(ConfigError::Invalid {
                field: "max_instances",
                problem: "must be between 1 and 100000".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_max_run_defaults_to_a_millisecond_and_is_bounded() {
        let config =
            ServeConfig::resolve(Overrides::default(), None, FileConfig::default()).unwrap();
        assert_eq!(config.inline_max_run, std::time::Duration::from_millis(1));
        let off: FileConfig = toml::from_str("inline_max_run_us = 0").unwrap();
        let config = ServeConfig::resolve(Overrides::default(), None, off).unwrap();
        assert!(config.inline_max_run.is_zero());
        let too_long = Overrides {
            inline_max_run_us: Some(MAX_INLINE_MAX_RUN_US + 1),
            ..Overrides::default()
        };
        let error = ServeConfig::resolve(too_long, None, FileConfig::default()).unwrap_err();
        assert!(error.to_string().contains("inline_max_run_us"), "{error}");
    }

    #[test]
    fn concurrent_uploads_default_to_four_and_are_bounded() {
        let config =
            ServeConfig::resolve(Overrides::default(), None, FileConfig::default()).unwrap();
        assert_eq!(
            config.max_concurrent_uploads,
            DEFAULT_MAX_CONCURRENT_UPLOADS
        );
        assert_eq!(DEFAULT_MAX_CONCURRENT_UPLOADS, 4);
        let file: FileConfig = toml::from_str("max_concurrent_uploads = 2").unwrap();
        let config = ServeConfig::resolve(Overrides::default(), None, file).unwrap();
        assert_eq!(config.max_concurrent_uploads, 2);
        for bad in [0, MAX_CONCURRENT_UPLOADS + 1] {
            let flags = Overrides {
                max_concurrent_uploads: Some(bad),
                ..Overrides::default()
            };
            let error = ServeConfig::resolve(flags, None, FileConfig::default()).unwrap_err();
            assert!(
                error.to_string().contains("max_concurrent_uploads"),
                "{error}"
            );
        }
    }

    #[test]
    fn flags_win_over_the_file_and_limits_are_checked() {
        let file: FileConfig =
            toml::from_str("listen = \"127.0.0.1:9000\"\nmax_upload_mib = 5").unwrap();
        let config = ServeConfig::resolve(
            Overrides {
                max_upload_mib: Some(7),
                ..Overrides::default()
            },
            None,
            file,
        )
        .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.max_upload_bytes, 7 << 20);
        let short = ServeConfig::resolve(
            Overrides::default(),
            Some("short".into()),
            FileConfig::default(),
        );
        assert!(short.is_err());
        assert!(
            toml::from_str::<FileConfig>("lisen = 1").is_err(),
            "typos are errors"
        );
    }

    #[test]
    fn plain_http_beyond_loopback_must_be_asked_for() {
        let open: FileConfig = toml::from_str("listen = \"0.0.0.0:8080\"").unwrap();
        let error = ServeConfig::resolve(Overrides::default(), None, open).unwrap_err();
        assert!(error.to_string().contains("--tls-cert"), "{error}");
        let asked: FileConfig =
            toml::from_str("listen = \"0.0.0.0:8080\"\nplain_http = true").unwrap();
        assert!(ServeConfig::resolve(Overrides::default(), None, asked).is_ok());
        let half: FileConfig = toml::from_str("tls_cert = \"c.pem\"").unwrap();
        assert!(ServeConfig::resolve(Overrides::default(), None, half).is_err());
        let zero: FileConfig = toml::from_str("header_read_timeout_secs = 0").unwrap();
        assert!(ServeConfig::resolve(Overrides::default(), None, zero).is_err());
    }
}
