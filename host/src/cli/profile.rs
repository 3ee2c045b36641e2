//! Where the client commands find the server: `--url` / `--token` / `--cacert`, else the
//! environment (`SANDSERVE_URL`, `SANDSERVE_TOKEN`, `SANDSERVE_CACERT`, which clap reads
//! into the same flags), else the file `sandserve login` wrote (`config.toml` in the user's
//! config folder, mode 0600; `SANDSERVE_CLI_CONFIG` names another file).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;

/// The connection flags every client command takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Remote {
    /// Server URL, e.g. https://models.example.com or http://127.0.0.1:8080.
    #[arg(long, global = true, env = "SANDSERVE_URL")]
    pub url: Option<String>,
    /// API token (tenant or admin).
    #[arg(long, global = true, env = "SANDSERVE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of a CA certificate (or a self-signed certificate) to trust for HTTPS.
    #[arg(long, global = true, env = "SANDSERVE_CACERT")]
    pub cacert: Option<PathBuf>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// What the config file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Saved {
    /// Server URL.
    pub url: Option<String>,
    /// API token.
    pub token: Option<String>,
    /// CA certificate to trust.
    pub cacert: Option<PathBuf>,
}

/// The resolved connection.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub token: String,
    pub cacert: Option<PathBuf>,
}

/// The config file's path.
pub fn config_path() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("SANDSERVE_CLI_CONFIG") {
        return Ok(PathBuf::from(path));
    }
    let dir = dirs::config_dir()
        .context("no config folder for this user (set HOME, or SANDSERVE_CLI_CONFIG=FILE)")?;
    Ok(dir.join("sandserve").join("config.toml"))
}

/// The saved file, or an empty one when there is none.
pub fn load() -> Result<Saved> {
    let path = config_path()?;
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| {
            format!(
                "{} is not a valid sandserve config; run `sandserve login` again",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Saved::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes `saved` to the config file, readable by this user only (0600, folder 0700).
pub fn save(saved: &Saved) -> Result<PathBuf> {
    let path = config_path()?;
    let dir = path.parent().context("config file path has no folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let text = toml::to_string(saved)?;
    let mut temp = tempfile::Builder::new()
        .prefix(".config-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    temp.write_all(text.as_bytes())?;
    temp.as_file().sync_all()?;
    temp.persist(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

impl Remote {
    /// Flags (and their environment variables) over the saved file.
    pub fn target(&self) -> Result<Target> {
        let saved = load()?;
        let url = self.url.clone().or(saved.url);
        let token = self.token.clone().or(saved.token);
        let Some(url) = url else {
            bail!("no server given: run `sandserve login --url URL --token TOKEN`, or set SANDSERVE_URL and SANDSERVE_TOKEN");
        };
        let Some(token) = token else {
            bail!("no token given: run `sandserve login --url {url} --token TOKEN`, or set SANDSERVE_TOKEN");
        };
        Ok(Target {
            url: url.trim_end_matches('/').to_string(),
            token,
            cacert: self.cacert.clone().or(saved.cacert),
        })
    }
}
