//! `sandserve push`: uploads a package as a new model version, streamed from disk with a
//! progress bar (bytes, rate, ETA). Retry-safe: the package's SHA-256 goes along as
//! `X-Content-Sha256` (the server refuses a corrupted upload), and before an upload (the
//! first or a retry) the model's versions are searched for one with that digest, so a
//! retry after a lost answer, or pushing the same package twice, reuses the version instead
//! of publishing a duplicate.

use super::client::{api_error, read_json, segment, Client};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::blocking::Body;
use reqwest::Method;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

/// Most attempts at one upload.
const ATTEMPTS: u32 = 4;

/// What a push did.
pub struct Pushed {
    /// Model name.
    pub name: String,
    /// Its version now holding the package.
    pub version: u64,
    /// The package's digest, `sha256:HEX` (as the server writes it).
    pub digest: String,
    /// False when an existing version already held these bytes.
    pub uploaded: bool,
}

/// Uploads `package` as a version of the model its manifest names.
pub fn push(client: &Client, package: &Path) -> Result<Pushed> {
    let (hex, size, gzip) = inspect(package)?;
    let digest = format!("sha256:{hex}");
    let name = manifest_name(package, gzip)?;
    let versions_path = format!("/api/2.0/models/{}/versions", segment(&name));
    let mut last_error = None;
    for attempt in 1..=ATTEMPTS {
        if let Some(version) = existing_version(client, &versions_path, &hex)? {
            return Ok(Pushed {
                name,
                version,
                digest,
                uploaded: attempt > 1,
            });
        }
        match upload(client, &versions_path, package, size, &hex, gzip) {
            Ok(answer) => {
                let version = answer["version"]
                    .as_u64()
                    .or_else(|| answer["version"].as_str().and_then(|v| v.parse().ok()))
                    .context("the server's answer has no version")?;
                return Ok(Pushed {
                    name,
                    version,
                    digest,
                    uploaded: true,
                });
            }
            Err(Attempt::Final(e)) => return Err(e),
            Err(Attempt::Retry(e, wait)) => {
                if attempt < ATTEMPTS {
                    eprintln!("upload failed ({e:#}); retrying in {}s", wait.as_secs());
                    std::thread::sleep(wait);
                }
                last_error = Some(e);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("upload failed")))
        .context(format!("gave up after {ATTEMPTS} attempts"))
}

/// The package's SHA-256, size, and whether it is gzip (by its magic bytes).
fn inspect(package: &Path) -> Result<(String, u64, bool)> {
    let mut file = File::open(package).with_context(|| {
        format!(
            "cannot open {}; build one with `sandserve build`",
            package.display()
        )
    })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 16];
    let (mut size, mut magic) = (0u64, Vec::new());
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if magic.len() < 2 {
            magic.extend_from_slice(&buf[..n.min(2 - magic.len())]);
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size, magic == [0x1f, 0x8b]))
}

/// The `name` in the package's `sandserve.toml` (its first entry).
fn manifest_name(package: &Path, gzip: bool) -> Result<String> {
    let text = first_manifest(package, gzip).with_context(|| {
        format!(
            "cannot read sandserve.toml from {}: is it a package? (`sandserve build` makes one)",
            package.display()
        )
    })?;
    let manifest = sandserve_host::package::Manifest::parse(&text)
        .with_context(|| format!("the sandserve.toml in {}", package.display()))?;
    Ok(manifest.name)
}

fn first_manifest(package: &Path, gzip: bool) -> Result<String> {
    let file = File::open(package)?;
    let reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(reader);
    let mut first = archive
        .entries()?
        .next()
        .context("the archive is empty")??;
    if first.path()?.as_os_str() != sandserve_host::package::MANIFEST_PATH {
        bail!("its first entry is not sandserve.toml");
    }
    let mut text = String::new();
    first.by_ref().take(1 << 20).read_to_string(&mut text)?;
    Ok(text)
}

/// The version of `versions_path` whose digest is `digest`, if any.
fn existing_version(client: &Client, versions_path: &str, digest: &str) -> Result<Option<u64>> {
    let answer = match client.get(versions_path) {
        Ok(answer) => answer,
        // No such model yet.
        Err(e) if e.to_string().contains("404") => return Ok(None),
        Err(e) => return Err(e),
    };
    let versions = answer["model_versions"]
        .as_array()
        .or_else(|| answer["versions"].as_array());
    Ok(versions.and_then(|versions| {
        versions.iter().find_map(|v| {
            let theirs = v["digest"].as_str()?;
            (theirs.strip_prefix("sha256:").unwrap_or(theirs) == digest).then(|| {
                v["version"]
                    .as_u64()
                    .or_else(|| v["version"].as_str().and_then(|s| s.parse().ok()))
            })?
        })
    }))
}

enum Attempt {
    Final(anyhow::Error),
    Retry(anyhow::Error, Duration),
}

fn upload(
    client: &Client,
    versions_path: &str,
    package: &Path,
    size: u64,
    digest: &str,
    gzip: bool,
) -> Result<Value, Attempt> {
    let file = File::open(package)
        .with_context(|| format!("cannot open {}", package.display()))
        .map_err(Attempt::Final)?;
    let bar = ProgressBar::new(size).with_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message("uploading");
    let started = Instant::now();
    let body = Body::sized(bar.wrap_read(file), size);
    let sent = client
        .request(Method::POST, versions_path)
        .header(
            "Content-Type",
            if gzip {
                "application/gzip"
            } else {
                "application/x-tar"
            },
        )
        .header("X-Content-Sha256", digest)
        .body(body)
        .send();
    bar.finish_and_clear();
    let response = match sent {
        Ok(response) => response,
        Err(e) => {
            return Err(Attempt::Retry(
                client.unreachable(&e),
                Duration::from_secs(2),
            ))
        }
    };
    let status = response.status();
    if status.as_u16() == 429 || status.is_server_error() {
        let wait = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(2u64)
            .min(30);
        let text = response.text().unwrap_or_default();
        return Err(Attempt::Retry(
            api_error(status, &text),
            Duration::from_secs(wait),
        ));
    }
    let answer = read_json(response).map_err(Attempt::Final)?;
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    eprintln!(
        "uploaded {:.1} MiB in {secs:.1}s ({:.1} MiB/s, the server's checks included)",
        size as f64 / 1048576.0,
        size as f64 / 1048576.0 / secs
    );
    Ok(answer)
}

/// Refuses a path that is a folder (a common slip: `push DIR` instead of the package).
pub fn check_is_package(path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!(
            "{} is a folder; build the package first with `sandserve build {}`",
            path.display(),
            path.display()
        );
    }
    Ok(())
}
