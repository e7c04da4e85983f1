//! What the admin API parses from its clients: `PUT /admin/strategy` bodies and query strings.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    edge_agent::fuzz::strategy_body(data);
    if let Ok(q) = std::str::from_utf8(data) {
        edge_agent::fuzz::query_param(q);
    }
});
