//! An endpoint's AI gateway settings, as Databricks' `AiGatewayConfig` spells them:
//! rate limits, usage tracking and the inference table (fallback stays on the endpoint
//! record). Stored as JSON by [`super::store`], read back into the live [`super::Gate`].

use serde::{Deserialize, Serialize};

/// The governance part of an endpoint's AI gateway.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Call limits per minute; every one that applies is checked (the stricter wins).
    #[serde(default)]
    pub rate_limits: Vec<RateLimit>,
    /// Whether the endpoint's usage is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_tracking_config: Option<UsageTracking>,
    /// Whether (and how much of) its traffic goes to its inference table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_table_config: Option<InferenceTable>,
}

impl GatewayConfig {
    /// Whether usage is recorded.
    pub fn tracks_usage(&self) -> bool {
        self.usage_tracking_config
            .as_ref()
            .is_some_and(|u| u.enabled)
    }

    /// The fraction of queries captured in the inference table (0 when off).
    pub fn sampling(&self) -> f64 {
        match &self.inference_table_config {
            Some(t) if t.enabled => t.sampling_fraction.unwrap_or(1.0),
            _ => 0.0,
        }
    }

    /// Whether the config asks for nothing (nothing to keep live).
    pub fn is_empty(&self) -> bool {
        self.rate_limits.is_empty() && !self.tracks_usage() && self.sampling() == 0.0
    }

    /// Checks the values serde cannot: a sampling fraction in (0, 1].
    pub fn validate(&self) -> Result<(), String> {
        if let Some(t) = &self.inference_table_config {
            if let Some(f) = t.sampling_fraction {
                if !(f > 0.0 && f <= 1.0) {
                    return Err(format!(
                        "field `inference_table_config.sampling_fraction`: {f} is not in (0, 1]"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `{"calls": n, "key": "endpoint" | "user", "renewal_period": "minute"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Calls allowed per renewal period (0 refuses every call).
    pub calls: u32,
    /// Whom the limit counts: the whole endpoint (default) or each token.
    #[serde(default)]
    pub key: RateKey,
    /// Always a minute.
    pub renewal_period: RenewalPeriod,
}

/// What a rate limit counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateKey {
    /// All calls to the endpoint together.
    #[default]
    Endpoint,
    /// Each caller (token) apart.
    User,
}

impl RateKey {
    /// The key's name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Endpoint => "endpoint",
            Self::User => "user",
        }
    }
}

/// The period a limit renews over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RenewalPeriod {
    /// One minute.
    Minute,
}

/// `{"enabled": bool}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageTracking {
    /// Whether usage is recorded.
    pub enabled: bool,
}

/// The inference table: Databricks' names (kept and shown; the table lives in the data
/// folder, one per endpoint) plus sandserve's `sampling_fraction`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceTable {
    /// Whether queries are captured.
    #[serde(default)]
    pub enabled: bool,
    /// The fraction of queries captured, in (0, 1] (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_fraction: Option<f64>,
    /// Databricks' Unity Catalog name, kept as a label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_name: Option<String>,
    /// Databricks' schema name, kept as a label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_name: Option<String>,
    /// Databricks' table name prefix, kept as a label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_name_prefix: Option<String>,
}

/// A tenant's quotas, set by the admin; `None` is no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantQuotas {
    /// Serving endpoints the tenant may have.
    #[serde(default)]
    pub max_endpoints: Option<u64>,
    /// Bytes of uploaded model images (archives) the tenant may keep.
    #[serde(default)]
    pub max_image_bytes: Option<u64>,
    /// Queries of the tenant running at once.
    #[serde(default)]
    pub max_concurrent_requests: Option<u32>,
}
