//! Cluster mode: several nodes sharing one PostgreSQL metadata database. This module owns
//! what a node knows of the others ([`membership`]) and how a node applies the metadata
//! changes the others make ([`follow`]).

pub mod follow;
pub mod membership;
