//! How much linear memory a component needs before it runs: the largest initial size
//! declared by any of its core modules (static data and zero-initialised arrays are inside
//! it). Read from the bytes before compiling, so a component whose memory can never fit the
//! cap is refused at load, without the compile and without holding its memory image.

use wasmparser::{Parser, Payload};

/// Bytes in a wasm page when a memory does not declare a custom page size.
const WASM_PAGE: u64 = 64 << 10;

/// The largest initial linear memory, in bytes, of any core module inside `bytes`; `None`
/// when the bytes do not parse (compiling reports that better).
pub fn initial_memory(bytes: &[u8]) -> Option<u64> {
    let mut largest = 0u64;
    for payload in Parser::new(0).parse_all(bytes) {
        if let Payload::MemorySection(memories) = payload.ok()? {
            for memory in memories {
                let memory = memory.ok()?;
                let page = memory
                    .page_size_log2
                    .map_or(WASM_PAGE, |log2| 1u64 << log2.min(63));
                largest = largest.max(memory.initial.saturating_mul(page));
            }
        }
    }
    Some(largest)
}
