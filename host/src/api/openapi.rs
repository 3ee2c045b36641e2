//! `GET /api/2.0/serving-endpoints/{name}/openapi`: an OpenAPI 3.1 document of one
//! endpoint's query API, built from the signatures (`[signature]` in each served model's
//! manifest) of the entities it serves: the endpoint's `invocations` path and each served
//! entity's own, with the four Databricks request formats and the `predictions` answer.
//! A handler without a signature gets open object schemas, described as such.
//!
//! Written as plain JSON: the document is small and wholly dynamic, so a typed builder
//! (utoipa's) would add a dependency without removing any of this code.

use super::{ApiError, AppState, Caller};
use crate::package::{Manifest, Signature, TensorSignature};
use crate::registry::EndpointConfig;
use crate::tenancy::Permission;
use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Map, Value};

/// The JSON schema of one element of a V2 datatype.
fn element(datatype: &str) -> Value {
    match datatype {
        "BOOL" => json!({"type": "boolean"}),
        "BYTES" => json!({"type": "string"}),
        d if d.starts_with("FP") || d.starts_with("BF") => json!({"type": "number"}),
        _ => json!({"type": "integer", "format": datatype.to_ascii_lowercase()}),
    }
}

/// Nested arrays for `dims` (a free dimension has no size bounds) around `datatype`.
fn nested(datatype: &str, dims: &[i64]) -> Value {
    dims.iter().rev().fold(element(datatype), |items, &d| {
        let mut array = json!({"type": "array", "items": items});
        if d >= 0 {
            array["minItems"] = json!(d);
            array["maxItems"] = json!(d);
        }
        array
    })
}

/// One tensor for a single row (its first, batch, dimension dropped).
fn row(t: &TensorSignature) -> Value {
    nested(&t.datatype, t.shape.get(1..).unwrap_or_default())
}

/// A row of every tensor: the row itself for one tensor, else an object of them.
fn rows_of(tensors: &[TensorSignature]) -> Value {
    match tensors {
        [one] => row(one),
        many => object_of(many, row),
    }
}

fn object_of(tensors: &[TensorSignature], schema: fn(&TensorSignature) -> Value) -> Value {
    let properties: Map<String, Value> = tensors
        .iter()
        .map(|t| (t.name.clone(), schema(t)))
        .collect();
    let required: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    json!({"type": "object", "properties": properties, "required": required})
}

/// The four Databricks request formats for `signature`.
fn request_schema(signature: Option<&Signature>) -> Value {
    let Some(sig) = signature else {
        return json!({"type": "object", "description": "the handler declares no signature: \
            any of dataframe_split, dataframe_records, instances or inputs"});
    };
    let whole = |t: &TensorSignature| nested(&t.datatype, &t.shape);
    json!({"oneOf": [
        {"type": "object", "required": ["dataframe_split"], "properties": {"dataframe_split": {
            "type": "object", "required": ["data"], "properties": {
                "columns": {"type": "array", "items": {"type": "string"}},
                "index": {"type": "array"},
                "data": {"type": "array", "items": {"type": "array"}}}}}},
        {"type": "object", "required": ["dataframe_records"], "properties": {
            "dataframe_records": {"type": "array", "items": {"type": "object"}}}},
        {"type": "object", "required": ["instances"], "properties": {
            "instances": {"type": "array", "items": rows_of(&sig.inputs)}}},
        {"type": "object", "required": ["inputs"], "properties": {
            "inputs": object_of(&sig.inputs, whole)}},
    ]})
}

fn response_schema(signature: Option<&Signature>) -> Value {
    let items = match signature {
        Some(sig) if !sig.outputs.is_empty() => rows_of(&sig.outputs),
        _ => json!({"description": "the handler declares no outputs"}),
    };
    json!({"type": "object", "required": ["predictions"], "properties": {
        "predictions": {"type": "array", "items": items}}})
}

fn operation(summary: String, request: &Value, response: &Value) -> Value {
    json!({"post": {
        "summary": summary,
        "requestBody": {"required": true, "content": {"application/json": {"schema": request}}},
        "responses": {
            "200": {"description": "predictions", "content": {"application/json": {"schema": response}}},
            "default": {"description": "an error", "content": {"application/json": {"schema": {
                "type": "object", "required": ["error_code", "message"], "properties": {
                    "error_code": {"type": "string"}, "message": {"type": "string"}}}}}},
        },
    }})
}

/// The document for endpoint `name` serving `config`, with `signatures` by entity.
pub fn document(name: &str, config: &EndpointConfig, signatures: &[Option<Signature>]) -> Value {
    let mut paths = Map::new();
    let requests: Vec<Value> = signatures
        .iter()
        .map(|s| request_schema(s.as_ref()))
        .collect();
    let responses: Vec<Value> = signatures
        .iter()
        .map(|s| response_schema(s.as_ref()))
        .collect();
    let any = |schemas: &[Value]| match schemas {
        [one] => one.clone(),
        many if many.windows(2).all(|w| w[0] == w[1]) => many[0].clone(),
        many => json!({"oneOf": many}),
    };
    paths.insert(
        format!("/serving-endpoints/{name}/invocations"),
        operation(
            format!("Query endpoint `{name}`"),
            &any(&requests),
            &any(&responses),
        ),
    );
    for (i, entity) in config.served_entities.iter().enumerate() {
        paths.insert(
            format!(
                "/serving-endpoints/{name}/served-models/{}/invocations",
                entity.name
            ),
            operation(
                format!(
                    "Query served entity `{}` ({} version {})",
                    entity.name, entity.entity_name, entity.entity_version
                ),
                &requests[i],
                &responses[i],
            ),
        );
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": name, "version": config.config_version.to_string()},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearerAuth": []}],
    })
}

/// `GET /api/2.0/serving-endpoints/{name}/openapi` (CAN_QUERY: the document is for
/// callers of the query API).
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let grant = caller.require(Permission::CanQuery, "serving endpoint", &name)?;
    let record = state.endpoints.record(&grant.tenant, &name)?;
    let config = record
        .config
        .or(record.pending_config)
        .ok_or_else(|| ApiError::not_found(format!("endpoint `{name}` has no config")))?;
    let mut signatures = Vec::new();
    for entity in &config.served_entities {
        let version = entity.version().unwrap_or(0);
        // `owner/model`: another tenant's shared version (its signature is its interface).
        let image = crate::serving::shared::record_for(
            &state.images,
            &grant.tenant,
            &entity.entity_name,
            version,
        )?;
        let manifest = Manifest::parse(&image.manifest).map_err(ApiError::internal)?;
        signatures.push(manifest.signature);
    }
    Ok(Json(document(&name, &config, &signatures)))
}
