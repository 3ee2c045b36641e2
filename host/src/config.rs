//! The server's configuration. Each setting is declared once, in [`Settings`]: its doc
//! comment is its `--help` text, its field name is its flag (`--max-upload-mib`) and its
//! config-file key (`max_upload_mib`), and its `env` attribute names its environment
//! variable. The same struct parses the command line (with clap, which reads the
//! environment variable of a flag not given) and the TOML file (with serde, refusing
//! unknown keys); [`Settings::over`] layers them (flags win, then environment, then file,
//! then defaults), and [`ServeConfig::resolve`] applies the defaults and validates before
//! any socket is bound. The admin token comes only from the environment or the file, never
//! from a flag (flags show up in `ps`).

mod blobs;
mod cluster;

pub use blobs::{BlobSettings, BlobsConfig, DEFAULT_BLOB_CACHE_MIB};
pub use cluster::{ClusterConfig, Metadata};

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

/// Every setting of `sandserve serve`: flags (and their environment variables) and the keys
/// of the config file. A value left out is `None` (`false` for switches) and falls through
/// to the next layer.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, env = "SANDSERVE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Folder for metadata, blobs and caches.
    #[arg(long, env = "SANDSERVE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML config file (keys: listen, data_dir, admin_token, max_upload_mib,
    /// max_unpacked_mib, max_concurrent_uploads, max_instances, fuel_metering, engines_dir,
    /// inline_max_run_us, tls_cert, tls_key, plain_http, max_connections,
    /// header_read_timeout_secs, body_read_timeout_secs, keep_alive_timeout_secs,
    /// tenant_guest_threads, memory_budget_mib, public_metrics, log_format,
    /// inference_table_retention_hours, inference_table_max_mib, inference_table_payload_kib,
    /// blobs, blobs_endpoint, blobs_allow_http, blob_cache_mib, drain_timeout_secs, owners,
    /// metadata, node_id, advertise_url).
    // Not a key of the file itself: a file cannot name another.
    #[arg(long, env = "SANDSERVE_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Bootstrap admin token: from SANDSERVE_ADMIN_TOKEN or the file, never a flag.
    #[arg(skip)]
    pub admin_token: Option<String>,
    /// Largest package upload, MiB [default: 1024].
    #[arg(long, env = "SANDSERVE_MAX_UPLOAD_MIB")]
    pub max_upload_mib: Option<u64>,
    /// Largest unpacked package, MiB [default: 4096].
    #[arg(long, env = "SANDSERVE_MAX_UNPACKED_MIB")]
    pub max_unpacked_mib: Option<u64>,
    /// Package uploads that may be in progress at once across the server; one more is
    /// refused at once with 429 and Retry-After, at most 1024 [default: 4].
    #[arg(long, env = "SANDSERVE_MAX_CONCURRENT_UPLOADS")]
    pub max_concurrent_uploads: Option<usize>,
    /// Sandboxes that may run at once across the server [default: 256].
    #[arg(long, env = "SANDSERVE_MAX_INSTANCES")]
    pub max_instances: Option<u32>,
    /// Meter instructions (needed by images that set limits.fuel).
    #[arg(long, env = "SANDSERVE_FUEL_METERING")]
    #[serde(default)]
    pub fuel_metering: bool,
    /// Folder of the engine libraries [default: .engines].
    #[arg(long, env = "SANDSERVE_ENGINES_DIR")]
    pub engines_dir: Option<PathBuf>,
    /// On an otherwise idle server, small requests of an entity whose last run took less
    /// than this many microseconds run on the async worker instead of a guest thread
    /// (saves two thread wake-ups); 0 turns this off, at most 10000 [default: 1000].
    #[arg(long, env = "SANDSERVE_INLINE_MAX_RUN_US")]
    pub inline_max_run_us: Option<u64>,
    /// PEM certificate chain: serve HTTPS (TLS 1.2/1.3, HTTP/2 or HTTP/1.1 by ALPN). The
    /// pair is reloaded without a restart when its files change.
    #[arg(long, env = "SANDSERVE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "SANDSERVE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on an address other machines can reach (only behind a
    /// TLS-terminating proxy); loopback addresses never need it.
    #[arg(long, env = "SANDSERVE_PLAIN_HTTP")]
    #[serde(default)]
    pub plain_http: bool,
    /// Connections open at once; at the cap the longest-idle connection is closed for a
    /// newcomer, and when none is idle newcomers get 503 [default: 1024].
    #[arg(long, env = "SANDSERVE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Seconds a client has for its TLS handshake and for each request's headers
    /// [default: 10].
    #[arg(long, env = "SANDSERVE_HEADER_READ_TIMEOUT_SECS")]
    pub header_read_timeout_secs: Option<u64>,
    /// Longest pause, in seconds, while a request body is sent; past it the request ends
    /// with 408 [default: 15].
    #[arg(long, env = "SANDSERVE_BODY_READ_TIMEOUT_SECS")]
    pub body_read_timeout_secs: Option<u64>,
    /// Seconds a connection may sit with no request in flight before it is closed
    /// [default: 60].
    #[arg(long, env = "SANDSERVE_KEEP_ALIVE_TIMEOUT_SECS")]
    pub keep_alive_timeout_secs: Option<u64>,
    /// Guest threads one tenant may hold at once (its share: the rest stay free for the
    /// other tenants; its further requests wait, within their timeout, behind its own)
    /// [default: two per CPU, at least 4; the guest threads are 16 per CPU, at least 64].
    #[arg(long, env = "SANDSERVE_TENANT_GUEST_THREADS")]
    pub tenant_guest_threads: Option<usize>,
    /// Server-wide memory budget, MiB, for guest memories (charged as they grow), request
    /// parsing and answer encoding; what does not fit is answered 503 at once, and an
    /// entity whose memory limit alone exceeds it is not deployed [default: 3/4 of RAM].
    #[arg(long, env = "SANDSERVE_MEMORY_BUDGET_MIB")]
    pub memory_budget_mib: Option<u64>,
    /// Serve `GET /metrics` to anyone who can reach the server (for a Prometheus scraper
    /// on a private network); without it, only the admin token may read it. Tenants read
    /// their own endpoints' metrics at /api/2.0/serving-endpoints/{name}/metrics either way.
    #[arg(long, env = "SANDSERVE_PUBLIC_METRICS")]
    #[serde(default)]
    pub public_metrics: bool,
    /// Server log format: `text` (colours only on a terminal) or `json` (one object per
    /// line) [default: text].
    #[arg(long, env = "SANDSERVE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Hours an inference-table row is kept (whole segment files are deleted once all
    /// their rows are older) [default: 168].
    #[arg(long, env = "SANDSERVE_INFERENCE_TABLE_RETENTION_HOURS")]
    pub inference_table_retention_hours: Option<u64>,
    /// MiB of inference-table files kept per endpoint; the oldest segments go first
    /// [default: 1024].
    #[arg(long, env = "SANDSERVE_INFERENCE_TABLE_MAX_MIB")]
    pub inference_table_max_mib: Option<u64>,
    /// KiB of a request or response body an inference-table row keeps; longer ones are cut
    /// and marked truncated [default: 64].
    #[arg(long, env = "SANDSERVE_INFERENCE_TABLE_PAYLOAD_KIB")]
    pub inference_table_payload_kib: Option<u64>,
    /// Where blobs are kept: `local` (the data folder) or `s3://bucket/prefix` (S3-compatible
    /// storage, credentials from the AWS_* variables, cached in the data folder)
    /// [default: local].
    #[arg(long, env = "SANDSERVE_BLOBS")]
    pub blobs: Option<String>,
    /// URL of a non-AWS S3 server for --blobs s3://... (plain http only for a loopback
    /// host, or with --blobs-allow-http).
    #[arg(long, env = "SANDSERVE_BLOBS_ENDPOINT")]
    pub blobs_endpoint: Option<String>,
    /// Allow plain http to a --blobs-endpoint on another machine.
    #[arg(long, env = "SANDSERVE_BLOBS_ALLOW_HTTP")]
    #[serde(default)]
    pub blobs_allow_http: bool,
    /// MiB the node-local blob cache may hold with --blobs s3://... (least recently used
    /// blobs not in use are evicted past it) [default: 10240].
    #[arg(long, env = "SANDSERVE_BLOB_CACHE_MIB")]
    pub blob_cache_mib: Option<u64>,
    /// On SIGTERM or SIGINT, seconds the requests in flight have to finish (no new
    /// connection is accepted and /readyz answers 503 meanwhile); past it they are cut
    /// [default: 30].
    #[arg(long, env = "SANDSERVE_DRAIN_TIMEOUT_SECS")]
    pub drain_timeout_secs: Option<u64>,
    /// Cluster mode: how many nodes own (load and serve) each endpoint version; the others
    /// forward its queries to them. 1 to 16 [default: 2].
    #[arg(long, env = "SANDSERVE_OWNERS")]
    pub owners: Option<usize>,
    /// Where the metadata lives: a PostgreSQL URL (`postgres://user@host:port/db`) for
    /// cluster mode, several nodes sharing it [default: the sled database in the data dir].
    #[arg(long, env = "SANDSERVE_METADATA")]
    pub metadata: Option<String>,
    /// This node's id in the cluster [default: the host name and a random suffix].
    #[arg(long, env = "SANDSERVE_NODE_ID")]
    pub node_id: Option<String>,
    /// The URL other nodes reach this one at [default: http(s)://<listen address>].
    #[arg(long, env = "SANDSERVE_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
}

