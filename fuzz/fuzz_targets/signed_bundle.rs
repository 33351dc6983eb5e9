//! Bundles whose manifest is signed inside the harness, so mutated
//! manifests get past the signature check and reach the manifest parser,
//! the validation and the chunk streaming. The input is a bundle; its
//! manifest region (per its header, clamped to the input) is re-signed with
//! the trusted key and the header rebuilt around it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slate::bundle::{Header, Manifest};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if data.len() < 40 {
        return;
    }
    let claimed = u32::from_le_bytes([data[16], data[17], data[18], data[19]]) as usize;
    let records = u32::from_le_bytes([data[20], data[21], data[22], data[23]]) as usize;
    let manifest_end = 40usize.saturating_add(claimed).min(data.len());
    let manifest = &data[40..manifest_end];
    if manifest.is_empty() {
        return;
    }
    let payload_start = manifest_end
        .saturating_add(records.min(16).saturating_mul(96))
        .min(data.len());
    let payload = &data[payload_start..];
    // Let the header agree with the manifest when it parses, so streaming is reached.
    let payload_len = Manifest::parse(manifest)
        .map(|m| m.payload_len())
        .unwrap_or(payload.len() as u64);
    let header = Header {
        manifest_len: manifest.len() as u32,
        signature_count: 1,
        payload_len,
    };
    let mut bundle = header.encode().to_vec();
    bundle.extend_from_slice(manifest);
    bundle.extend_from_slice(&common::key().sign_record(manifest).encode());
    bundle.extend_from_slice(payload);
    let _ = common::read_all(&bundle);
});
