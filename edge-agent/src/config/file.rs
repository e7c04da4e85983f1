//! The optional `--config` TOML file: keys are the long flag names (declared once, in
//! `cli::RunArgs`), values fill in whatever the command line and `EDGE_*` variables left unset;
//! `[[service]]` tables add services (`service`).
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
//!
//! Every value is checked by the same type as its flag; errors name the file, the key (and the
//! service) and the fix.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::ConfigError;
use super::service::ServiceTable;
use crate::cli::RunArgs;

/// Largest config file read; larger ones are refused before parsing (a config file is a few
/// kilobytes; backends by the thousand belong in a `--backends-file`).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Reads `path`: its settings and its `[[service]]` tables.
pub fn read(path: &Path) -> Result<(RunArgs, Vec<ServiceTable>), ConfigError> {
    let text = edge_core::util::read_bounded(path, MAX_CONFIG_BYTES).map_err(|e| match e.kind() {
        std::io::ErrorKind::FileTooLarge => ConfigError::TooLarge { path: path.into(), limit: MAX_CONFIG_BYTES },
        _ => ConfigError::Unreadable { path: path.into(), reason: e.to_string() },
    })?;
    parse(path, &text)
}

/// Like [`read`], from text; `path` names the file in errors.
pub fn parse(path: &Path, text: &str) -> Result<(RunArgs, Vec<ServiceTable>), ConfigError> {
    let err = |reason: String| ConfigError::File { path: path.into(), reason };
    let mut table: toml::Table =
        text.parse().map_err(|e: toml::de::Error| err(format!("not valid TOML: {}", e.message())))?;
    table = normalise(table);
    let services = match table.remove("service") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| ServiceTable::from_toml(path, i + 1, v))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(err("'service' must be an array of tables; write each service as [[service]]".into())),
    };
    let known: Vec<String> = RunArgs::FIELDS.iter().filter(|f| **f != "config").map(|f| f.replace('_', "-")).collect();
    for key in table.keys() {
        if !known.contains(key) && key != "backends" {
            return Err(err(format!(
                "unknown key '{key}'; keys are the long flag names of 'edge-agent run', e.g. listen, backend, \
                 health-interval, and [[service]] tables"
            )));
        }
    }
    let args: RunArgs = typed(table).map_err(err)?;
    // Checked here, where the source is known: the merged list may come from flags instead.
    if let Some(b) = args
        .backend
        .iter()
        .enumerate()
        .find_map(|(i, b)| args.backend[..i].iter().any(|x| x.addr == b.addr).then_some(b))
    {
        return Err(err(format!("backend '{b}' is given twice; give each backend once")));
    }
    Ok((args, services))
}

/// Keys may be written with underscores (`health_interval`) as well as dashes.
pub(super) fn normalise(table: toml::Table) -> toml::Table {
    table.into_iter().map(|(k, v)| (k.replace('_', "-"), v)).collect()
}

/// Deserializes a table, naming the key of the first bad value.
pub(super) fn typed<T: DeserializeOwned>(table: toml::Table) -> Result<T, String> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        let key = key.split('[').next().unwrap_or_default().to_string();
        describe(&key, &e.into_inner().to_string())
    })
}

/// Words a deserialization error about `key` the way flag errors read.
fn describe(key: &str, msg: &str) -> String {
    if let Some(rest) = msg.strip_prefix("invalid type: ").or_else(|| msg.strip_prefix("invalid value: ")) {
        let expected = rest.split_once(", expected ").map_or(rest, |(_, e)| e);
        return format!("key '{key}' must be {expected}");
    }
    if msg.starts_with("duplicate field") {
        return format!("key '{key}' is given twice; give it once");
    }
    // A value checked by its type: the message starts with the value and says the fix.
    format!("invalid {key} {msg}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("c.toml")
    }

    #[test]
    fn keys_are_flag_names_and_values_their_types() {
        let text = "listen = \":80\"\nbackends = [\"10.0.0.1:80\"]\nrise = 3\nhealth_interval = \"1s\"\ncleanup = true\ncpu-pinning = false\n";
        let (a, s) = parse(p(), text).unwrap();
        assert!(s.is_empty());
        assert_eq!(a.listen.len(), 1);
        assert_eq!(a.backend.len(), 1);
        assert_eq!(a.rise.map(|r| r.0), Some(3));
        assert_eq!(a.health_interval.map(|d| d.0), Some(std::time::Duration::from_secs(1)));
        assert_eq!(a.cleanup.map(|c| c.0), Some(true));
        assert_eq!(a.cpu_pinning.map(|c| c.0), Some(false), "on/off settings are TOML booleans");
    }

    #[test]
    fn bad_files_name_the_key_and_the_fix() {
        let cases = [
            ("lissen = 1", "unknown key 'lissen'"),
            ("listen = [", "not valid TOML"),
            ("rise = [[1]]", "key 'rise' must be a string or a number"),
            ("rise = 0", "invalid rise '0': use an integer from 1 to 100"),
            ("health-interval = \"2x\"", "invalid health-interval '2x': '2x' is not a duration"),
            ("cleanup = \"yes\"", "key 'cleanup' must be true or false"),
            ("cpu-pinning = \"off\"", "key 'cpu-pinning' must be true or false"),
            ("backend = [\"10.0.0.1:80,weight=1,weight=2\"]", "gives weight twice"),
            ("mode = \"kernel\"", "invalid mode 'kernel': use auto, ebpf or userspace"),
            ("backend = [\"10.0.0.1:80\", \"10.0.0.1:80\"]", "backend '10.0.0.1:80' is given twice"),
            ("service = 1", "'service' must be an array of tables"),
        ];
        for (text, want) in cases {
            let e = parse(p(), text).unwrap_err().to_string();
            assert!(e.starts_with("config file c.toml: "), "{e}");
            assert!(e.contains(want), "expected {want:?} in {e:?}");
        }
    }
}
