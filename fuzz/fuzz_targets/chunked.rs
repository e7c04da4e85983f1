//! The chunked body decoder on arbitrary bytes fed in arbitrary pieces, checked against
//! httparse's chunk-size parser.
//!
//! Invariants: the decoder never panics; fed in pieces it yields the same data as fed at once; it
//! never yields more bytes than it was given; and a first chunk-size line it accepts, httparse
//! accepts with the same size (edge may be stricter, never more lenient: leniency in framing is
//! how requests get smuggled).
#![no_main]

use bytes::BytesMut;
use edge_proxy::fuzz::{Chunk, ChunkedDecoder};
use libfuzzer_sys::fuzz_target;

/// Decodes `data` fed `step` bytes at a time; the data, and whether it ended cleanly.
fn decode(data: &[u8], step: usize) -> (Vec<u8>, Option<bool>) {
    let mut dec = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in data.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(Chunk::Data(d))) => {
                    assert!(!d.is_empty());
                    out.extend_from_slice(&d);
                }
                Ok(Some(Chunk::Trailers(_) | Chunk::End)) => return (out, Some(true)),
                Ok(None) => break,
                Err(_) => return (out, Some(false)),
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, data)) = data.split_first() else { return };
    let (whole, end_whole) = decode(data, data.len().max(1));
    let (pieces, end_pieces) = decode(data, usize::from(step).max(1));
    assert!(whole.len() <= data.len());
    if end_whole.is_some() && end_pieces.is_some() {
        assert_eq!(whole, pieces, "the same data however the bytes arrive");
        assert_eq!(end_whole, end_pieces, "the same verdict however the bytes arrive");
    }
    // The first size line: what edge accepts, httparse accepts with the same size.
    let mut dec = ChunkedDecoder::default();
    let mut buf = BytesMut::from(data);
    if let Ok(Some(Chunk::Data(first))) = dec.decode(&mut buf) {
        match httparse::parse_chunk_size(data) {
            Ok(httparse::Status::Complete((line, size))) => {
                let available = (data.len() - line) as u64;
                assert_eq!(first.len() as u64, size.min(available), "first chunk size");
            }
            other => panic!("edge accepted a chunk-size line httparse does not: {other:?}"),
        }
    }
});