/// How the server writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Settings {
    /// These settings over `lower`: each one given here wins, the others come from `lower`
    /// (switches are on when either turns them on). The pattern names every field, so a
    /// setting added to the struct cannot be forgotten here.
    pub fn over(self, lower: Settings) -> Settings {
        let Settings {
            listen,
            data_dir,
            config,
            admin_token,
            max_upload_mib,
            max_unpacked_mib,
            max_concurrent_uploads,
            max_instances,
            fuel_metering,
            engines_dir,
            inline_max_run_us,
            tls_cert,
            tls_key,
            plain_http,
            max_connections,
            header_read_timeout_secs,
            body_read_timeout_secs,
            keep_alive_timeout_secs,
            tenant_guest_threads,
            memory_budget_mib,
            public_metrics,
            log_format,
            inference_table_retention_hours,
            inference_table_max_mib,
            inference_table_payload_kib,
            blobs,
            blobs_endpoint,
            blobs_allow_http,
            blob_cache_mib,
            drain_timeout_secs,
            owners,
            metadata,
            node_id,
            advertise_url,
        } = self;
        Settings {
            listen: listen.or(lower.listen),
            data_dir: data_dir.or(lower.data_dir),
            config: config.or(lower.config),
            admin_token: admin_token.or(lower.admin_token),
            max_upload_mib: max_upload_mib.or(lower.max_upload_mib),
            max_unpacked_mib: max_unpacked_mib.or(lower.max_unpacked_mib),
            max_concurrent_uploads: max_concurrent_uploads.or(lower.max_concurrent_uploads),
            max_instances: max_instances.or(lower.max_instances),
            fuel_metering: fuel_metering || lower.fuel_metering,
            engines_dir: engines_dir.or(lower.engines_dir),
            inline_max_run_us: inline_max_run_us.or(lower.inline_max_run_us),
            tls_cert: tls_cert.or(lower.tls_cert),
            tls_key: tls_key.or(lower.tls_key),
            plain_http: plain_http || lower.plain_http,
            max_connections: max_connections.or(lower.max_connections),
            header_read_timeout_secs: header_read_timeout_secs.or(lower.header_read_timeout_secs),
            body_read_timeout_secs: body_read_timeout_secs.or(lower.body_read_timeout_secs),
            keep_alive_timeout_secs: keep_alive_timeout_secs.or(lower.keep_alive_timeout_secs),
            tenant_guest_threads: tenant_guest_threads.or(lower.tenant_guest_threads),
            memory_budget_mib: memory_budget_mib.or(lower.memory_budget_mib),
            public_metrics: public_metrics || lower.public_metrics,
            log_format: log_format.or(lower.log_format),
            inference_table_retention_hours: inference_table_retention_hours
                .or(lower.inference_table_retention_hours),
            inference_table_max_mib: inference_table_max_mib.or(lower.inference_table_max_mib),
            inference_table_payload_kib: inference_table_payload_kib
                .or(lower.inference_table_payload_kib),
            blobs: blobs.or(lower.blobs),
            blobs_endpoint: blobs_endpoint.or(lower.blobs_endpoint),
            blobs_allow_http: blobs_allow_http || lower.blobs_allow_http,
            blob_cache_mib: blob_cache_mib.or(lower.blob_cache_mib),
            drain_timeout_secs: drain_timeout_secs.or(lower.drain_timeout_secs),
            owners: owners.or(lower.owners),
            metadata: metadata.or(lower.metadata),
            node_id: node_id.or(lower.node_id),
            advertise_url: advertise_url.or(lower.advertise_url),
        }
    }

    /// Reads a config file.
    pub fn read_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

