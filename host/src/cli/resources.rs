//! `sandserve models`, `tokens` and `tenants`: list, show, create, delete, as tables or
//! (`--json`) the server's JSON.

use super::client::{segment, Client};
use super::output::{self, cell, time};
use anyhow::Result;
use reqwest::Method;
use serde_json::{json, Value};

fn rows(items: &Value, row: impl Fn(&Value) -> Vec<String>) -> Vec<Vec<String>> {
    items
        .as_array()
        .map(|items| items.iter().map(row).collect())
        .unwrap_or_default()
}

/// Prints `answer` as JSON, or `items` of it as a table (or `empty` when there are none).
fn print(
    answer: &Value,
    json: bool,
    items: &Value,
    header: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
    empty: &str,
) {
    if json {
        output::json(answer);
        return;
    }
    let rows = rows(items, row);
    if rows.is_empty() {
        println!("{empty}");
    } else {
        output::table(header, &rows);
    }
}

/// `models list`.
pub fn models_list(client: &Client, json: bool) -> Result<()> {
    let answer = client.get("/api/2.0/models")?;
    print(
        &answer,
        json,
        &answer["models"],
        &["NAME", "LATEST", "VERSIONS", "DESCRIPTION"],
        |m| {
            vec![
                cell(&m["name"]),
                cell(&m["latest_version"]),
                cell(&m["versions"]),
                cell(&m["description"]),
            ]
        },
        "no models; push one with `sandserve push PACKAGE.tar.gz`",
    );
    Ok(())
}

/// `models get NAME [VERSION]`.
pub fn models_get(client: &Client, name: &str, version: Option<u64>, json: bool) -> Result<()> {
    let base = format!("/api/2.0/models/{}/versions", segment(name));
    match version {
        Some(v) => {
            let answer = client.get(&format!("{base}/{v}"))?;
            if json {
                output::json(&answer);
            } else {
                let files: Vec<String> = answer["files"]
                    .as_array()
                    .map(|fs| fs.iter().map(|f| cell(&f["path"])).collect())
                    .unwrap_or_default();
                output::table(
                    &["NAME", "VERSION", "SIZE", "CREATED", "DIGEST", "FILES"],
                    &[vec![
                        cell(&answer["name"]),
                        cell(&answer["version"]),
                        cell(&answer["size_bytes"]),
                        time(&answer["creation_timestamp"]),
                        cell(&answer["digest"]),
                        files.join(" "),
                    ]],
                );
            }
        }
        None => {
            let answer = client.get(&base)?;
            print(
                &answer,
                json,
                &answer["versions"],
                &["NAME", "VERSION", "SIZE", "CREATED", "DIGEST"],
                |v| {
                    vec![
                        cell(&v["name"]),
                        cell(&v["version"]),
                        cell(&v["size_bytes"]),
                        time(&v["creation_timestamp"]),
                        cell(&v["digest"]),
                    ]
                },
                "no versions",
            );
        }
    }
    Ok(())
}

/// `models delete NAME VERSION`.
pub fn models_delete(client: &Client, name: &str, version: u64, json: bool) -> Result<()> {
    let answer = client.call(
        Method::DELETE,
        &format!("/api/2.0/models/{}/versions/{version}", segment(name)),
        None,
    )?;
    done(
        json,
        &answer,
        &format!("deleted model {name} version {version}"),
    );
    Ok(())
}

fn done(json: bool, answer: &Value, message: &str) {
    if json {
        output::json(answer);
    } else {
        println!("{message}");
    }
}

/// `tenants list`.
pub fn tenants_list(client: &Client, json: bool) -> Result<()> {
    let answer = client.get("/api/2.0/tenants")?;
    print(
        &answer,
        json,
        &answer["tenants"],
        &["NAME", "CREATED"],
        |t| vec![cell(&t["name"]), time(&t["creation_timestamp"])],
        "no tenants; create one with `sandserve tenants create NAME` (admin token)",
    );
    Ok(())
}

