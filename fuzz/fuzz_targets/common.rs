// Shared by the fuzz targets: read a bundle to the end the way
// `slate verify` does, with a fixed trusted key.

use slate::bundle::{BundleError, SecretKey, TrustedKeys, open};

/// The key the seed corpus is signed with (scripts/fuzz-bundle.sh writes
/// its PKCS#8 PEM from the same 32-byte seed).
pub fn key() -> SecretKey {
    SecretKey::from_seed(&[7; 32])
}

/// Opens and streams everything; any error is fine, a panic is a bug.
/// Artifacts beyond 64 MiB are not streamed: hashing terabytes of claimed
/// holes is slow, not wrong, and would only produce fuzzer timeouts.
pub fn read_all(data: &[u8]) -> Result<(), BundleError> {
    let keys = TrustedKeys::new([key().public()], 1).expect("one trusted key");
    let mut r = open(data, &keys)?;
    let total: u64 = r.manifest().artifacts.iter().map(|a| a.size).sum();
    if total > 64 << 20 {
        return Ok(());
    }
    r.set_workers(2);
    while r.next_artifact()?.is_some() {
        r.verify_artifact(|_| {})?;
    }
    r.finish()?;
    Ok(())
}
