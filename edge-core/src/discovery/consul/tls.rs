//! The TLS client settings for HTTPS to Consul: the CA certificates of `--consul-ca-cert` (or
//! `CONSUL_CACERT`), else the system's roots from the usual bundle files, as Consul's own CLI
//! and Go's crypto/x509 find them. Reading a PEM bundle is a few lines with rustls' own PEM
//! reader, so no extra crate is pulled in for it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Where Linux distributions keep the system's CA bundle (Debian, then Red Hat, then others).
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Why the TLS settings could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The CA file could not be read or holds no certificate.
    #[error("cannot use {path} as Consul's CA certificates: {reason}; give a PEM file with --consul-ca-cert")]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No CA file was given and no system bundle was found.
    #[error("no CA certificates for HTTPS to Consul: none of {0} exists; give --consul-ca-cert PATH")]
    NoRoots(String),
}

/// TLS client settings trusting `ca` (a PEM file), or the system's roots.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    let path = match ca {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os("SSL_CERT_FILE")
            .map(PathBuf::from)
            .into_iter()
            .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
            .find(|p| p.is_file())
            .ok_or_else(|| TlsSetupError::NoRoots(SYSTEM_BUNDLES.join(", ")))?,
    };
    let fail = |reason: String| TlsSetupError::Ca { path: path.clone(), reason };
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(e.to_string()))?;
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(fail("no usable certificate in it".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
