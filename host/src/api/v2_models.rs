//! What a V2 `{name}` is: model metadata (`GET /v2/models/{name}[/versions/{v}]`),
//! readiness (`.../ready`) and Triton's model configuration extension (`.../config`).
//! `{name}` is a serving endpoint of the caller's tenant when one has that name, else a
//! model; inputs and outputs come from the image manifest's signature. A handler without
//! a signature cannot describe itself (the handler contract has no call for it, and a
//! handler such as `echo` takes any tensors), so its inputs and outputs are empty lists.

use super::{parse_version, ApiError, AppState, Caller};
use crate::package::{Manifest, TensorSignature};
use crate::tenancy::{Permission, TenantGrant};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// What is served under one V2 name.
pub(super) struct Described {
    /// Whether the name is a serving endpoint (else a model).
    pub endpoint: bool,
    /// Every image version served under the name.
    pub versions: Vec<u64>,
    /// `Err(why)` when it cannot take requests now.
    pub ready: Result<(), String>,
    /// The model versions the request names (all of them when it names no version).
    pub served: Vec<(String, u64)>,
    /// The manifest of the first of them (a model's latest version when none is named).
    pub manifest: Option<Manifest>,
    /// Requests one copy runs at once (an endpoint's entity may set its own).
    pub max_concurrency: Option<usize>,
}

fn manifest_of(state: &AppState, tenant: &str, model: &str, version: u64) -> Option<Manifest> {
    // `owner/model`: a shared version's manifest (its interface) is the server's to show.
    let record = crate::serving::shared::record_for(&state.images, tenant, model, version).ok()?;
    Manifest::parse(&record.manifest).ok()
}

/// Describes `{name}` (at `version`, when given); 404 when it does not exist.
pub(super) fn describe(
    state: &AppState,
    grant: &TenantGrant,
    name: &str,
    version: Option<u64>,
) -> Result<Described, ApiError> {
    let record = state.endpoints.find_record(&grant.tenant, name)?;
    if let Some(record) = record {
        let active = state.endpoints.active(&grant.tenant, name).ok();
        // In cluster mode a ready endpoint is served by its owners (and loaded here on
        // demand), whether or not this node has it loaded.
        let here = active.is_some() || state.endpoints.loads_on_demand();
        let ready = if record.state.ready == crate::registry::Readiness::Ready && here {
            Ok(())
        } else {
            Err(match &record.update_error {
                Some(e) => format!("endpoint `{name}` is not ready: {e}"),
                None => format!("endpoint `{name}` is not ready yet"),
            })
        };
        let config = record.config.as_ref().or(record.pending_config.as_ref());
        // Read as a number, so that a version stored as "01" by an older release matches 1.
        let entities: Vec<(String, u64)> = config
            .iter()
            .flat_map(|c| c.served_entities.iter())
            .filter_map(|e| Some((e.entity_name.clone(), e.version()?)))
            .collect();
        let served: Vec<(String, u64)> = entities
            .iter()
            .filter(|(_, v)| version.is_none_or(|want| *v == want))
            .cloned()
            .collect();
        if let (Some(v), true) = (version, served.is_empty()) {
            return Err(ApiError::not_found(format!(
                "endpoint `{name}` serves no version {v}"
            )));
        }
        let first = served.first();
        let manifest = first.and_then(|(m, v)| manifest_of(state, &grant.tenant, m, *v));
        let max_concurrency = active.as_ref().and_then(|a| {
            let (m, v) = first?;
            let e = a
                .entities
                .iter()
                .find(|e| e.model == *m && e.version == *v)?;
            Some(e.max_concurrency)
        });
        let mut versions: Vec<u64> = entities.iter().map(|(_, v)| *v).collect();
        versions.sort_unstable();
        versions.dedup();
        return Ok(Described {
            endpoint: true,
            versions,
            ready,
            served,
            max_concurrency: max_concurrency
                .or_else(|| manifest.as_ref().map(|m| m.limits.max_concurrency)),
            manifest,
        });
    }
    let images = state.images.versions(&grant.tenant, name)?;
    let chosen = match version {
        Some(v) => images.iter().find(|i| i.version == v),
        None => images.last(),
    }
    .ok_or_else(|| match version {
        Some(v) if !images.is_empty() => {
            ApiError::not_found(format!("model `{name}` has no version {v}"))
        }
        _ => ApiError::not_found(format!("model `{name}` does not exist")),
    })?;
    let manifest = Manifest::parse(&chosen.manifest).map_err(ApiError::internal)?;
    let served = match version {
        Some(v) => vec![(name.to_string(), v)],
        None => images
            .iter()
            .map(|i| (name.to_string(), i.version))
            .collect(),
    };
    Ok(Described {
        endpoint: false,
        versions: images.iter().map(|i| i.version).collect(),
        ready: Ok(()),
        served,
        max_concurrency: Some(manifest.limits.max_concurrency),
        manifest: Some(manifest),
    })
}

fn tensors(list: &[TensorSignature]) -> Value {
    json!(list
        .iter()
        .map(|t| json!({"name": t.name, "datatype": t.datatype, "shape": t.shape}))
        .collect::<Vec<_>>())
}

