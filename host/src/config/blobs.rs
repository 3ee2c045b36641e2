//! The `blobs` settings: where blobs are kept (`local`, the default, or `s3://bucket/prefix`
//! with an optional endpoint for non-AWS servers) and the node-local cache's budget in S3
//! mode. Anything else is refused with a message naming the setting; plain http to an
//! endpoint is allowed only for a loopback host or on explicit request.

use super::ConfigError;
use crate::blobs::{CacheSettings, S3Settings};

/// Default for `blob_cache_mib`: 10 GiB.
pub const DEFAULT_BLOB_CACHE_MIB: u64 = 10 * 1024;

/// Where blobs are kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BlobsConfig {
    /// The data folder (single node).
    #[default]
    Local,
    /// S3-compatible object storage, cached in the data folder.
    S3 {
        /// The bucket and how to reach it.
        s3: S3Settings,
        /// The node-local cache.
        cache: CacheSettings,
    },
}

/// The raw settings, as given.
#[derive(Debug, Clone, Copy, Default)]
pub struct BlobSettings<'a> {
    /// `blobs`.
    pub blobs: Option<&'a str>,
    /// `blobs_endpoint`.
    pub endpoint: Option<&'a str>,
    /// `blobs_allow_http`.
    pub allow_http: bool,
    /// `blob_cache_mib`.
    pub cache_mib: Option<u64>,
}

fn invalid(field: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        problem: problem.into(),
    }
}

impl BlobsConfig {
    /// Validates `settings`.
    pub fn resolve(settings: &BlobSettings<'_>) -> Result<Self, ConfigError> {
        let target = settings.blobs.unwrap_or("local").trim();
        if target == "local" {
            for (given, field) in [
                (settings.endpoint.is_some(), "blobs_endpoint"),
                (settings.allow_http, "blobs_allow_http"),
                (settings.cache_mib.is_some(), "blob_cache_mib"),
            ] {
                if given {
                    return Err(invalid(
                        field,
                        "applies only to S3 blobs (blobs = \"s3://bucket/prefix\")",
                    ));
                }
            }
            return Ok(Self::Local);
        }
        let Some(rest) = target.strip_prefix("s3://") else {
            return Err(invalid(
                "blobs",
                format!("`{target}` is neither `local` nor `s3://bucket/prefix`"),
            ));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket(bucket)?;
        let prefix = prefix.trim_matches('/');
        check_prefix(prefix)?;
        let (endpoint, allow_http) = match settings.endpoint {
            None => (None, false),
            Some(endpoint) => (
                Some(check_endpoint(endpoint, settings.allow_http)?),
                settings.allow_http || endpoint.starts_with("http://"),
            ),
        };
        let cache_mib = settings.cache_mib.unwrap_or(DEFAULT_BLOB_CACHE_MIB);
        if cache_mib == 0 {
            return Err(invalid("blob_cache_mib", "must be at least 1"));
        }
        Ok(Self::S3 {
            s3: S3Settings {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
                endpoint,
                allow_http,
            },
            cache: CacheSettings {
                budget_bytes: cache_mib.saturating_mul(1 << 20),
            },
        })
    }
}

/// S3 bucket naming rules: 3-63 lower-case letters, digits, dots and hyphens, starting and
/// ending with a letter or digit.
fn check_bucket(bucket: &str) -> Result<(), ConfigError> {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && edge_ok(bucket.chars().next())
        && edge_ok(bucket.chars().last())
    {
        Ok(())
    } else {
        Err(invalid(
            "blobs",
            format!(
                "`{bucket}` is not an S3 bucket name (3-63 lower-case letters, digits, dots \
                 and hyphens)"
            ),
        ))
    }
}

/// A key prefix of plain segments: letters, digits, `.`, `_`, `-`, no empty, `.` or `..`
/// segment.
fn check_prefix(prefix: &str) -> Result<(), ConfigError> {
    if prefix.is_empty() {
        return Ok(());
    }
    let ok = prefix.len() <= 512
        && prefix.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "blobs",
            format!(
                "`{prefix}` is not a usable key prefix (segments of letters, digits, `.`, `_` \
                 and `-`, separated by `/`)"
            ),
        ))
    }
}

/// An `http(s)://host[:port]` URL; plain http only to a loopback host unless allowed.
fn check_endpoint(endpoint: &str, allow_http: bool) -> Result<String, ConfigError> {
    let url = url::Url::parse(endpoint)
        .map_err(|e| invalid("blobs_endpoint", format!("`{endpoint}` is not a URL: {e}")))?;
    let host = url
        .host()
        .ok_or_else(|| invalid("blobs_endpoint", format!("`{endpoint}` names no host")))?;
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        return Err(invalid(
            "blobs_endpoint",
            "give only scheme, host and port (credentials come from AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY)",
        ));
    }
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = match host {
                url::Host::Domain(name) => name == "localhost",
                url::Host::Ipv4(ip) => ip.is_loopback(),
                url::Host::Ipv6(ip) => ip.is_loopback(),
            };
            if !loopback && !allow_http {
                return Err(invalid(
                    "blobs_endpoint",
                    format!(
                        "`{endpoint}` is plain http to another machine: use https, or give \
                         --blobs-allow-http if the network is trusted"
                    ),
                ));
            }
        }
        other => {
            return Err(invalid(
                "blobs_endpoint",
                format!("`{other}` is not http or https"),
            ))
        }
    }
    Ok(endpoint.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(
        blobs: &str,
        endpoint: Option<&str>,
        allow_http: bool,
    ) -> Result<BlobsConfig, ConfigError> {
        BlobsConfig::resolve(&BlobSettings {
            blobs: Some(blobs),
            endpoint,
            allow_http,
            cache_mib: None,
        })
    }

    #[test]
    fn parses_s3_targets_and_refuses_the_rest() {
        let BlobsConfig::S3 {
            s3: settings,
            cache,
        } = s3(
            "s3://models/prod/eu/",
            Some("http://127.0.0.1:8333/"),
            false,
        )
        .unwrap()
        else {
            panic!("not S3");
        };
        assert_eq!(settings.bucket, "models");
        assert_eq!(settings.prefix, "prod/eu");
        assert_eq!(settings.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        assert!(settings.allow_http);
        assert_eq!(cache.budget_bytes, DEFAULT_BLOB_CACHE_MIB << 20);
        assert_eq!(
            BlobsConfig::resolve(&BlobSettings::default()).unwrap(),
            BlobsConfig::Local
        );
        for (bad, field) in [
            ("gs://models", "blobs"),
            ("s3://", "blobs"),
            ("s3://Models", "blobs"),
            ("s3://models/../x", "blobs"),
            ("s3://models/a//b", "blobs"),
            ("s3://models/a b", "blobs"),
        ] {
            match s3(bad, None, false) {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        for endpoint in [
            "http://s3.example.com",
            "ftp://127.0.0.1",
            "http://user:pw@127.0.0.1",
            "nonsense",
        ] {
            assert!(
                matches!(
                    s3("s3://models", Some(endpoint), false),
                    Err(ConfigError::Invalid {
                        field: "blobs_endpoint",
                        ..
                    })
                ),
                "{endpoint}"
            );
        }
        assert!(s3("s3://models", Some("http://s3.example.com"), true).is_ok());
        assert!(s3("s3://models", Some("https://s3.example.com"), false).is_ok());
        let local_with_cache = BlobsConfig::resolve(&BlobSettings {
            cache_mib: Some(5),
            ..BlobSettings::default()
        });
        assert!(matches!(
            local_with_cache,
            Err(ConfigError::Invalid {
                field: "blob_cache_mib",
                ..
            })
        ));
    }
}
