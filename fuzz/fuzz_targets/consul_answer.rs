//! What a Consul agent (or anything answering in its place) sends: the health API's JSON body and
//! the `X-Consul-Index` header.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = edge_core::discovery::consul::parse(data);
    if let Ok(text) = std::str::from_utf8(data) {
        for previous in [0, 1, 42, u64::MAX] {
            let _ = edge_core::discovery::consul::next_index(Some(text), previous);
        }
    }
});
