//! The Databricks serving-endpoint request fields sandserve does not implement, vetted
//! before a body is read into its typed form. Every field of databricks-sdk's
//! `EndpointCoreConfigInput`, `ServedEntityInput`, `ServedModelInput`, `AiGatewayConfig` and
//! the create request is either honoured or refused here with a 400 that names it; a value
//! that asks for nothing (`scale_to_zero_enabled: false`, `workload_type: "CPU"`)
//! is what sandserve does anyway, so it is accepted. Unknown fields are left
//! to the typed parse, which refuses them by name too.

use super::ApiError;
use serde_json::{Map, Value};

/// A Databricks field sandserve does not implement.
struct Unsupported {
    field: &'static str,
    /// Why it cannot be honoured.
    reason: &'static str,
    /// Whether a value asks for nothing sandserve does not do already.
    harmless: fn(&Value) -> bool,
    /// Whether a harmless value is kept (stored and returned) rather than dropped.
    keep: bool,
}

const fn refused(field: &'static str, reason: &'static str) -> Unsupported {
    Unsupported {
        field,
        reason,
        harmless: |v| v.is_null(),
        keep: false,
    }
}

fn is_false(v: &Value) -> bool {
    v.is_null() || *v == Value::Bool(false)
}

const CREATE: &[Unsupported] = &[
    refused("budget_policy_id", "sandserve has no budget policies"),
    refused("email_notifications", "sandserve sends no email"),
    refused(
        "telemetry_config",
        "sandserve has no Unity Catalog telemetry tables",
    ),
    Unsupported {
        field: "route_optimized",
        reason: "route optimization is a Databricks network feature; only `false` is honoured",
        harmless: is_false,
        keep: false,
    },
];

/// `auto_capture_config` is taken out of a config before it is vetted (it sets the
/// endpoint's inference table: `api/endpoints.rs`).
const CONFIG: &[Unsupported] = &[];

const ENTITY: &[Unsupported] = &[
    Unsupported {
        field: "burst_scaling_enabled",
        reason: "sandserve does not burst beyond max_concurrency; only `false` is honoured",
        harmless: is_false,
        keep: false,
    },
    Unsupported {
        field: "environment_vars",
        reason: "handlers get no environment variables; put settings in the model package",
        harmless: |v| v.is_null() || v.as_object().is_some_and(Map::is_empty),
        keep: false,
    },
    refused(
        "external_model",
        "sandserve serves uploaded model images only, not external model providers",
    ),
    refused(
        "instance_profile_arn",
        "sandserve runs no cloud instances and has no instance profiles",
    ),
    refused(
        "max_provisioned_throughput",
        "provisioned throughput is not a sandserve concept; use max_concurrency",
    ),
    refused(
        "min_provisioned_throughput",
        "provisioned throughput is not a sandserve concept; use max_concurrency",
    ),
    refused(
        "provisioned_model_units",
        "provisioned model units are not a sandserve concept; use max_concurrency",
    ),
    Unsupported {
        field: "scale_to_zero_enabled",
        reason: "served entities stay loaded; scale to zero is not implemented, only `false` is honoured",
        harmless: is_false,
        keep: true,
    },
    Unsupported {
        field: "workload_type",
        reason: "where a graph runs is its `target` in the model manifest; only `CPU` is accepted here",
        harmless: |v| v.is_null() || v.as_str() == Some("CPU"),
        keep: true,
    },
];

/// `rate_limits`, `usage_tracking_config` and `inference_table_config` are honoured
/// (`governance/`); `fallback_config` too (the endpoint record).
const GATEWAY: &[Unsupported] = &[refused("guardrails", "AI guardrails are not implemented")];

/// Concurrency of Databricks' workload sizes (the top of each size's range).
const WORKLOAD_SIZES: [(&str, u64); 3] = [("Small", 4), ("Medium", 16), ("Large", 64)];

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn object<'a>(value: &'a mut Value, path: &str) -> Result<&'a mut Map<String, Value>, ApiError> {
    value.as_object_mut().ok_or_else(|| {
        let path = if path.is_empty() { "body" } else { path };
        ApiError::bad_request(format!("field `{path}`: expected a JSON object"))
    })
}

/// Refuses the fields of `table` that ask for something sandserve does not do, and drops
/// the harmless ones it does not keep.
fn vet(obj: &mut Map<String, Value>, path: &str, table: &[Unsupported]) -> Result<(), ApiError> {
    for rule in table {
        let Some(value) = obj.get(rule.field) else {
            continue;
        };
        if !(rule.harmless)(value) {
            return Err(ApiError::bad_request(format!(
                "field `{}`: {}",
                join(path, rule.field),
                rule.reason
            ))
            .with_reason("unsupported_field"));
        }
        if !rule.keep || value.is_null() {
            obj.remove(rule.field);
        }
    }
    Ok(())
}

/// `POST /api/2.0/serving-endpoints`: vets the body, its config and AI gateway.
pub fn vet_create(body: &mut Value) -> Result<(), ApiError> {
    let obj = object(body, "")?;
    vet(obj, "", CREATE)?;
    let name = obj.get("name").and_then(Value::as_str).map(str::to_string);
    if let Some(config) = obj.get_mut("config") {
        vet_config(config, name.as_deref(), "config")?;
    }
    if let Some(gateway) = obj.get_mut("ai_gateway") {
        vet_gateway(gateway, "ai_gateway")?;
    }
    Ok(())
}

