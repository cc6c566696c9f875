//! The header parsers: `Range`, `Content-Range` with `Content-Length`, `Content-Type`, media types, `Authorization`
//! and the feed's `type` filter. The first eight bytes are a blob size, the rest the header's text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (size, text) = data.split_at(8);
    let size = u64::from_le_bytes(size.try_into().expect("eight bytes"));
    if let Ok(text) = std::str::from_utf8(text) {
        artifactstore::fuzzing::headers(text, size);
    }
});
