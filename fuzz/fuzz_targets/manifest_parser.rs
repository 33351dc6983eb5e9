//! Arbitrary bytes as manifest JSON: whatever parses must re-encode to
//! exactly the same bytes (canonical form) and pass its own validation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slate::bundle::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data) {
        assert_eq!(m.to_canonical_json(), data);
        assert!(m.validate().is_ok());
        let _ = (m.payload_len(), m.chunk_count());
    }
});