/// `tenants get NAME`.
pub fn tenants_get(client: &Client, name: &str, json: bool) -> Result<()> {
    let answer = client.get(&format!("/api/2.0/tenants/{}", segment(name)))?;
    print(
        &answer,
        json,
        &json!([answer.clone()]),
        &["NAME", "CREATED"],
        |t| vec![cell(&t["name"]), time(&t["creation_timestamp"])],
        "",
    );
    Ok(())
}

/// `tenants create NAME`.
pub fn tenants_create(client: &Client, name: &str, json: bool) -> Result<()> {
    let answer = client.call(
        Method::POST,
        "/api/2.0/tenants",
        Some(&json!({"name": name})),
    )?;
    done(
        json,
        &answer,
        &format!(
            "created tenant {name}; give it a token with `sandserve tokens create --tenant {name}`"
        ),
    );
    Ok(())
}

/// `tenants delete NAME`.
pub fn tenants_delete(client: &Client, name: &str, json: bool) -> Result<()> {
    let answer = client.call(
        Method::DELETE,
        &format!("/api/2.0/tenants/{}", segment(name)),
        None,
    )?;
    done(json, &answer, &format!("deleted tenant {name}"));
    Ok(())
}

/// `tokens list [--tenant T]`.
pub fn tokens_list(client: &Client, tenant: Option<&str>, json: bool) -> Result<()> {
    let path = match tenant {
        Some(t) => format!("/api/2.0/tokens?tenant={}", segment(t)),
        None => "/api/2.0/tokens".to_string(),
    };
    let answer = client.get(&path)?;
    print(
        &answer,
        json,
        &answer["token_infos"],
        &[
            "TOKEN_ID",
            "TENANT",
            "PERMISSION",
            "COVERS",
            "CREATED",
            "EXPIRES",
            "COMMENT",
        ],
        |t| {
            let list = |v: &Value| {
                v.as_array()
                    .map(|a| a.iter().map(cell).collect::<Vec<_>>().join(","))
                    .unwrap_or_else(|| cell(v))
            };
            vec![
                cell(&t["token_id"]),
                cell(&t["tenant"]),
                list(&t["permissions"]),
                list(&t["endpoints"]),
                time(&t["creation_time"]),
                time(&t["expiry_time"]),
                cell(&t["comment"]),
            ]
        },
        "no tokens",
    );
    Ok(())
}

/// What `tokens create` sends.
pub struct NewToken<'a> {
    pub tenant: &'a str,
    pub permission: &'a str,
    pub endpoints: &'a [String],
    pub lifetime_seconds: Option<u64>,
    pub comment: Option<&'a str>,
}

/// `tokens create`: prints the secret once (it is shown only here).
pub fn tokens_create(client: &Client, new: &NewToken<'_>, json: bool) -> Result<()> {
    let mut body = json!({"tenant": new.tenant, "permissions": [new.permission]});
    if !new.endpoints.is_empty() {
        body["endpoints"] = json!(new.endpoints);
    }
    if let Some(l) = new.lifetime_seconds {
        body["lifetime_seconds"] = json!(l);
    }
    if let Some(c) = new.comment {
        body["comment"] = json!(c);
    }
    let answer = client.call(Method::POST, "/api/2.0/tokens", Some(&body))?;
    if json {
        output::json(&answer);
    } else {
        println!("{}", cell(&answer["token"]));
        eprintln!(
            "token {} for tenant {} ({}); the secret above is shown only once. Use it with `sandserve login --url {} --token TOKEN`",
            cell(&answer["token_id"]),
            new.tenant,
            new.permission,
            client.url()
        );
    }
    Ok(())
}

/// `tokens revoke ID`.
pub fn tokens_revoke(client: &Client, id: &str, json: bool) -> Result<()> {
    let answer = client.call(
        Method::DELETE,
        &format!("/api/2.0/tokens/{}", segment(id)),
        None,
    )?;
    done(json, &answer, &format!("revoked token {id}"));
    Ok(())
}
