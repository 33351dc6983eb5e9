//! Issue 9: the installer's read-back (`io::blockdev::sha256_uncached`)
//! reads the device, not the page cache. A loop device is held open with
//! its cache warm while its backing file changes underneath: a cached read
//! still returns the old bytes, the read-back must return the new ones.

mod common;

use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::process::Command;

#[test]
fn read_back_bypasses_the_page_cache() {
    let test = "read_back_bypasses_the_page_cache";
    if !common::is_root() {
        common::skipped(test, "needs root for a loop device");
        return;
    }
    if common::skip_without(test, &["losetup"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let backing = d.path().join("slot.img");
    std::fs::write(&backing, vec![0u8; 8 << 20]).unwrap();
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&backing)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let detach = scopeguard(dev.clone());

    let old: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
    let new: Vec<u8> = (0..1u32 << 20).map(|i| (i % 241) as u8).collect();
    // Held open for the whole test, so its page cache stays.
    let mut held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dev)
        .unwrap();
    held.write_all(&old).unwrap();
    held.sync_all().unwrap();
    let mut warm = vec![0u8; old.len()];
    held.seek(SeekFrom::Start(0)).unwrap();
    held.read_exact(&mut warm).unwrap();
    // The "device" changes underneath (as a disk could between the write
    // and the read-back).
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&backing)
        .unwrap();
    f.write_all_at(&new, 0).unwrap();
    f.sync_all().unwrap();

    let mut cached = vec![0u8; old.len()];
    held.read_exact_at(&mut cached, 0).unwrap();
    assert_eq!(
        cached, old,
        "setup: the cached read should still see the old bytes"
    );
    let (digest, n) =
        slate::io::blockdev::sha256_uncached(std::path::Path::new(&dev), new.len() as u64).unwrap();
    assert_eq!(n, new.len() as u64);
    assert_eq!(
        digest,
        <[u8; 32]>::from(Sha256::digest(&new)),
        "read-back came from the cache"
    );
    drop(held);
    drop(detach);
}

/// Detaches the loop device when dropped (also on a failed assertion).
fn scopeguard(dev: String) -> impl Drop {
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
        }
    }
    Detach(dev)
}
