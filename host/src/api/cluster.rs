//! `/api/2.0/cluster/nodes`: the admin lists the cluster's live nodes (each with a current
//! lease; with sled metadata, this node alone).

use super::{ApiError, AppState, Caller};
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

/// Lists the live nodes.
pub async fn nodes(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let nodes = state.membership.live_nodes();
    Ok(Json(json!({
        "self": state.membership.self_id(),
        "nodes": nodes,
    })))
}