/// An endpoint config (`EndpointCoreConfigInput`) at `path`: its `name` must be the
/// endpoint's (and is dropped), each served entity is vetted.
pub fn vet_config(config: &mut Value, endpoint: Option<&str>, path: &str) -> Result<(), ApiError> {
    let obj = object(config, path)?;
    vet(obj, path, CONFIG)?;
    if let Some(name) = obj.remove("name") {
        if !name.is_null() && name.as_str() != endpoint {
            return Err(ApiError::bad_request(format!(
                "field `{}`: the config's name is the endpoint's name, `{}`",
                join(path, "name"),
                endpoint.unwrap_or_default()
            )));
        }
    }
    for list in ["served_entities", "served_models"] {
        if let Some(Value::Array(entities)) = obj.get_mut(list) {
            for (i, entity) in entities.iter_mut().enumerate() {
                vet_entity(entity, &format!("{}[{i}]", join(path, list)))?;
            }
        }
    }
    Ok(())
}

/// A served entity or model: Databricks' concurrency fields become sandserve's.
fn vet_entity(entity: &mut Value, path: &str) -> Result<(), ApiError> {
    let obj = object(entity, path)?;
    vet(obj, path, ENTITY)?;
    let field = |name: &str| join(path, name);
    let count = |obj: &Map<String, Value>, name: &str| -> Result<Option<u64>, ApiError> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                ApiError::bad_request(format!("field `{}`: expected a count", field(name)))
            }),
        }
    };
    // Databricks' maximum concurrency is sandserve's max_concurrency.
    let max_provisioned = count(obj, "max_provisioned_concurrency")?;
    let mut max = count(obj, "max_concurrency")?;
    match (max, max_provisioned) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::bad_request(format!(
                "field `{}`: differs from max_concurrency ({a}); give one of them",
                field("max_provisioned_concurrency")
            )))
        }
        (None, Some(b)) => max = Some(b),
        _ => {}
    }
    obj.remove("max_provisioned_concurrency");
    // A workload size caps concurrency where nothing more precise is given.
    if let Some(size) = obj.get("workload_size").filter(|v| !v.is_null()) {
        let known = size
            .as_str()
            .and_then(|s| WORKLOAD_SIZES.iter().find(|(n, _)| *n == s));
        let Some((_, concurrency)) = known else {
            return Err(ApiError::bad_request(format!(
                "field `{}`: expected Small, Medium or Large",
                field("workload_size")
            )));
        };
        max = max.or(Some(*concurrency));
    }
    if let Some(max) = max {
        obj.insert("max_concurrency".into(), Value::from(max));
    }
    // Every slot up to max_concurrency is provisioned all the time, so any minimum up to it
    // holds.
    if let Some(min) = count(obj, "min_provisioned_concurrency")? {
        if max.is_some_and(|m| min > m) {
            return Err(ApiError::bad_request(format!(
                "field `{}`: above the maximum concurrency",
                field("min_provisioned_concurrency")
            )));
        }
        obj.remove("min_provisioned_concurrency");
    }
    Ok(())
}

/// An AI gateway config: fallback is honoured, the governance fields are refused.
pub fn vet_gateway(gateway: &mut Value, path: &str) -> Result<(), ApiError> {
    vet(object(gateway, path)?, path, GATEWAY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused_field(mut body: Value) -> String {
        let e = vet_create(&mut body).expect_err("refused");
        format!("{e:?}")
    }

    #[test]
    fn each_unsupported_field_is_named() {
        let e = refused_field(json!({"name": "ep", "config": {"served_entities": [
            {"entity_name": "m", "entity_version": "1", "environment_vars": {"A": "b"}}]}}));
        assert!(
            e.contains("config.served_entities[0].environment_vars"),
            "{e}"
        );
        let e = refused_field(
            json!({"name": "ep", "ai_gateway": {"guardrails": {"input": {"pii": {}}}}}),
        );
        assert!(e.contains("ai_gateway.guardrails"), "{e}");
        let e = refused_field(
            json!({"name": "ep", "config": {"name": "other", "served_entities": []}}),
        );
        assert!(e.contains("config.name"), "{e}");
    }

    #[test]
    fn harmless_values_pass_and_sizes_become_concurrency() {
        let mut body = json!({"name": "ep", "route_optimized": false, "config": {"name": "ep",
            "served_models": [{"model_name": "m", "model_version": "1", "workload_size": "Small",
            "scale_to_zero_enabled": false, "min_provisioned_concurrency": 0}]},
            "ai_gateway": {"usage_tracking_config": {"enabled": false}}});
        vet_create(&mut body).expect("accepted");
        assert_eq!(
            body,
            json!({"name": "ep", "config": {"served_models": [{"model_name": "m",
                "model_version": "1", "workload_size": "Small", "scale_to_zero_enabled": false,
                "max_concurrency": 4}]},
                "ai_gateway": {"usage_tracking_config": {"enabled": false}}})
        );
    }
}
