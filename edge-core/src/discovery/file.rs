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
//! `[{"address": "10.0.1.2:8080", "weight": 2, "proxy": "v2"}]`, or either inside
//! `{"backends": [...]}`.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{Closed, Discover, Sink, Update};
use crate::backend::{BackendSpec, ProxyProtocol, SpecError};
use crate::util::BoxFuture;

/// How often the file's metadata is checked.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Largest backends file read: about 500,000 entries, more than any service has backends; a
/// larger file is refused before it is parsed, so a runaway generator cannot exhaust memory.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Errors reading a backends file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error(
        "backends file {path} is larger than {MAX_FILE_BYTES} bytes; list fewer backends, or split them over services"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
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

/// One entry: `"ADDR[,weight=N]"` or `{address, weight}`. Deserialized by hand rather than as an
/// untagged enum: serde buffers every element of an untagged enum into an intermediate tree
/// before trying each variant, which made a 100 MB file of small numbers cost gigabytes before it
/// was refused; a visitor refuses the first element of the wrong type at once.
enum Entry {
    Spec(String),
    Object { address: String, weight: Option<u32>, proxy: Option<String> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryObject {
    address: String,
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    proxy: Option<String>,
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a backend: \"ADDRESS[,weight=N]\" or {\"address\": ..., \"weight\": N}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Entry, E> {
                Ok(Entry::Spec(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Entry, A::Error> {
                let o = EntryObject::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Entry::Object { address: o.address, weight: o.weight, proxy: o.proxy })
            }
        }
        d.deserialize_any(V)
    }
}

/// The whole file: a list of entries, or `{"backends": [...]}`.
struct Document(Vec<Entry>);

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Document;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of backends, or a table whose 'backends' key is one")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Document, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(e) = seq.next_element()? {
                    out.push(e);
                }
                Ok(Document(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
                let mut list = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "backends" {
                        return Err(de::Error::unknown_field(&key, &["backends"]));
                    }
                    if list.is_some() {
                        return Err(de::Error::duplicate_field("backends"));
                    }
                    list = Some(map.next_value::<Document>()?.0);
                }
                list.map(Document).ok_or_else(|| de::Error::missing_field("backends"))
            }
        }
        d.deserialize_any(V)
    }
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
    let entries = doc.0;
    let mut out: Vec<BackendSpec> = Vec::with_capacity(entries.len());
    let mut seen = HashSet::with_capacity(entries.len());
    for e in entries {
        let spec = match e {
            Entry::Spec(s) => BackendSpec::parse(&s),
            Entry::Object { address, weight, proxy } => BackendSpec::parse(&address).and_then(|b| {
                let mut spec = BackendSpec::checked(b.addr, weight.unwrap_or(b.weight))?;
                spec.tls = b.tls;
                spec.h2 = b.h2;
                spec.proxy = match proxy {
                    Some(p) => Some(ProxyProtocol::parse(&p).ok_or(SpecError::Proxy(address.clone(), p))?),
                    None => b.proxy,
                };
                Ok(spec)
            }),
        }
        .map_err(|source| FileError::Entry { path: path.into(), source })?;
        if !seen.insert(spec.addr) {
            return Err(FileError::Duplicate { path: path.into(), addr: spec.addr.to_string() });
        }
        out.push(spec);
    }
    Ok(out)
}

/// Reads and parses the file (blocking; host names may be resolved).
pub fn load(path: &Path) -> Result<Vec<BackendSpec>, FileError> {
    let text = crate::util::read_bounded(path, MAX_FILE_BYTES).map_err(|source| match source.kind() {
        std::io::ErrorKind::FileTooLarge => FileError::TooLarge { path: path.into() },
        _ => FileError::Read { path: path.into(), source },
    })?;
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
                    // An unchanged file that last parsed is a fresh list; a broken one is not.
                    if last_error.is_none() {
                        sink.ok();
                    }
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
                        } else {
                            sink.ok();
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
        let e = parse(&p("b.json"), r#"[{"address": "10.0.0.1:80", "proxy": "v2"}, "10.0.0.2:80,proxy=v1"]"#).unwrap();
        assert_eq!((e[0].proxy, e[1].proxy), (Some(ProxyProtocol::V2), Some(ProxyProtocol::V1)));
        let bad = parse(&p("b.json"), r#"[{"address": "10.0.0.1:80", "proxy": "v9"}]"#).unwrap_err().to_string();
        assert!(bad.contains("use proxy=v1 (text) or proxy=v2 (binary)"), "{bad}");
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
        let e = parse(&p("b.json"), "[1, 2, 3]").unwrap_err().to_string();
        assert!(e.contains("expected a backend"), "{e}");
        let e = parse(&p("b.json"), r#"{"backend": []}"#).unwrap_err().to_string();
        assert!(e.contains("unknown field `backend`"), "{e}");
        let e = parse(&p("b.json"), r#"[{"address": "10.0.0.1:80", "wieght": 2}]"#).unwrap_err().to_string();
        assert!(e.contains("unknown field `wieght`"), "{e}");
    }

    #[test]
    fn large_files_are_refused_before_parsing_and_duplicates_found_fast() {
        let dir = std::env::temp_dir().join(format!("edge-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big.json");
        let mut text = String::from("[");
        while text.len() as u64 <= MAX_FILE_BYTES {
            text.push_str("1,2,3,4,5,6,7,8,9,0,");
        }
        text.push_str("1]");
        std::fs::write(&big, &text).unwrap();
        let e = load(&big).unwrap_err().to_string();
        assert!(e.contains("larger than 16777216 bytes"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();

        // 300,000 distinct entries and one duplicate at the end: a quadratic check took a minute.
        let n = 300_000u32;
        let mut list: Vec<String> =
            (0..n).map(|i| format!("\"10.{}.{}.{}:80\"", i >> 16, (i >> 8) & 255, i & 255)).collect();
        let t0 = std::time::Instant::now();
        let ok = parse(&p("b.json"), &format!("[{}]", list.join(","))).unwrap();
        assert_eq!(ok.len(), n as usize);
        list.push("\"10.0.0.7:80\"".into());
        let e = parse(&p("b.json"), &format!("[{}]", list.join(","))).unwrap_err().to_string();
        assert!(e.contains("10.0.0.7:80 twice"), "{e}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(10), "{:?}", t0.elapsed());
    }
}
