//! A stable-toolchain fuzz net beside the cargo-fuzz target (fuzz/): random
//! damage to a bundle, and random edits to its manifest that are then signed,
//! so the code after the signature check sees hostile input too. The reader
//! must never panic, and whatever it accepts must be exactly what was signed.

mod bundle_support;

use bundle_support::*;
use proptest::prelude::*;
use slate::bundle::{
    BundleError, Holes, Manifest, SecretKey, TrustedKeys, WriteOptions, open, write_bundle,
};
use std::sync::OnceLock;

struct Sample {
    bundle: Vec<u8>,
    artifacts: Vec<Vec<u8>>,
}

fn sample() -> &'static Sample {
    static S: OnceLock<Sample> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = mixed_bytes(400_000, 4);
        let kernel = mixed_bytes(70_000, 5);
        build_dir(
            dir.path(),
            &[
                ("rootfs", "rootfs.img", &rootfs),
                ("kernel", "vmlinuz", &kernel),
            ],
        );
        let (meta, inputs) = slate::bundle::from_build_dir(dir.path()).unwrap();
        let mut out = Vec::new();
        let mut spool = std::io::Cursor::new(Vec::new());
        let opts = WriteOptions {
            chunk_size: 64 * 1024,
            ..Default::default()
        };
        write_bundle(
            &mut out,
            &mut spool,
            &meta,
            &inputs,
            &[key()],
            &opts,
            |_| {},
        )
        .unwrap();
        Sample {
            bundle: out,
            artifacts: vec![rootfs, kernel],
        }
    })
}

fn key() -> SecretKey {
    SecretKey::from_seed(&[42; 32])
}

fn trusted() -> TrustedKeys {
    TrustedKeys::new([key().public()], 1).unwrap()
}

/// Reads everything; returns the artifacts if the bundle was accepted.
fn read_all(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, BundleError> {
    let mut r = open(bytes, &trusted())?;
    r.set_workers(2);
    let mut out = vec![];
    while let Some(a) = r.next_artifact()? {
        let mut c = std::io::Cursor::new(Vec::new());
        r.copy_artifact(&mut c, Holes::WriteZeros, |_| {})?;
        out.push((a.name, c.into_inner()));
    }
    r.finish()?;
    Ok(out)
}

#[derive(Debug, Clone)]
enum Damage {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Overwrite(usize, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(o, b)| Damage::Flip(o, b)),
        any::<usize>().prop_map(Damage::Truncate),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..64)
        )
            .prop_map(|(o, v)| Damage::Insert(o, v)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..64)
        )
            .prop_map(|(o, v)| Damage::Overwrite(o, v)),
    ]
}

fn apply(b: &mut Vec<u8>, d: &Damage) {
    let n = b.len();
    match d {
        Damage::Flip(o, bit) => b[o % n] ^= 1 << bit,
        Damage::Truncate(o) => b.truncate(o % n),
        Damage::Insert(o, v) => {
            let at = o % n;
            b.splice(at..at, v.iter().copied());
        }
        Damage::Overwrite(o, v) => {
            let at = o % n;
            for (i, x) in v.iter().enumerate() {
                if at + i < n {
                    b[at + i] = *x;
                }
            }
        }
    }
}

/// Whatever is accepted must be the signed content.
fn check_accepted(got: &[(String, Vec<u8>)]) {
    let s = sample();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1, s.artifacts[0]);
    assert_eq!(got[1].1, s.artifacts[1]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn damaged_bundles_never_panic_nor_pass_altered_data(ds in proptest::collection::vec(damage(), 1..4)) {
        let mut b = sample().bundle.clone();
        for d in &ds {
            apply(&mut b, d);
        }
        if let Ok(got) = read_all(&b) {
            check_accepted(&got);
        }
        let _ = slate::bundle::read_head_unverified(&b[..]);
    }

    #[test]
    fn resigned_manifest_edits_never_panic(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        // Edit the manifest bytes, then sign them, keeping the payload.
        let s = sample();
        let l = Layout::parse(&s.bundle);
        let mut m = s.bundle[l.manifest_range()].to_vec();
        for (o, v) in &edits {
            let at = o % m.len();
            // Mostly digits and structure characters, so edits stay near-valid JSON.
            m[at] = b"0123456789,:{}[]\"a9"[(*v as usize) % 19];
        }
        let payload = &s.bundle[l.payload_offset()..];
        let r = key().sign_record(&m).encode();
        let header_len = Manifest::parse(&m).map(|x| x.payload_len()).unwrap_or(payload.len() as u64);
        let b = assemble_with(&m, &[r], payload, header_len);
        if let Ok(got) = read_all(&b) {
            // Edits to signed fields such as `created` are legitimate; what
            // comes out must still match the (edited) signed digests.
            let parsed = Manifest::parse(&m).unwrap();
            for (a, (name, data)) in parsed.artifacts.iter().zip(&got) {
                prop_assert_eq!(&a.name, name);
                prop_assert_eq!(a.sha256.to_string(), sha256_hex(data));
            }
        }
    }
}

#[test]
fn regression_corpus() {
    // Inputs that once needed care: kept as fixed cases.
    let s = sample();
    let l = Layout::parse(&s.bundle);
    // 1. Only the header.
    assert!(read_all(&s.bundle[..40]).is_err());
    // 2. A manifest length pointing past the end of the data.
    let mut b = s.bundle.clone();
    b[16..20].copy_from_slice(&((s.bundle.len() as u32) * 2).to_le_bytes());
    fix_crc(&mut b);
    assert!(read_all(&b).is_err());
    // 3. Signature records swapped for payload bytes.
    let mut b = s.bundle[..l.signatures_offset()].to_vec();
    b.extend_from_slice(&s.bundle[l.payload_offset()..]);
    assert!(read_all(&b).is_err());
}
