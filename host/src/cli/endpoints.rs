//! `sandserve endpoints ...` and the endpoint half of `deploy`: serving endpoints listed,
//! shown, created, updated (a new traffic split), deleted, and waited on until READY.

use super::client::{segment, Client};
use super::output;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// One `--serve MODEL:VERSION[=PERCENT]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub model: String,
    pub version: u64,
    pub percent: Option<u32>,
}

/// Parses `MODEL:VERSION[=PERCENT]`.
pub fn parse_served(text: &str) -> Result<Served, String> {
    let (entity, percent) = match text.split_once('=') {
        Some((entity, p)) => (
            entity,
            Some(
                p.parse::<u32>()
                    .map_err(|_| format!("`{p}` is not a percentage (0-100)"))?,
            ),
        ),
        None => (text, None),
    };
    let (model, version) = entity
        .rsplit_once(':')
        .ok_or_else(|| format!("`{text}`: expected MODEL:VERSION[=PERCENT], e.g. digits:2=20"))?;
    let version = version
        .parse()
        .map_err(|_| format!("`{version}` is not a version number"))?;
    Ok(Served {
        model: model.to_string(),
        version,
        percent,
    })
}

/// Per-entity settings from the command line.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EntityLimits {
    /// Requests at once per served model (default: the manifest's).
    #[arg(long)]
    pub max_concurrency: Option<u32>,
    /// Per-request time limit in ms (default: the manifest's).
    #[arg(long)]
    pub timeout_ms: Option<u64>,
}

/// The endpoint config for `served` (one entity gets 100% by default).
pub fn config(served: &[Served], limits: &EntityLimits) -> Result<Value> {
    if served.is_empty() {
        bail!("name at least one model version to serve: --serve MODEL:VERSION");
    }
    let mut entities = Vec::new();
    let mut routes = Vec::new();
    for s in served {
        let name = format!("{}-{}", s.model, s.version);
        let mut entity =
            json!({"name": name, "entity_name": s.model, "entity_version": s.version.to_string()});
        if let Some(c) = limits.max_concurrency {
            entity["max_concurrency"] = json!(c);
        }
        if let Some(t) = limits.timeout_ms {
            entity["timeout_ms"] = json!(t);
        }
        entities.push(entity);
        let percent = match (s.percent, served.len()) {
            (Some(p), _) => p,
            (None, 1) => 100,
            (None, _) => bail!(
                "with several models, give each its share: --serve {}:{}=PERCENT",
                s.model,
                s.version
            ),
        };
        routes.push(json!({"served_entity_name": name, "traffic_percentage": percent}));
    }
    Ok(json!({"served_entities": entities, "traffic_config": {"routes": routes}}))
}

fn path(name: &str) -> String {
    format!("/api/2.0/serving-endpoints/{}", segment(name))
}

/// Creates endpoint `name` serving `config`.
pub fn create(client: &Client, name: &str, config: Value) -> Result<Value> {
    client.call(
        Method::POST,
        "/api/2.0/serving-endpoints",
        Some(&json!({"name": name, "config": config})),
    )
}

/// Replaces endpoint `name`'s config.
pub fn update(client: &Client, name: &str, config: &Value) -> Result<Value> {
    client.call(Method::PUT, &format!("{}/config", path(name)), Some(config))
}

