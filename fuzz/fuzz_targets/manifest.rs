//! The manifest parser of `PUT /v1/packages/{name}/versions/{version}`: the first byte picks JSON (even) or CBOR
//! (odd), the rest is the body. Every body gets a checked manifest or a 4xx problem.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((first, body)) = data.split_first() {
        artifactstore::fuzzing::manifest(first % 2 == 1, body);
    }
});
