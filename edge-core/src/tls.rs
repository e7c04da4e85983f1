//! TLS client settings (rustls with ring), for HTTPS to Consul and for TLS to backends (the
//! proxy's connections and the health probes alike): the CA certificates of a given PEM file, else
//! the system's roots from the usual bundle files, as Consul's own CLI and Go's crypto/x509 find
//! them; and, for backends that ask for mutual TLS, a client certificate. Reading a PEM bundle is a
//! few lines with rustls' own PEM reader, so no extra crate is pulled in for it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where Linux distributions keep the system's CA bundle (Debian, then Red Hat, then others).
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// What a TLS client is for, so that its errors name the peer and the flags that fix them.
#[derive(Debug, Clone, Copy)]
pub struct Purpose {
    /// The peer, as errors name it ("Consul", "backends").
    pub peer: &'static str,
    /// The flag that gives CA certificates.
    pub ca_flag: &'static str,
    /// The flags that give a client certificate and its key.
    pub identity_flags: &'static str,
}

/// HTTPS to Consul.
pub const CONSUL: Purpose = Purpose {
    peer: "Consul",
    ca_flag: "--consul-ca-cert",
    identity_flags: "--consul-client-cert and --consul-client-key",
};

/// TLS to backends.
pub const BACKENDS: Purpose =
    Purpose { peer: "backends", ca_flag: "--backend-ca", identity_flags: "--backend-cert and --backend-key" };

/// Why the TLS settings could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The CA file could not be read or holds no certificate.
    #[error("cannot use {path} as the CA certificates of {peer}: {reason}; give a PEM file with {flag}")]
    Ca {
        /// The peer.
        peer: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
        /// The flag to fix it with.
        flag: &'static str,
    },
    /// No CA file was given and no system bundle was found.
    #[error("no CA certificates for TLS to {peer}: none of {bundles} exists; give {flag} PATH")]
    NoRoots {
        /// The peer.
        peer: &'static str,
        /// The bundles looked for.
        bundles: String,
        /// The flag to fix it with.
        flag: &'static str,
    },
    /// The client certificate or key could not be used.
    #[error(
        "cannot use {cert} and {key} as the client certificate for {peer}: {reason}; give {flags} as PEM files (the chain, leaf first, and its key)"
    )]
    Identity {
        /// The peer.
        peer: &'static str,
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        reason: String,
        /// The flags to fix it with.
        flags: String,
    },
}

/// TLS client settings for `purpose`, trusting `ca` (a PEM file) or the system's roots, with the
/// client certificate `identity` (certificate chain and key, PEM) when given, offering `alpn`.
pub fn client_config(
    purpose: Purpose,
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    let path = match ca {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os("SSL_CERT_FILE")
            .map(PathBuf::from)
            .into_iter()
            .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
            .find(|p| p.is_file())
            .ok_or_else(|| TlsSetupError::NoRoots {
                peer: purpose.peer,
                bundles: SYSTEM_BUNDLES.join(", "),
                flag: purpose.ca_flag,
            })?,
    };
    let fail =
        |reason: String| TlsSetupError::Ca { peer: purpose.peer, path: path.clone(), reason, flag: purpose.ca_flag };
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
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let bad = |reason: String| TlsSetupError::Identity {
                peer: purpose.peer,
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                reason,
                flags: purpose.identity_flags.to_string(),
            };
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| bad(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if chain.is_empty() {
                return Err(bad("no certificate in the certificate file".into()));
            }
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(e.to_string()))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| bad(e.to_string()))?
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
