//! TLS with rustls: the server's certificate and key from PEM files, TLS 1.2 and 1.3 only,
//! HTTP/2 or HTTP/1.1 by ALPN, and the certificate reloaded without a restart when its
//! files change (checked every few seconds; a bad new pair is logged and the old one kept).
//! Also `sandserve cert --self-signed`, a development certificate made with rcgen.

use rustls::crypto::ring::default_provider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use thiserror::Error;

/// How often the certificate files are checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// Why TLS could not be set up.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {path}: {problem}")]
    Pem {
        /// Certificate or key.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// rustls refused the pair (a key that does not match, an unsupported key type).
    #[error("the TLS certificate and key do not work together: {0}")]
    Pair(String),
    /// A self-signed certificate could not be made or written.
    #[error("cannot make the self-signed certificate: {0}")]
    SelfSigned(String),
}

/// The certificate and key files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Serves whichever certificate was loaded last.
#[derive(Debug)]
struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// Loads the pair and builds the server's TLS configuration; spawns the task that reloads
/// the pair when its files change (on the current tokio runtime).
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let resolver = Arc::new(ReloadingCert {
        current: RwLock::new(Arc::new(load_pair(files)?)),
    });
    let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Pair(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio::spawn(watch(files.clone(), resolver));
    Ok(Arc::new(config))
}

/// Reloads the pair whenever either file's modification time changes.
async fn watch(files: TlsFiles, resolver: Arc<ReloadingCert>) {
    let stamp = |files: &TlsFiles| (modified(&files.cert), modified(&files.key));
    let mut seen = stamp(&files);
    loop {
        tokio::time::sleep(RELOAD_CHECK).await;
        let now = stamp(&files);
        if now == seen {
            continue;
        }
        seen = now;
        match load_pair(&files) {
            Ok(pair) => {
                *resolver.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(pair);
                tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                tracing::error!("TLS certificate not reloaded, still serving the previous one: {e}")
            }
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load_pair(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let pem = |what: &'static str, path: &Path, problem: String| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        problem,
    };
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| pem("certificate", &files.cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem("certificate", &files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem(
            "certificate",
            &files.cert,
            "holds no CERTIFICATE block".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| pem("private key", &files.key, e.to_string()))?;
    CertifiedKey::from_der(chain, key, &default_provider())
        .map_err(|e| TlsError::Pair(e.to_string()))
}

/// Writes a self-signed certificate for `hosts` (DNS names or IP addresses) and its key as
/// PEM (the key readable by its owner only). For development: clients must be told to
/// trust this certificate (`curl --cacert cert.pem`).
pub fn write_self_signed(hosts: &[String], files: &TlsFiles) -> Result<(), TlsError> {
    let failed = |e: &dyn std::fmt::Display| TlsError::SelfSigned(e.to_string());
    let certified = rcgen::generate_simple_self_signed(hosts.to_vec()).map_err(|e| failed(&e))?;
    std::fs::write(&files.cert, certified.cert.pem())
        .map_err(|e| failed(&format!("{}: {e}", files.cert.display())))?;
    write_private(&files.key, certified.signing_key.serialize_pem().as_bytes())
        .map_err(|e| failed(&format!("{}: {e}", files.key.display())))
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_self_signed_pair_loads_and_a_mismatched_one_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = |name: &str| TlsFiles {
            cert: dir.path().join(format!("{name}.pem")),
            key: dir.path().join(format!("{name}.key")),
        };
        write_self_signed(&["localhost".into()], &files("a")).expect("written");
        write_self_signed(&["localhost".into()], &files("b")).expect("written");
        assert!(server_config(&files("a")).is_ok());
        let mixed = TlsFiles {
            cert: files("a").cert,
            key: files("b").key,
        };
        assert!(matches!(load_pair(&mixed), Err(TlsError::Pair(_))));
        let missing = files("none");
        assert!(matches!(load_pair(&missing), Err(TlsError::Pem { .. })));
    }
}
