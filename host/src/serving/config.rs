//! Checking an endpoint config before it is accepted: names, versions, limits, and a traffic
//! split whose integer percentages name existing entities and sum to 100.

use super::ServingError;
use crate::registry::{EndpointConfig, Route, TrafficConfig};
use crate::tenancy::validate_name;
use std::collections::HashSet;

fn invalid(message: impl Into<String>) -> ServingError {
    ServingError::InvalidConfig(message.into())
}

/// Fills defaults (entity names, a single entity's 100% route) and checks the rest.
pub fn normalise(mut config: EndpointConfig) -> Result<EndpointConfig, ServingError> {
    if config.served_entities.is_empty() {
        return Err(invalid(
            "config.served_entities: give at least one served entity",
        ));
    }
    if config.served_entities.len() > 15 {
        return Err(invalid(
            "config.served_entities: at most 15 served entities",
        ));
    }
    let mut names = HashSet::new();
    for (i, entity) in config.served_entities.iter_mut().enumerate() {
        let field = format!("config.served_entities[{i}]");
        // `owner/model`: a model version another tenant shares (see `shared`).
        let model = match entity.entity_name.split_once('/') {
            Some((owner, model)) => {
                validate_name("entity_name", owner)
                    .and_then(|()| validate_name("entity_name", model))
                    .map_err(|e| invalid(format!("{field}.{e} (`owner/model` or `model`)")))?;
                model.to_string()
            }
            None => {
                validate_name("entity_name", &entity.entity_name)
                    .map_err(|e| invalid(format!("{field}.{e}")))?;
                entity.entity_name.clone()
            }
        };
        let Some(version) = entity.version() else {
            return Err(invalid(format!(
                "{field}.entity_version: `{}` is not a version number",
                entity.entity_version
            )));
        };
        if entity.name.is_empty() {
            // From the version as sent where that makes a valid name, so routes that name
            // `digits-01` still find it.
            // `owner/model` is named after the model alone.
            let as_sent = format!("{model}-{}", entity.entity_version.trim());
            entity.name = if validate_name("name", &as_sent).is_ok() {
                as_sent
            } else {
                format!("{model}-{version}")
            };
        }
        // Stored in one spelling ("01", "+1" and " 1" are version 1), so that every
        // comparison with it, such as the check before deleting a version, sees it.
        entity.entity_version = version.to_string();
        validate_name("name", &entity.name).map_err(|e| invalid(format!("{field}.{e}")))?;
        if !names.insert(entity.name.clone()) {
            return Err(invalid(format!(
                "{field}.name: `{}` is used twice",
                entity.name
            )));
        }
        if entity
            .max_concurrency
            .is_some_and(|c| !(1..=1024).contains(&c))
        {
            return Err(invalid(format!(
                "{field}.max_concurrency: must be 1..=1024"
            )));
        }
        if entity.max_queue.is_some_and(|q| q > 100_000) {
            return Err(invalid(format!(
                "{field}.max_queue: must be at most 100000"
            )));
        }
        if entity
            .timeout_ms
            .is_some_and(|t| !(1..=300_000).contains(&t))
        {
            return Err(invalid(format!("{field}.timeout_ms: must be 1..=300000")));
        }
        if entity.memory_mib.is_some_and(|m| !(1..=4096).contains(&m)) {
            return Err(invalid(format!("{field}.memory_mib: must be 1..=4096")));
        }
    }
    let traffic = match config.traffic_config.take() {
        Some(traffic) => traffic,
        None if config.served_entities.len() == 1 => TrafficConfig {
            routes: vec![Route {
                served_entity_name: config.served_entities[0].name.clone(),
                traffic_percentage: 100,
            }],
        },
        None => {
            return Err(invalid(
                "config.traffic_config: required when there are several served entities",
            ))
        }
    };
    let mut routed = HashSet::new();
    let mut total = 0u32;
    for (i, route) in traffic.routes.iter().enumerate() {
        if !names.contains(&route.served_entity_name) {
            return Err(invalid(format!(
                "config.traffic_config.routes[{i}].served_entity_name: no served entity `{}`",
                route.served_entity_name
            )));
        }
        if !routed.insert(route.served_entity_name.clone()) {
            return Err(invalid(format!(
                "config.traffic_config.routes[{i}]: `{}` is routed twice",
                route.served_entity_name
            )));
        }
        if route.traffic_percentage > 100 {
            return Err(invalid(format!(
                "config.traffic_config.routes[{i}].traffic_percentage: must be 0..=100"
            )));
        }
        total += route.traffic_percentage;
    }
    if total != 100 {
        return Err(invalid(format!(
            "config.traffic_config.routes: percentages sum to {total}, not 100"
        )));
    }
    config.traffic_config = Some(traffic);
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ServedEntity;

    fn entity(model: &str, version: &str) -> ServedEntity {
        ServedEntity::with_manifest_limits(String::new(), model, version)
    }

    #[test]
    fn defaults_and_checks() {
        let one = normalise(EndpointConfig {
            served_entities: vec![entity("digits", "1")],
            traffic_config: None,
            config_version: 0,
        })
        .unwrap();
        assert_eq!(one.served_entities[0].name, "digits-1");
        assert_eq!(
            one.traffic_config.unwrap().routes[0].traffic_percentage,
            100
        );

        let split = |a, b| EndpointConfig {
            served_entities: vec![entity("digits", "1"), entity("digits", "2")],
            traffic_config: Some(TrafficConfig {
                routes: vec![
                    Route {
                        served_entity_name: "digits-1".into(),
                        traffic_percentage: a,
                    },
                    Route {
                        served_entity_name: "digits-2".into(),
                        traffic_percentage: b,
                    },
                ],
            }),
            config_version: 0,
        };
        assert!(normalise(split(80, 20)).is_ok());
        let err = normalise(split(80, 30)).unwrap_err().to_string();
        assert!(err.contains("sum to 110"), "{err}");
        let bad_version = EndpointConfig {
            served_entities: vec![entity("digits", "x")],
            traffic_config: None,
            config_version: 0,
        };
        assert!(normalise(bad_version)
            .unwrap_err()
            .to_string()
            .contains("entity_version"));
    }

    #[test]
    fn another_tenants_model_is_named_owner_slash_model() {
        let config = normalise(EndpointConfig {
            served_entities: vec![entity("acme/mlp", "1")],
            traffic_config: None,
            config_version: 0,
        })
        .unwrap();
        assert_eq!(config.served_entities[0].entity_name, "acme/mlp");
        assert_eq!(config.served_entities[0].name, "mlp-1");
        for bad in ["acme/", "/mlp", "acme/mlp/x", "Acme/mlp", "a b/mlp"] {
            let err = normalise(EndpointConfig {
                served_entities: vec![entity(bad, "1")],
                traffic_config: None,
                config_version: 0,
            })
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("served_entities[0].entity_name"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn versions_are_stored_in_one_spelling() {
        for (spelling, name) in [
            ("01", "digits-01"),
            ("+1", "digits-1"),
            (" 1 ", "digits-1"),
            ("1", "digits-1"),
        ] {
            let config = normalise(EndpointConfig {
                served_entities: vec![entity("digits", spelling)],
                traffic_config: None,
                config_version: 0,
            })
            .unwrap();
            assert_eq!(
                config.served_entities[0].entity_version, "1",
                "{spelling:?}"
            );
            assert_eq!(config.served_entities[0].name, name, "{spelling:?}");
        }
    }
}
