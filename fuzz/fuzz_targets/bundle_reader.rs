//! Arbitrary bytes as a bundle: header checks, limits, signature records,
//! and (for inputs derived from the signed seed) the payload streaming.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let _ = common::read_all(data);
    let _ = slate::bundle::read_head_unverified(data);
});
