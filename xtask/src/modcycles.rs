//! The layering check of `cargo xtask test`: no cycle among the top-level modules of any crate of
//! the workspace (cargo already refuses cycles among crates).
//!
//! A top-level module is `src/NAME.rs` or `src/NAME/` (besides `lib.rs` and `main.rs`). Module `a`
//! depends on module `b` when a file of `a` names `crate::b`, directly (`crate::b::x`) or in a
//! group (`use crate::{b, c::d}`). Test code is not product code: the text of a file from its
//! `#[cfg(test)] mod tests` block on is not read. A strongly connected component of more than one
//! module (Tarjan's algorithm) is a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// Checks every crate under `root`; fails listing each cycle with its edges.
pub fn check(root: &Path) -> anyhow::Result<()> {
    let mut cycles = Vec::new();
    for krate in crates(root)? {
        let graph = graph(&krate.join("src"))?;
        for comp in components(&graph) {
            let edges: Vec<String> = comp
                .iter()
                .flat_map(|a| graph[a].iter().filter(|b| comp.contains(*b)).map(move |b| format!("{a} -> {b}")))
                .collect();
            let name = krate.strip_prefix(root).unwrap_or(&krate).display().to_string();
            cycles.push(format!("{name}: cycle among {comp:?}: {}", edges.join(", ")));
        }
    }
    if !cycles.is_empty() {
        bail!(
            "modules depend on each other in a cycle; make the dependency point one way (see ARCHITECTURE.md):\n{}",
            cycles.join("\n")
        );
    }
    Ok(())
}

/// Folders holding a `Cargo.toml` and a `src/` folder.
fn crates(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).with_context(|| format!("listing {}", root.display()))? {
        let dir = entry?.path();
        if dir.join("Cargo.toml").is_file() && dir.join("src").is_dir() {
            out.push(dir);
        }
    }
    out.sort();
    Ok(out)
}

/// Module -> the modules it names.
fn graph(src: &Path) -> anyhow::Result<BTreeMap<String, BTreeSet<String>>> {
    let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(src).with_context(|| format!("listing {}", src.display()))? {
        let path = entry?.path();
        let name = path.file_stem().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if path.is_dir() && name != "bin" {
            files.insert(name, rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main" {
            files.insert(name, vec![path]);
        }
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, paths) in &files {
        let edges = graph.entry(module.clone()).or_default();
        for p in paths {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            for named in named_modules(product_part(&text)) {
                if named != *module && files.contains_key(&named) {
                    edges.insert(named);
                }
            }
        }
    }
    Ok(graph)
}

fn rust_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(out)
}

/// The text before a `#[cfg(test)] mod tests` block.
fn product_part(text: &str) -> &str {
    let mut at = 0;
    while let Some(i) = text[at..].find("#[cfg(test)]") {
        let start = at + i;
        let rest = text[start + "#[cfg(test)]".len()..].trim_start();
        if rest.starts_with("mod tests") || rest.starts_with("pub(crate) mod tests") {
            return &text[..start];
        }
        at = start + 1;
    }
    text
}

/// The first segment of every `crate::` path in `text`, groups included.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    for (i, _) in text.match_indices("crate::") {
        // `$crate::` in macros and names like `edge_crate::` are not this crate's paths.
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: after `{` or a `,` at depth 1.
            let mut depth = 1;
            let mut expect_name = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => expect_name = true,
                    c if expect_name && depth == 1 && (c.is_alphabetic() || c == '_') => {
                        out.insert(ident(&group[j..]));
                        expect_name = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// Strongly connected components of more than one module (Tarjan).
fn components(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    comp.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_groups_name_their_first_segment() {
        let text =
            "use crate::a::x;\nuse crate::{b, c::{d, e}, f::g};\nlet _ = crate::h::i();\n$crate::z; edge_crate::y;";
        let got: Vec<String> = named_modules(text).into_iter().collect();
        assert_eq!(got, ["a", "b", "c", "f", "h"]);
    }

    #[test]
    fn test_blocks_are_not_product_code() {
        let text = "use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::b;\n}\n";
        assert_eq!(named_modules(product_part(text)).into_iter().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn cycles_are_found_and_chains_are_not() {
        let g = |edges: &[(&str, &str)]| {
            let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (a, b) in edges {
                m.entry(a.to_string()).or_default().insert(b.to_string());
                m.entry(b.to_string()).or_default();
            }
            m
        };
        assert!(components(&g(&[("a", "b"), ("b", "c")])).is_empty());
        assert_eq!(components(&g(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])), vec![vec!["a", "b", "c"]]);
    }
}
