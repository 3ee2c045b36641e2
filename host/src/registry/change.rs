//! What one metadata write changed, as the other nodes of a cluster learn it (the
//! PostgreSQL store's outbox, [`super::postgres`]): enough for a node to drop what it has
//! cached of the record and read it again.

/// One changed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A tenant was created or deleted (with its tokens).
    Tenant {
        /// Its name.
        name: String,
    },
    /// A token was issued or revoked.
    Token {
        /// Its id.
        token_id: String,
    },
    /// A model version was published or deleted.
    Image {
        /// Its tenant.
        tenant: String,
        /// The model's name.
        name: String,
        /// The version.
        version: u64,
    },
    /// A serving endpoint was created, changed or deleted.
    Endpoint {
        /// Its tenant.
        tenant: String,
        /// Its name.
        name: String,
    },
    /// An endpoint's AI gateway settings were set or removed (governance, cluster mode).
    Gateway {
        /// Its tenant.
        tenant: String,
        /// The endpoint's name.
        name: String,
    },
    /// A tenant's quotas were set or removed (governance, cluster mode).
    Quotas {
        /// The tenant.
        tenant: String,
    },
    /// The admin credential was replaced.
    Admin,
    /// The node cannot tell what changed (it fell behind the kept history, or the database
    /// was replaced): drop every cache and read everything again.
    Everything,
}

impl Change {
    /// The outbox's text for the kind of change.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Tenant { .. } => "tenant",
            Self::Token { .. } => "token",
            Self::Image { .. } => "image",
            Self::Endpoint { .. } => "endpoint",
            Self::Gateway { .. } => "gateway",
            Self::Quotas { .. } => "quotas",
            Self::Admin => "admin",
            Self::Everything => "everything",
        }
    }

    /// The change an outbox row describes; a kind this release does not know (a newer
    /// node wrote it) is read as [`Change::Everything`].
    pub fn from_row(kind: &str, tenant: String, name: String, version: Option<u64>) -> Self {
        match (kind, version) {
            ("tenant", _) => Self::Tenant { name },
            ("token", _) => Self::Token { token_id: name },
            ("image", Some(version)) => Self::Image {
                tenant,
                name,
                version,
            },
            ("endpoint", _) => Self::Endpoint { tenant, name },
            ("gateway", _) => Self::Gateway { tenant, name },
            ("quotas", _) => Self::Quotas { tenant },
            ("admin", _) => Self::Admin,
            _ => Self::Everything,
        }
    }

    /// The row's columns: (tenant, name, version).
    pub fn columns(&self) -> (&str, &str, Option<u64>) {
        match self {
            Self::Tenant { name } => ("", name, None),
            Self::Token { token_id } => ("", token_id, None),
            Self::Image {
                tenant,
                name,
                version,
            } => (tenant, name, Some(*version)),
            Self::Endpoint { tenant, name } | Self::Gateway { tenant, name } => {
                (tenant, name, None)
            }
            Self::Quotas { tenant } => (tenant, "", None),
            Self::Admin | Self::Everything => ("", "", None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_unknown_kinds_mean_everything() {
        let changes = [
            Change::Tenant { name: "a".into() },
            Change::Token {
                token_id: "t".into(),
            },
            Change::Image {
                tenant: "a".into(),
                name: "m".into(),
                version: 3,
            },
            Change::Endpoint {
                tenant: "a".into(),
                name: "e".into(),
            },
            Change::Gateway {
                tenant: "a".into(),
                name: "e".into(),
            },
            Change::Quotas { tenant: "a".into() },
            Change::Admin,
        ];
        for change in changes {
            let (tenant, name, version) = change.columns();
            let row = Change::from_row(change.kind(), tenant.into(), name.into(), version);
            assert_eq!(row, change);
        }
        assert_eq!(
            Change::from_row("a-later-kind", "a".into(), String::new(), None),
            Change::Everything
        );
    }
}
