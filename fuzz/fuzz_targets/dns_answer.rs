//! What a DNS server sends for an SRV query: hickory's parser, then the SRV records and their
//! targets' addresses turned into backends.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = edge_core::discovery::dns::backends_from_answer(data);
});
