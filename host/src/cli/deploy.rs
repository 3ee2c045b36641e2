//! `sandserve build` and `sandserve deploy`: a handler project becomes a package; a
//! package becomes a model version (push), then the whole traffic of an endpoint (created,
//! or updated so that requests in flight finish on the old version), READY before it returns.

use super::client::Client;
use super::endpoints::{self, EntityLimits, Served};
use super::push;
use anyhow::{Context, Result};
use sandserve_host::authoring::toolchain;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Builds the project in `dir` into `output` (default `DIR/NAME.tar.gz`, NAME from its
/// `sandserve.toml`) and returns the package's path.
pub fn build(dir: &Path, output: Option<PathBuf>) -> Result<PathBuf> {
    let manifest = dir.join("sandserve.toml");
    let text = std::fs::read_to_string(&manifest).with_context(|| {
        format!(
            "{} has no sandserve.toml: run `sandserve build` in a project folder (`sandserve new NAME` makes one)",
            dir.display()
        )
    })?;
    let parsed = sandserve_host::package::Manifest::parse(&text)
        .with_context(|| format!("{}", manifest.display()))?;
    if dir.join("Cargo.toml").is_file() {
        toolchain::check(dir)?;
    }
    let output = output.unwrap_or_else(|| dir.join(format!("{}.tar.gz", parsed.name)));
    let summary = sandserve_host::authoring::package_dir(dir, &output)?;
    eprintln!(
        "wrote {} ({} files, {} bytes, sha256 {})",
        output.display(),
        summary.files,
        summary.bytes,
        summary.sha256
    );
    Ok(output)
}

/// What `deploy` was asked.
pub struct Deploy<'a> {
    pub path: &'a Path,
    pub endpoint: Option<&'a str>,
    pub limits: &'a EntityLimits,
    pub wait: Duration,
    pub json: bool,
}

/// `deploy`: build (for a folder), push, create or update the endpoint, wait for READY.
pub fn deploy(client: &Client, d: &Deploy<'_>) -> Result<()> {
    let package = if d.path.is_dir() {
        build(d.path, None)?
    } else {
        d.path.to_path_buf()
    };
    let pushed = push::push(client, &package)?;
    eprintln!(
        "model {} version {}{}",
        pushed.name,
        pushed.version,
        if pushed.uploaded {
            ""
        } else {
            " (already uploaded: same sha256)"
        }
    );
    let name = d.endpoint.unwrap_or(&pushed.name);
    let config = endpoints::config(
        &[Served {
            model: pushed.name.clone(),
            version: pushed.version,
            percent: None,
        }],
        d.limits,
    )?;
    match endpoints::find(client, name)? {
        Some(_) => {
            endpoints::update(client, name, &config)?;
            eprintln!(
                "updating endpoint {name} to {}:{}",
                pushed.name, pushed.version
            );
        }
        None => {
            endpoints::create(client, name, config)?;
            eprintln!(
                "creating endpoint {name} serving {}:{}",
                pushed.name, pushed.version
            );
        }
    }
    let endpoint = endpoints::wait_ready(client, name, d.wait)?;
    endpoints::show(&endpoint, d.json);
    if !d.json {
        println!(
            "query it: sandserve invoke --endpoint {name} --data '{{\"inputs\": ...}}'  (or POST {}/serving-endpoints/{name}/invocations)",
            client.url()
        );
    }
    Ok(())
}
