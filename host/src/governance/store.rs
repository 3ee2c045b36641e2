//! Where governance keeps its records: a sled database of its own (`governance/` in the
//! data folder, apart from the metadata database so its format is untouched), one tree
//! per kind. Gateway settings and quotas are behind [`PolicyStore`]; usage minutes and
//! audit entries are written by their own modules through [`GovernanceDb`].

use super::gateway::{GatewayConfig, TenantQuotas};
use super::GovernanceError;
use std::path::Path;

/// Gateway settings per endpoint and quotas per tenant.
pub trait PolicyStore: Send + Sync {
    /// Every stored gateway config: `(tenant, endpoint, config)`.
    fn gateways(&self) -> Result<Vec<(String, String, GatewayConfig)>, GovernanceError>;
    /// Stores (or, when empty, removes) an endpoint's gateway config.
    fn put_gateway(
        &self,
        tenant: &str,
        endpoint: &str,
        config: &GatewayConfig,
    ) -> Result<(), GovernanceError>;
    /// Every stored quota: `(tenant, quotas)`.
    fn quotas(&self) -> Result<Vec<(String, TenantQuotas)>, GovernanceError>;
    /// Stores a tenant's quotas.
    fn put_quotas(&self, tenant: &str, quotas: &TenantQuotas) -> Result<(), GovernanceError>;
    /// One endpoint's stored gateway config.
    fn gateway(
        &self,
        tenant: &str,
        endpoint: &str,
    ) -> Result<Option<GatewayConfig>, GovernanceError> {
        let all = self.gateways()?;
        Ok(all
            .into_iter()
            .find(|(t, e, _)| t == tenant && e == endpoint)
            .map(|(_, _, c)| c))
    }
    /// One tenant's stored quotas.
    fn tenant_quotas(&self, tenant: &str) -> Result<Option<TenantQuotas>, GovernanceError> {
        let all = self.quotas()?;
        Ok(all.into_iter().find(|(t, _)| t == tenant).map(|(_, q)| q))
    }
}

/// The sled database and its trees.
pub struct GovernanceDb {
    gateways: sled::Tree,
    quotas: sled::Tree,
    /// Usage per minute (see `usage.rs` for the key).
    pub usage: sled::Tree,
    /// Audit entries, keyed by time and sequence.
    pub audit: sled::Tree,
    db: sled::Db,
}

fn db_error(e: impl std::fmt::Display) -> GovernanceError {
    GovernanceError::Store(e.to_string())
}

fn key(tenant: &str, endpoint: &str) -> Vec<u8> {
    [tenant.as_bytes(), b"\0", endpoint.as_bytes()].concat()
}

impl GovernanceDb {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, GovernanceError> {
        let db = sled::Config::new().path(path).open().map_err(db_error)?;
        Ok(Self {
            gateways: db.open_tree("gateways").map_err(db_error)?,
            quotas: db.open_tree("quotas").map_err(db_error)?,
            usage: db.open_tree("usage").map_err(db_error)?,
            audit: db.open_tree("audit").map_err(db_error)?,
            db,
        })
    }

    /// Writes what is buffered to disk.
    pub fn flush(&self) -> Result<(), GovernanceError> {
        self.db.flush().map(|_| ()).map_err(db_error)
    }
}

impl PolicyStore for GovernanceDb {
    fn gateways(&self) -> Result<Vec<(String, String, GatewayConfig)>, GovernanceError> {
        let mut out = Vec::new();
        for item in self.gateways.iter() {
            let (k, v) = item.map_err(db_error)?;
            let k = String::from_utf8_lossy(&k).into_owned();
            let Some((tenant, endpoint)) = k.split_once('\0') else {
                continue;
            };
            let config: GatewayConfig = serde_json::from_slice(&v).map_err(db_error)?;
            out.push((tenant.to_string(), endpoint.to_string(), config));
        }
        Ok(out)
    }

    fn put_gateway(
        &self,
        tenant: &str,
        endpoint: &str,
        config: &GatewayConfig,
    ) -> Result<(), GovernanceError> {
        let k = key(tenant, endpoint);
        if *config == GatewayConfig::default() {
            self.gateways.remove(k).map_err(db_error)?;
        } else {
            let v = serde_json::to_vec(config).map_err(db_error)?;
            self.gateways.insert(k, v).map_err(db_error)?;
        }
        self.gateways.flush().map_err(db_error)?;
        Ok(())
    }

    fn quotas(&self) -> Result<Vec<(String, TenantQuotas)>, GovernanceError> {
        let mut out = Vec::new();
        for item in self.quotas.iter() {
            let (k, v) = item.map_err(db_error)?;
            let quotas: TenantQuotas = serde_json::from_slice(&v).map_err(db_error)?;
            out.push((String::from_utf8_lossy(&k).into_owned(), quotas));
        }
        Ok(out)
    }

    fn put_quotas(&self, tenant: &str, quotas: &TenantQuotas) -> Result<(), GovernanceError> {
        if *quotas == TenantQuotas::default() {
            self.quotas.remove(tenant).map_err(db_error)?;
        } else {
            let v = serde_json::to_vec(quotas).map_err(db_error)?;
            self.quotas.insert(tenant, v).map_err(db_error)?;
        }
        self.quotas.flush().map_err(db_error)?;
        Ok(())
    }
}
