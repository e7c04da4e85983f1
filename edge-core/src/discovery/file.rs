//! Backends from a JSON or TOML file (`--backends-file`), re-read when it changes.
//!
//! The file is polled (a `stat` per second) rather than watched with inotify: polling sees
//! editors' write-to-temp-and-rename, files on bind mounts and ECS volumes, and symlink swaps alike,
//! costs nothing measurable, and needs no extra dependency. A change is applied as a `Reset`; the
//! monitor drains backends that left instead of cutting them, so a reload drops no connection.
//! A file that fails to parse is reported and ignored: the last good list stays in force.
//!
//! Accepted shapes (JSON shown; TOML has the same keys):
//! `["10.0.1.2:8080", "10.0.1.3:8080,weight=2"]`,
//! `[{"address": "10.0.1.2:8080", "weight": 2}]`, or either inside `{"backends": [...]}`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::{Closed, Discover, Sink, Update};
use crate::backend::{BackendSpec, SpecError};
use crate::util::BoxFuture;

/// How often the file's metadata is checked.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Errors reading a backends file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("cannot read backends file {path}: {source}; check the path and permissions")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is neither valid JSON nor valid TOML of the expected shape.
    #[error(
        "backends file {path} is not a valid {format} backend list: {message}; expected a list such as [\"10.0.1.2:8080\", {{\"address\": \"10.0.1.3:8080\", \"weight\": 2}}]"
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// `JSON` or `TOML`.
        format: &'static str,
        /// The parser's message.
        message: String,
    },
    /// An entry is not a valid backend.
    #[error("backends file {path}: {source}")]
    Entry {
        /// The file.
        path: PathBuf,
        /// The entry's error.
        source: SpecError,
    },
    /// The same address twice.
    #[error("backends file {path} lists {addr} twice; list each backend once")]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// The address.
        addr: String,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Entry {
    Spec(String),
    Object {
        address: String,
        #[serde(default)]
        weight: Option<u32>,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Document {
    List(Vec<Entry>),
    Wrapped { backends: Vec<Entry> },
}

/// Parses a backends file's contents; `path` only names it in errors and picks the format.
pub fn parse(path: &Path, text: &str) -> Result<Vec<BackendSpec>, FileError> {
    let toml_ext = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    let json_ext = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let looks_json = matches!(text.trim_start().chars().next(), Some('[' | '{'));
    let doc: Document = if json_ext || (!toml_ext && looks_json) {
        serde_json::from_str(text).map_err(|e| FileError::Parse {
            path: path.into(),
            format: "JSON",
            message: e.to_string(),
        })?
    } else {
        toml::from_str(text).map_err(|e| FileError::Parse {
            path: path.into(),
            format: "TOML",
            message: e.message().to_string(),
        })?
    };
    let entries = match doc {
        Document::List(l) | Document::Wrapped { backends: l } => l,
    };
    let mut out: Vec<BackendSpec> = Vec::with_capacity(entries.len());
    for e in entries {
        let spec = match e {
            Entry::Spec(s) => BackendSpec::parse(&s),
            Entry::Object { address, weight } => {
                BackendSpec::parse(&address).and_then(|b| BackendSpec::checked(b.addr, weight.unwrap_or(b.weight)))
            }
        }
        .map_err(|source| FileError::Entry { path: path.into(), source })?;
        if out.iter().any(|b| b.addr == spec.addr) {
            return Err(FileError::Duplicate { path: path.into(), addr: spec.addr.to_string() });
        }
        out.push(spec);
    }
    Ok(out)
}

/// Reads and parses the file (blocking; host names may be resolved).
pub fn load(path: &Path) -> Result<Vec<BackendSpec>, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read { path: path.into(), source })?;
    parse(path, &text)
}

/// What identifies a version of the file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    ino: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp { modified: m.modified().ok(), len: m.len(), ino: m.ino() })
}

/// A backends file and its last good contents.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    initial: Vec<BackendSpec>,
}

impl FileSource {
    /// Loads the file once; a bad file here stops the agent from starting.
    pub fn open(path: &Path) -> Result<Self, FileError> {
        Ok(Self { path: path.into(), initial: load(path)? })
    }
}

impl Discover for FileSource {
    fn name(&self) -> &'static str {
        "file"
    }

    fn run(self: Box<Self>, sink: Sink) -> BoxFuture<'static, Result<(), Closed>> {
        Box::pin(async move {
            let Self { path, initial } = *self;
            let mut last_stamp = stamp(&path);
            let mut current = initial.clone();
            sink.send(Update::Reset(initial)).await?;
            let mut last_error: Option<String> = None;
            loop {
                tokio::time::sleep(POLL_INTERVAL).await;
                let now = stamp(&path);
                if now == last_stamp {
                    continue;
                }
                let p = path.clone();
                let loaded = tokio::task::spawn_blocking(move || load(&p)).await;
                match loaded {
                    Ok(Ok(list)) => {
                        last_stamp = now;
                        last_error = None;
                        if list != current {
                            tracing::info!(path = %path.display(), backends = list.len(), "backends file changed");
                            current = list.clone();
                            sink.send(Update::Reset(list)).await?;
                        }
                    }
                    Ok(Err(e)) => {
                        // Report each distinct failure once per file version, then wait for the
                        // next change; retrying the same bytes gives the same error.
                        last_stamp = now;
                        if last_error.as_deref() != Some(&e.to_string()) {
                            last_error = Some(e.to_string());
                            sink.error(&e);
                        }
                    }
                    Err(join) => sink.error(&join),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str) -> PathBuf {
        PathBuf::from(name)
    }

    #[test]
    fn accepts_json_and_toml_shapes() {
        let a = parse(&p("b.json"), r#"["10.0.0.1:80", "10.0.0.2:80,weight=3"]"#).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].weight, 3);
        let b = parse(&p("b"), r#"{"backends": [{"address": "10.0.0.1:80", "weight": 2}]}"#).unwrap();
        assert_eq!(b[0].weight, 2);
        let c = parse(&p("b.toml"), "backends = [\"10.0.0.1:80\"]\n").unwrap();
        assert_eq!(c.len(), 1);
        let d = parse(&p("b.toml"), "[[backends]]\naddress = \"10.0.0.1:80\"\nweight = 5\n").unwrap();
        assert_eq!(d[0].weight, 5);
        assert!(parse(&p("b.json"), "[]").unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_files_with_useful_errors() {
        let e = parse(&p("b.json"), "[\"10.0.0.1:80\",").unwrap_err().to_string();
        assert!(e.contains("b.json") && e.contains("JSON"), "{e}");
        let e = parse(&p("b.json"), r#"[{"address": "10.0.0.1:80", "weight": 0}]"#).unwrap_err().to_string();
        assert!(e.contains("1 to 256"), "{e}");
        let e = parse(&p("b.json"), r#"["10.0.0.1:80", "10.0.0.1:80"]"#).unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
        let e = parse(&p("b.toml"), "backends = 3").unwrap_err().to_string();
        assert!(e.contains("TOML"), "{e}");
        let e = load(Path::new("/nonexistent/backends.json")).unwrap_err().to_string();
        assert!(e.contains("cannot read"), "{e}");
    }
}
