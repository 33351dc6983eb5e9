//! A sparse rootfs larger than 4 GiB: holes cost nothing in the bundle,
//! offsets past 4 GiB survive every step, and a damaged chunk out there is
//! found. (Every pass still hashes the whole artifact, zeros included, so
//! the file is kept just above 4 GiB.)

mod bundle_support;

use bundle_support::*;
use slate::bundle::{ChunkData, PublicKey, TrustedKeys, open};

const GIB: u64 = 1 << 30;

#[test]
fn sparse_rootfs_beyond_4_gib() {
    let t = tempfile::tempdir().unwrap();
    let build = t.path().join("build");
    std::fs::create_dir(&build).unwrap();
    let near_start = mixed_bytes(300_000, 1);
    let far = mixed_bytes(2_500_000, 2);
    let size = 4 * GIB + (64 << 20);
    let far_at = size - 3_000_000;
    let data: [(u64, &[u8]); 2] = [(4096, &near_start), (far_at, &far)];
    sparse_file(&build.join("rootfs.ext4"), size, &data);
    let kernel = mixed_bytes(50_000, 3);
    std::fs::write(build.join("vmlinuz"), &kernel).unwrap();
    let rootfs_sha = sha256_sparse(size, &data);
    write_manifest_with(
        &build,
        &[("rootfs", "rootfs.ext4"), ("kernel", "vmlinuz")],
        &|p| {
            if p.ends_with("vmlinuz") {
                sha256_hex(&kernel)
            } else {
                rootfs_sha.clone()
            }
        },
    );
    let (key, public) = keygen(&t.path().join("k"));
    let out = t.path().join("big.slate");
    bundle(&build, &[&key], &out, &["--chunk-size", "1M"]);

    let len = std::fs::metadata(&out).unwrap().len();
    assert!(
        len < 4 << 20,
        "a 4 GiB sparse rootfs made a {len}-byte bundle"
    );
    let bytes = std::fs::read(&out).unwrap();
    let layout = Layout::parse(&bytes);
    let a = &layout.manifest["artifacts"][0];
    assert_eq!(a["size"], size);
    assert_eq!(a["chunks"].as_array().unwrap().len(), 4096 + 64);

    // The reader hands over the far data at its offset past 4 GiB.
    let keys = TrustedKeys::new([PublicKey::read_pem_file(&public).unwrap()], 1).unwrap();
    let mut r = open(&bytes[..], &keys).unwrap();
    r.next_artifact().unwrap().unwrap();
    let mut far_seen = Vec::new();
    r.read_chunks(|c| {
        if let ChunkData::Bytes(b) = c.data
            && c.offset > 4 * GIB
        {
            far_seen.push((c.offset, b.to_vec()));
        }
        Ok(())
    })
    .unwrap();
    r.finish().unwrap();
    let first = far_seen.first().unwrap();
    let skip = (far_at - first.0) as usize;
    assert_eq!(&first.1[skip..skip + 1000], &far[..1000]);

    // A flipped bit in a chunk beyond 4 GiB is found and named.
    let (name, index, off, clen) = layout
        .chunks
        .iter()
        .find(|c| c.0 == "rootfs" && c.1 * (1 << 20) > 4 * GIB)
        .unwrap()
        .clone();
    let mut bad = bytes.clone();
    bad[(off + clen / 3) as usize] ^= 0x08;
    let p = t.path().join("bad.slate");
    std::fs::write(&p, &bad).unwrap();
    let needle = format!("chunk {index} of {name} (offset {})", index << 20);
    assert_refused(&p, &[&public], "corrupt", None, &needle);
}
