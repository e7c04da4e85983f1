//! Backends files (`--backends-file`), as JSON and as TOML, on arbitrary text. Host names are not
//! resolved in fuzz builds.
#![no_main]

use std::path::Path;

use edge_core::discovery::parse_backends_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for name in ["b.json", "b.toml", "b"] {
        if let Ok(list) = parse_backends_file(Path::new(name), text) {
            // Whatever is accepted has distinct addresses and weights in range.
            let mut seen = std::collections::HashSet::new();
            for b in &list {
                assert!(seen.insert(b.addr), "duplicate {}", b.addr);
                assert!((1..=256).contains(&b.weight), "weight {}", b.weight);
            }
        }
    }
});
