//! `--config` files on arbitrary text: parsing and checking every key never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        edge_agent::fuzz::config_file(text);
    }
});
