//! The cluster settings of `sandserve serve`: where the metadata lives (`--metadata`: the
//! sled database in the data folder by default, or a PostgreSQL URL for cluster mode), this
//! node's id (`--node-id`) and the URL the other nodes reach it at (`--advertise-url`).

use super::ConfigError;
use std::net::SocketAddr;

/// Where the metadata (tenants, tokens, images, endpoints) lives.
#[derive(Clone, PartialEq, Eq)]
pub enum Metadata {
    /// The sled database in the data folder (one node).
    Sled,
    /// A PostgreSQL database several nodes share (`postgres://...`).
    Postgres(String),
}

impl std::fmt::Debug for Metadata {
    // The URL may carry a password: never in logs or debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sled => f.write_str("Sled"),
            Self::Postgres(_) => f.write_str("Postgres(<url>)"),
        }
    }
}

/// The validated cluster settings.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Where the metadata lives.
    pub metadata: Metadata,
    /// This node's id: given, or the host name and a random suffix.
    pub node_id: String,
    /// The URL other nodes reach this one at; `None`: `http(s)://<bound address>`.
    pub advertise_url: Option<String>,
}

impl ClusterConfig {
    /// The URL this node advertises once it listens on `bound`.
    pub fn advertised(&self, bound: SocketAddr, tls: bool) -> String {
        match &self.advertise_url {
            Some(url) => url.clone(),
            None => format!("{}://{bound}", if tls { "https" } else { "http" }),
        }
    }
}

/// Longest node id.
const MAX_NODE_ID: usize = 128;

fn invalid(field: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        problem: problem.into(),
    }
}

/// Checks and completes the cluster settings.
pub fn resolve(
    metadata: Option<String>,
    node_id: Option<String>,
    advertise_url: Option<String>,
) -> Result<ClusterConfig, ConfigError> {
    let metadata = match metadata.as_deref().map(str::trim) {
        None | Some("") | Some("sled") => Metadata::Sled,
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Metadata::Postgres(url.to_string())
        }
        Some(_) => {
            return Err(invalid(
                "metadata",
                "give a PostgreSQL URL (postgres://user@host:port/database) for cluster mode, \
                 or leave it out for the sled database in the data folder",
            ))
        }
    };
    let node_id = match node_id {
        Some(id) => {
            let valid = (1..=MAX_NODE_ID).contains(&id.len())
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return Err(invalid(
                    "node_id",
                    format!("give 1 to {MAX_NODE_ID} letters, digits, `-`, `_` or `.`"),
                ));
            }
            id
        }
        None => default_node_id(),
    };
    if let Some(url) = &advertise_url {
        let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
        if !scheme_ok || url.len() > 2048 || url.chars().any(char::is_whitespace) {
            return Err(invalid(
                "advertise_url",
                "give the http:// or https:// URL other nodes reach this one at",
            ));
        }
    }
    Ok(ClusterConfig {
        metadata,
        node_id,
        advertise_url: advertise_url.map(|u| u.trim_end_matches('/').to_string()),
    })
}

/// The host name and 8 random hex digits: unique across restarts of one host too.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
                .take(MAX_NODE_ID - 9)
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_string());
    let mut raw = [0u8; 4];
    if getrandom::fill(&mut raw).is_err() {
        raw = std::process::id().to_le_bytes();
    }
    format!("{host}-{}", hex::encode(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_sled_by_default_postgres_by_url_and_nothing_else() {
        let sled = resolve(None, None, None).unwrap();
        assert_eq!(sled.metadata, Metadata::Sled);
        let pg = resolve(Some("postgres://u:secret@db:5432/meta".into()), None, None).unwrap();
        assert_eq!(
            pg.metadata,
            Metadata::Postgres("postgres://u:secret@db:5432/meta".into())
        );
        assert!(!format!("{pg:?}").contains("secret"));
        for bad in ["mysql://db/x", "/var/lib/x", "s3://bucket"] {
            let e = resolve(Some(bad.into()), None, None).unwrap_err();
            assert!(e.to_string().starts_with("metadata: "), "{e}");
            assert!(!e.to_string().contains(bad), "the value is not echoed: {e}");
        }
    }

    #[test]
    fn node_ids_are_checked_and_made_up_when_absent() {
        let made = resolve(None, None, None).unwrap().node_id;
        let other = resolve(None, None, None).unwrap().node_id;
        assert_ne!(made, other, "two nodes of one host get two ids");
        assert!(made.len() <= MAX_NODE_ID);
        assert_eq!(
            resolve(None, Some("a-1.b_2".into()), None).unwrap().node_id,
            "a-1.b_2"
        );
        for bad in ["", "a b", "a/b", &"x".repeat(MAX_NODE_ID + 1)] {
            let e = resolve(None, Some(bad.to_string()), None).unwrap_err();
            assert!(e.to_string().starts_with("node_id: "), "{e}");
        }
    }

    #[test]
    fn the_advertised_url_is_given_or_the_bound_address() {
        let bound: SocketAddr = "10.0.0.5:8080".parse().unwrap();
        let config = resolve(None, None, None).unwrap();
        assert_eq!(config.advertised(bound, false), "http://10.0.0.5:8080");
        assert_eq!(config.advertised(bound, true), "https://10.0.0.5:8080");
        let given = resolve(None, None, Some("https://node-a.svc:8443/".into())).unwrap();
        assert_eq!(given.advertised(bound, false), "https://node-a.svc:8443");
        for bad in ["node-a:8080", "ftp://x", "http://a b"] {
            let e = resolve(None, None, Some(bad.into())).unwrap_err();
            assert!(e.to_string().starts_with("advertise_url: "), "{e}");
        }
    }
}