/// The platform name both documents give.
const PLATFORM: &str = "sandserve_wasm";

/// `GET /v2/models/{name}` and `/versions/{v}`: V2 model metadata.
pub async fn model_metadata(
    State(state): State<AppState>,
    caller: Caller,
    Path(params): Path<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let (_, name, d) = describe_path(&state, &caller, &params)?;
    let signature = d.manifest.as_ref().and_then(|m| m.signature.as_ref());
    Ok(Json(json!({
        "name": name,
        "versions": d.versions.iter().map(u64::to_string).collect::<Vec<_>>(),
        "platform": PLATFORM,
        "inputs": signature.map_or(json!([]), |s| tensors(&s.inputs)),
        "outputs": signature.map_or(json!([]), |s| tensors(&s.outputs)),
    })))
}

/// `GET /v2/models/{name}/ready` and `/versions/{v}/ready`: 200 with no body when ready,
/// 400 (the protocol's "false" is a 4xx) with why when not; 404 when it does not exist.
pub async fn model_ready(
    State(state): State<AppState>,
    caller: Caller,
    Path(params): Path<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let (_, _, d) = describe_path(&state, &caller, &params)?;
    match d.ready {
        Ok(()) => Ok(StatusCode::OK.into_response()),
        Err(why) => Err(ApiError::bad_request(why).with_reason("not_ready")),
    }
}

/// Triton's name for a V2 datatype in a model configuration.
fn config_type(datatype: &str) -> String {
    match datatype {
        "BYTES" => "TYPE_STRING".to_string(),
        other => format!("TYPE_{other}"),
    }
}

fn config_tensors(list: &[TensorSignature], input: bool) -> Value {
    json!(list
        .iter()
        .map(|t| {
            let mut entry = json!({
                "name": t.name,
                "data_type": config_type(&t.datatype),
                "dims": t.shape,
                "is_shape_tensor": false,
            });
            if input {
                entry["format"] = json!("FORMAT_NONE");
                entry["optional"] = json!(false);
            }
            entry
        })
        .collect::<Vec<_>>())
}

/// `GET /v2/models/{name}[/versions/{v}]/config`: the configuration as Triton shapes it
/// (its `ModelConfig`), with what sandserve has: the signature as `input` / `output`,
/// no batching of its own (`max_batch_size` 0: the batch is the signature's first
/// dimension), one CPU instance group of the entity's concurrency, and the manifest's
/// limits as `parameters`.
pub async fn model_config(
    State(state): State<AppState>,
    caller: Caller,
    Path(params): Path<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let (_, name, d) = describe_path(&state, &caller, &params)?;
    let manifest = d
        .manifest
        .as_ref()
        .ok_or_else(|| ApiError::not_found(format!("`{name}` serves no model version")))?;
    let signature = manifest.signature.as_ref();
    let version_policy = if d.endpoint {
        json!({"specific": {"versions": d.versions}})
    } else {
        json!({"all": {}})
    };
    let string = |v: String| json!({ "string_value": v });
    let limits = &manifest.limits;
    Ok(Json(json!({
        "name": name,
        "platform": PLATFORM,
        "backend": "sandserve",
        "version_policy": version_policy,
        "max_batch_size": 0,
        "input": signature.map_or(json!([]), |s| config_tensors(&s.inputs, true)),
        "output": signature.map_or(json!([]), |s| config_tensors(&s.outputs, false)),
        "instance_group": [{
            "name": name,
            "kind": "KIND_CPU",
            "count": d.max_concurrency.unwrap_or(limits.max_concurrency),
            "gpus": [],
        }],
        "default_model_filename": manifest.handler,
        "parameters": {
            "timeout_ms": string(limits.timeout_ms.to_string()),
            "memory_mib": string(limits.memory_mib.to_string()),
            "max_output_mib": string(limits.max_output_mib.to_string()),
            "graphs": string(manifest.graphs.iter().map(|g| g.name.as_str()).collect::<Vec<_>>().join(",")),
        },
        "model_warmup": [],
    })))
}

/// The caller's grant, the name and what is served under it, for a V2 model route's
/// `{name}[/versions/{v}]` path: CAN_VIEW on the name, 404 when nothing is served.
pub(super) fn describe_path<'c>(
    state: &AppState,
    caller: &'c Caller,
    params: &[(String, String)],
) -> Result<(&'c TenantGrant, String, Described), ApiError> {
    let (name, version) = name_and_version(params)?;
    let grant = caller.require(Permission::CanView, "model", &name)?;
    let described = describe(state, grant, &name, version)?;
    Ok((grant, name, described))
}

/// `{name}` and the optional `{version}` of a V2 path.
pub(super) fn name_and_version(
    params: &[(String, String)],
) -> Result<(String, Option<u64>), ApiError> {
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let name = get("name").ok_or_else(|| ApiError::bad_request("missing model name"))?;
    let version = get("version").map(|v| parse_version(&v)).transpose()?;
    Ok((name, version))
}
