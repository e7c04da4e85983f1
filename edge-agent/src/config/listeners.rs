//! Listeners section: `--listen`, `--listen-tcp`, `--tls-cert`/`--tls-key`, `--admin`,
//! `--admin-token`, `--admin-insecure`.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::defaults::{ADMIN, ADMIN_INSECURE};
use super::{ConfigError, usage};
use crate::cli::RunArgs;

/// TLS certificate and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The listeners, validated.
#[derive(Debug)]
pub(super) struct Listeners {
    pub listen: Vec<SocketAddr>,
    pub listen_tcp: Vec<SocketAddr>,
    pub tls: Option<TlsFiles>,
    pub admin: Option<SocketAddr>,
    pub admin_token: Option<String>,
}

pub(super) fn build(args: &RunArgs) -> Result<Listeners, ConfigError> {
    let listen: Vec<SocketAddr> = args.listen.iter().map(|a| a.0).collect();
    let listen_tcp: Vec<SocketAddr> = args.listen_tcp.iter().map(|a| a.0).collect();
    let mut all: Vec<SocketAddr> = listen.iter().chain(&listen_tcp).copied().collect();
    all.sort();
    if let Some(w) = all.windows(2).find(|w| w[0] == w[1] && w[0].port() != 0) {
        return Err(usage(format!("{} is given as a listener twice; give each address once", w[0])));
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(TlsFiles { cert: c.0.clone(), key: k.0.clone() }),
        (None, None) => None,
        (Some(_), None) => return Err(usage("--tls-cert needs --tls-key; give both PEM files")),
        (None, Some(_)) => return Err(usage("--tls-key needs --tls-cert; give both PEM files")),
    };
    let admin = args.admin.map_or(Some(ADMIN), |a| a.0);
    let admin_token = args.admin_token.as_ref().map(|t| t.0.clone()).filter(|t| !t.is_empty());
    let insecure = args.admin_insecure.map_or(ADMIN_INSECURE, |v| v.0);
    // Anyone who can reach a non-loopback admin listener could drain every backend; refuse to
    // open one without a token unless the operator says so in as many words.
    if let Some(a) = admin
        && !a.ip().is_loopback()
        && admin_token.is_none()
        && !insecure
    {
        return Err(usage(format!(
            "--admin {a} is reachable from other hosts but has no token; set --admin-token TOKEN \
             (or EDGE_ADMIN_TOKEN), bind it to 127.0.0.1, or pass --admin-insecure to serve it unprotected"
        )));
    }
    Ok(Listeners { listen, listen_tcp, tls, admin, admin_token })
}