/// Endpoint `name`, or `None` when there is none.
pub fn find(client: &Client, name: &str) -> Result<Option<Value>> {
    match client.get(&path(name)) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.to_string().contains("404") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Polls endpoint `name` until it is READY with no update in progress (a spinner on a
/// terminal); a failed update is an error carrying the server's reason.
pub fn wait_ready(client: &Client, name: &str, timeout: Duration) -> Result<Value> {
    let spinner = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(100));
    let started = Instant::now();
    let result = loop {
        let endpoint = client.get(&path(name))?;
        let state = &endpoint["state"];
        let ready = state["ready"].as_str().unwrap_or("");
        let update = state["config_update"].as_str().unwrap_or("");
        spinner.set_message(format!("endpoint {name}: {ready}, {update}"));
        if update == "UPDATE_FAILED" {
            break Err(anyhow::anyhow!(
                "the update of endpoint {name} failed: {}\nhint: the previous config (if any) still serves; fix the model and deploy again",
                output::cell(&state["update_error"])
            ));
        }
        if ready == "READY" && update == "NOT_UPDATING" {
            break Ok(endpoint);
        }
        if started.elapsed() > timeout {
            break Err(anyhow::anyhow!(
                "endpoint {name} is not READY after {}s (state {ready}, {update}); check it with `sandserve endpoints get {name}`",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    spinner.finish_and_clear();
    result
}

/// The table row of an endpoint: name, state, what it serves.
fn row(endpoint: &Value) -> Vec<String> {
    let config = if endpoint["config"].is_object() {
        &endpoint["config"]
    } else {
        &endpoint["pending_config"]
    };
    let routes: Vec<String> = config["traffic_config"]["routes"]
        .as_array()
        .map(|routes| {
            routes
                .iter()
                .map(|r| {
                    let entity = r["served_entity_name"].as_str().unwrap_or("?");
                    let target = config["served_entities"]
                        .as_array()
                        .and_then(|es| es.iter().find(|e| e["name"] == entity))
                        .map(|e| {
                            format!(
                                "{}:{}",
                                output::cell(&e["entity_name"]),
                                output::cell(&e["entity_version"])
                            )
                        })
                        .unwrap_or_else(|| entity.to_string());
                    format!("{target}={}%", output::cell(&r["traffic_percentage"]))
                })
                .collect()
        })
        .unwrap_or_default();
    vec![
        output::cell(&endpoint["name"]),
        output::cell(&endpoint["state"]["ready"]),
        output::cell(&endpoint["state"]["config_update"]),
        routes.join(" "),
        output::time(&endpoint["creation_timestamp"]),
    ]
}

const HEADER: [&str; 5] = ["NAME", "READY", "UPDATE", "SERVES", "CREATED"];

/// `endpoints list`.
pub fn list(client: &Client, json: bool) -> Result<()> {
    let answer = client.get("/api/2.0/serving-endpoints")?;
    if json {
        output::json(&answer);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = answer["endpoints"]
        .as_array()
        .map(|es| es.iter().map(row).collect())
        .unwrap_or_default();
    if rows.is_empty() {
        println!("no endpoints; create one with `sandserve endpoints create NAME --serve MODEL:VERSION` or `sandserve deploy`");
    } else {
        output::table(&HEADER, &rows);
    }
    Ok(())
}

/// `endpoints get NAME`.
pub fn get(client: &Client, name: &str, json: bool) -> Result<()> {
    let endpoint = client.get(&path(name))?;
    show(&endpoint, json);
    Ok(())
}

/// Prints one endpoint.
pub fn show(endpoint: &Value, json: bool) {
    if json {
        output::json(endpoint);
    } else {
        output::table(&HEADER, &[row(endpoint)]);
        if let Some(message) = endpoint["state"]["update_error"].as_str() {
            println!("last update failed: {message}");
        }
    }
}

/// `endpoints delete NAME`.
pub fn delete(client: &Client, name: &str, json: bool) -> Result<()> {
    let answer = client
        .call(Method::DELETE, &path(name), None)
        .context(format!("deleting endpoint {name}"))?;
    if json {
        output::json(&answer);
    } else {
        println!("deleted endpoint {name}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_specs_parse() {
        assert_eq!(
            parse_served("digits:2=20").unwrap(),
            Served {
                model: "digits".into(),
                version: 2,
                percent: Some(20)
            }
        );
        assert_eq!(parse_served("a:1").unwrap().percent, None);
        assert!(parse_served("digits")
            .unwrap_err()
            .contains("MODEL:VERSION"));
        assert!(parse_served("d:x").unwrap_err().contains("version"));
        assert!(parse_served("d:1=lots").unwrap_err().contains("percentage"));
    }

    #[test]
    fn several_versions_need_their_shares() {
        let two = [parse_served("m:1").unwrap(), parse_served("m:2").unwrap()];
        let err = config(&two, &EntityLimits::default()).unwrap_err();
        assert!(err.to_string().contains("PERCENT"), "{err}");
        let one = config(&[parse_served("m:3").unwrap()], &EntityLimits::default()).unwrap();
        assert_eq!(
            one["traffic_config"]["routes"][0]["traffic_percentage"],
            100
        );
        assert_eq!(one["served_entities"][0]["name"], "m-3");
    }
}
