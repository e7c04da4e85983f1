//! The optional `--config` TOML file: keys are the long flag names, values fill in whatever the
//! command line and `EDGE_*` variables left unset.
//!
//! ```toml
//! listen = ["0.0.0.0:80"]
//! backend = ["10.0.1.2:8080", "10.0.1.3:8080,weight=2"]
//! health-path = "/healthz"
//! rise = 2
//!
//! [[service]]                        # more services: see `service`
//! vip = "10.0.0.6:443"
//! backend = ["10.0.2.2:443"]
//! ```

use std::path::{Path, PathBuf};

use super::ConfigError;
use crate::cli::RunArgs;

pub(super) fn scalar(key: &str, v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err(format!("key '{key}' must be a string or a number")),
    }
}

pub(super) fn list(key: &str, v: &toml::Value) -> Result<Vec<String>, String> {
    match v {
        toml::Value::Array(a) => a.iter().map(|x| scalar(key, x)).collect(),
        other => Ok(vec![scalar(key, other)?]),
    }
}

/// Reads `path` and fills every field of `raw` that is still unset.
pub fn merge(raw: &mut RunArgs, path: &Path) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::File { path: path.into(), reason: format!("{e}; check the path and permissions") })?;
    merge_str(raw, path, &text)
}

/// Like [`merge`], from text.
pub fn merge_str(raw: &mut RunArgs, path: &Path, text: &str) -> Result<(), ConfigError> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::File {
        path: path.into(),
        reason: format!("not valid TOML: {}", e.message()),
    })?;
    let err = |reason: String| ConfigError::File { path: PathBuf::from(path), reason };
    for (key, value) in &table {
        let k = key.replace('_', "-");
        macro_rules! one {
            ($field:ident) => {
                if raw.$field.is_none() {
                    raw.$field = Some(scalar(&k, value).map_err(err)?);
                }
            };
        }
        macro_rules! many {
            ($field:ident) => {
                if raw.$field.is_empty() {
                    raw.$field = list(&k, value).map_err(err)?;
                }
            };
        }
        match k.as_str() {
            "listen" => many!(listen),
            "listen-tcp" => many!(listen_tcp),
            "backend" | "backends" => many!(backend),
            "backends-file" => one!(backends_file),
            "mode" => one!(mode),
            "iface" => many!(iface),
            "vip" => one!(vip),
            "xdp-mode" => one!(xdp_mode),
            "snat-ports" => one!(snat_ports),
            "conntrack-size" => one!(conntrack_size),
            "udp-timeout" => one!(udp_timeout),
            "tcp-timeout" => one!(tcp_timeout),
            "cleanup" => {
                if !raw.cleanup {
                    raw.cleanup = scalar(&k, value).map_err(err)? == "true";
                }
            }
            "health-check" => one!(health_check),
            "health-path" => one!(health_path),
            "health-interval" => one!(health_interval),
            "health-timeout" => one!(health_timeout),
            "health-jitter" => one!(health_jitter),
            "rise" => one!(rise),
            "fall" => one!(fall),
            "strategy" => one!(strategy),
            "hash-key" => one!(hash_key),
            "table-size" => one!(table_size),
            "on-no-backend" => one!(on_no_backend),
            "admin" => one!(admin),
            "admin-token" => one!(admin_token),
            "tls-cert" => one!(tls_cert),
            "tls-key" => one!(tls_key),
            "header-read-timeout" => one!(header_read_timeout),
            "connect-timeout" => one!(connect_timeout),
            "upstream-timeout" => one!(upstream_timeout),
            "idle-timeout" => one!(idle_timeout),
            "drain-timeout" => one!(drain_timeout),
            "max-header-bytes" => one!(max_header_bytes),
            "max-headers" => one!(max_headers),
            "workers" => one!(workers),
            "cpu-pinning" => one!(cpu_pinning),
            "log-format" => one!(log_format),
            "log-level" => one!(log_level),
            // No flag gives services, so the file's tables are the only ones.
            "service" => raw.services = super::service::from_toml(path, value)?,
            _ => {
                return Err(err(format!(
                    "unknown key '{key}'; keys are the long flag names of 'edge-agent run', e.g. listen, backend, health-interval, and [[service]] tables"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_fills_only_unset_fields() {
        let mut raw = RunArgs { rise: Some("5".into()), backend: vec!["10.0.0.9:80".into()], ..Default::default() };
        let text = "listen = \":80\"\nbackend = [\"10.0.0.1:80\"]\nrise = 3\nfall = 4\nhealth_interval = \"1s\"\n";
        merge_str(&mut raw, Path::new("c.toml"), text).unwrap();
        assert_eq!(raw.listen, vec![":80"]);
        assert_eq!(raw.backend, vec!["10.0.0.9:80"], "command line wins");
        assert_eq!(raw.rise.as_deref(), Some("5"), "command line wins");
        assert_eq!(raw.fall.as_deref(), Some("4"));
        assert_eq!(raw.health_interval.as_deref(), Some("1s"));
    }

    #[test]
    fn unknown_keys_and_bad_toml_are_errors() {
        let mut raw = RunArgs::default();
        let e = merge_str(&mut raw, Path::new("c.toml"), "lissen = 1").unwrap_err().to_string();
        assert!(e.contains("unknown key 'lissen'"), "{e}");
        let e = merge_str(&mut raw, Path::new("c.toml"), "listen = [").unwrap_err().to_string();
        assert!(e.contains("not valid TOML"), "{e}");
        let e = merge_str(&mut raw, Path::new("c.toml"), "rise = [[1]]").unwrap_err().to_string();
        assert!(e.contains("string or a number"), "{e}");
    }
}
