//! The subcommands of `models`, `endpoints`, `tokens` and `tenants`: what each takes and
//! which call it makes.

use super::profile::Remote;
use super::{connect, endpoints, resources};
use anyhow::Result;
use clap::Subcommand;
use std::time::Duration;

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// Every model: latest version, how many versions.
    List,
    /// A model's versions, or one version in detail.
    Get {
        /// Model name.
        name: String,
        /// One version in detail (default: list the versions).
        version: Option<u64>,
    },
    /// Delete one version (refused while an endpoint serves it).
    Delete {
        /// Model name.
        name: String,
        /// The version to delete.
        version: u64,
    },
}

#[derive(Subcommand)]
pub enum EndpointsCommand {
    /// Every endpoint: state and traffic split.
    List,
    /// One endpoint.
    Get {
        /// Endpoint name.
        name: String,
    },
    /// Create an endpoint and wait until it is READY.
    Create {
        /// Endpoint name.
        name: String,
        /// MODEL:VERSION[=PERCENT] to serve (repeatable; one alone gets 100%).
        #[arg(long = "serve", required = true, value_parser = endpoints::parse_served)]
        served: Vec<endpoints::Served>,
        #[command(flatten)]
        limits: endpoints::EntityLimits,
        /// Return at once instead of waiting for READY.
        #[arg(long)]
        no_wait: bool,
    },
    /// Replace what an endpoint serves (a new traffic split) and wait until it is READY.
    Update {
        /// Endpoint name.
        name: String,
        /// MODEL:VERSION[=PERCENT] to serve (repeatable; percentages sum to 100).
        #[arg(long = "serve", required = true, value_parser = endpoints::parse_served)]
        served: Vec<endpoints::Served>,
        #[command(flatten)]
        limits: endpoints::EntityLimits,
        /// Return at once instead of waiting for READY.
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete an endpoint.
    Delete {
        /// Endpoint name.
        name: String,
    },
}

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Tokens (never their secrets).
    List {
        /// Only this tenant's (admin).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Issue a token; prints its secret once.
    Create {
        /// The tenant it acts for.
        #[arg(long)]
        tenant: String,
        /// CAN_VIEW, CAN_QUERY or CAN_MANAGE.
        #[arg(long, default_value = "CAN_MANAGE")]
        permission: String,
        /// Model and endpoint names it covers (repeatable; default all).
        #[arg(long = "endpoint")]
        endpoints: Vec<String>,
        /// Lifetime in seconds (default: never expires).
        #[arg(long)]
        lifetime_seconds: Option<u64>,
        /// A note shown in listings.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Revoke a token by id.
    Revoke {
        /// The token id (`tokens list` shows them).
        token_id: String,
    },
}

#[derive(Subcommand)]
pub enum TenantsCommand {
    /// Every tenant.
    List,
    /// One tenant.
    Get {
        /// Tenant name.
        name: String,
    },
    /// Create a tenant.
    Create {
        /// Tenant name.
        name: String,
    },
    /// Delete a tenant (refused while it has models or endpoints).
    Delete {
        /// Tenant name.
        name: String,
    },
}

/// `endpoints ...`.
pub fn endpoints(command: EndpointsCommand, remote: &Remote) -> Result<()> {
    let (client, json) = (connect(remote)?, remote.json);
    let wait = Duration::from_secs(300);
    match command {
        EndpointsCommand::List => endpoints::list(&client, json),
        EndpointsCommand::Get { name } => endpoints::get(&client, &name, json),
        EndpointsCommand::Create {
            name,
            served,
            limits,
            no_wait,
        } => {
            let answer = endpoints::create(&client, &name, endpoints::config(&served, &limits)?)?;
            let shown = if no_wait {
                answer
            } else {
                endpoints::wait_ready(&client, &name, wait)?
            };
            endpoints::show(&shown, json);
            Ok(())
        }
        EndpointsCommand::Update {
            name,
            served,
            limits,
            no_wait,
        } => {
            let answer = endpoints::update(&client, &name, &endpoints::config(&served, &limits)?)?;
            let shown = if no_wait {
                answer
            } else {
                endpoints::wait_ready(&client, &name, wait)?
            };
            endpoints::show(&shown, json);
            Ok(())
        }
        EndpointsCommand::Delete { name } => endpoints::delete(&client, &name, json),
    }
}

/// `models ...`.
pub fn models(command: ModelsCommand, remote: &Remote) -> Result<()> {
    let (client, json) = (connect(remote)?, remote.json);
    match command {
        ModelsCommand::List => resources::models_list(&client, json),
        ModelsCommand::Get { name, version } => {
            resources::models_get(&client, &name, version, json)
        }
        ModelsCommand::Delete { name, version } => {
            resources::models_delete(&client, &name, version, json)
        }
    }
}

/// `tokens ...`.
pub fn tokens(command: TokensCommand, remote: &Remote) -> Result<()> {
    let (client, json) = (connect(remote)?, remote.json);
    match command {
        TokensCommand::List { tenant } => resources::tokens_list(&client, tenant.as_deref(), json),
        TokensCommand::Create {
            tenant,
            permission,
            endpoints,
            lifetime_seconds,
            comment,
        } => resources::tokens_create(
            &client,
            &resources::NewToken {
                tenant: &tenant,
                permission: &permission,
                endpoints: &endpoints,
                lifetime_seconds,
                comment: comment.as_deref(),
            },
            json,
        ),
        TokensCommand::Revoke { token_id } => resources::tokens_revoke(&client, &token_id, json),
    }
}

/// `tenants ...`.
pub fn tenants(command: TenantsCommand, remote: &Remote) -> Result<()> {
    let (client, json) = (connect(remote)?, remote.json);
    match command {
        TenantsCommand::List => resources::tenants_list(&client, json),
        TenantsCommand::Get { name } => resources::tenants_get(&client, &name, json),
        TenantsCommand::Create { name } => resources::tenants_create(&client, &name, json),
        TenantsCommand::Delete { name } => resources::tenants_delete(&client, &name, json),
    }
}
