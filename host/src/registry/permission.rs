//! Permission levels as stored in token records (Databricks' `CAN_VIEW`, `CAN_QUERY`,
//! `CAN_MANAGE`). What a level allows is `tenancy`'s business; it lives here because the
//! records below `tenancy` store it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What a token may do, Databricks' permission levels. Each level includes the ones below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Read metadata: list and get models, versions and endpoints.
    #[serde(rename = "CAN_VIEW")]
    CanView,
    /// Also query endpoints.
    #[serde(rename = "CAN_QUERY")]
    CanQuery,
    /// Also upload, delete and configure; create narrower tokens.
    #[serde(rename = "CAN_MANAGE")]
    CanManage,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CanView => "CAN_VIEW",
            Self::CanQuery => "CAN_QUERY",
            Self::CanManage => "CAN_MANAGE",
        })
    }
}