fn table_settings(
    hours: Option<u64>,
    max_mib: Option<u64>,
    payload_kib: Option<u64>,
) -> crate::governance::tables::TableSettings {
    let defaults = crate::governance::tables::TableSettings::default();
    crate::governance::tables::TableSettings {
        retention: hours.map_or(defaults.retention, |h| {
            Duration::from_secs(h.saturating_mul(3600))
        }),
        max_bytes_per_endpoint: max_mib.map_or(defaults.max_bytes_per_endpoint, |m| {
            m.saturating_mul(1 << 20)
        }),
        max_payload_bytes: payload_kib.map_or(defaults.max_payload_bytes, |k| {
            usize::try_from(k.saturating_mul(1024)).unwrap_or(usize::MAX)
        }),
        ..defaults
    }
}

/// Largest `owners` (each owner holds the version's graphs in memory).
pub const MAX_OWNERS: usize = 16;

/// Largest `max_concurrent_uploads`.
pub const MAX_CONCURRENT_UPLOADS: usize = 1024;

/// The validated server configuration: [`Settings`] with the defaults applied, in the units
/// and shapes the server's parts take.
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
    /// `GET /metrics` without a token.
    pub public_metrics: bool,
    /// The server log's format.
    pub log_format: LogFormat,
    /// How inference tables are kept.
    pub inference_tables: crate::governance::tables::TableSettings,
    /// Where blobs are kept.
    pub blobs: BlobsConfig,
    /// Cluster mode: owners of each endpoint version.
    pub owners: usize,
    /// Metadata store and cluster membership.
    pub cluster: ClusterConfig,
}

impl ServeConfig {
    /// The configuration `sandserve serve` runs with: `flags` (the command line and the
    /// environment variables of the flags not given) and the admin token from the
    /// environment over the config file `flags.config` names, if any; validated.
    pub fn load(mut flags: Settings, env_admin_token: Option<String>) -> Result<Self, ConfigError> {
        flags.admin_token = env_admin_token.filter(|t| !t.is_empty());
        let file = match &flags.config {
            Some(path) => Settings::read_file(path)?,
            None => Settings::default(),
        };
        Self::resolve(flags.over(file))
    }

    /// Applies the defaults to `settings` and validates.
    pub fn resolve(settings: Settings) -> Result<Self, ConfigError> {
        let s = settings;
        let mib = |v: u64| v.saturating_mul(1 << 20);
        let defaults = ConnectionLimits::default();
        let mut guest_threads = GuestThreadSettings::for_this_machine();
        if let Some(per_tenant) = s.tenant_guest_threads {
            guest_threads.per_tenant = per_tenant;
        }
        let secs =
            |value: Option<u64>, default: Duration| value.map_or(default, Duration::from_secs);
        let tls = match (s.tls_cert, s.tls_key) {
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
        let blobs = BlobsConfig::resolve(&BlobSettings {
            blobs: s.blobs.as_deref(),
            endpoint: s.blobs_endpoint.as_deref(),
            allow_http: s.blobs_allow_http,
            cache_mib: s.blob_cache_mib,
        })?;
        let config = Self {
            listen: s
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            data_dir: s
                .data_dir
                .unwrap_or_else(|| PathBuf::from("sandserve-data")),
            admin_token: s.admin_token,
            max_upload_bytes: mib(s.max_upload_mib.unwrap_or(1024)),
            max_unpacked_bytes: mib(s.max_unpacked_mib.unwrap_or(4096)),
            max_instances: s.max_instances.unwrap_or(256),
            fuel_metering: s.fuel_metering,
            engines_dir: s.engines_dir,
            inline_max_run: Duration::from_micros(
                s.inline_max_run_us.unwrap_or(DEFAULT_INLINE_MAX_RUN_US),
            ),
            tls,
            plain_http: s.plain_http,
            connections: ConnectionLimits {
                max_connections: s.max_connections.unwrap_or(defaults.max_connections),
                header_read_timeout: secs(s.header_read_timeout_secs, defaults.header_read_timeout),
                body_read_timeout: secs(s.body_read_timeout_secs, defaults.body_read_timeout),
                keep_alive_timeout: secs(s.keep_alive_timeout_secs, defaults.keep_alive_timeout),
                drain_timeout: secs(s.drain_timeout_secs, defaults.drain_timeout),
            },
            guest_threads,
            memory_budget_bytes: s
                .memory_budget_mib
                .map_or_else(crate::runtime::default_budget_bytes, |m| {
                    usize::try_from(mib(m)).unwrap_or(usize::MAX)
                }),
            max_concurrent_uploads: s
                .max_concurrent_uploads
                .unwrap_or(DEFAULT_MAX_CONCURRENT_UPLOADS),
            public_metrics: s.public_metrics,
            log_format: s.log_format.unwrap_or_default(),
            inference_tables: table_settings(
                s.inference_table_retention_hours,
                s.inference_table_max_mib,
                s.inference_table_payload_kib,
            ),
            blobs,
            owners: s.owners.unwrap_or(crate::cluster::DEFAULT_OWNERS),
            cluster: cluster::resolve(s.metadata, s.node_id, s.advertise_url)?,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_OWNERS).contains(&self.owners) {
            return Err(ConfigError::Invalid {
                field: "owners",
                problem: format!("must be 1 to {MAX_OWNERS}, not {}", self.owners),
            });
        }
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
mod tests;
