//! `slate verity` against cryptsetup's `veritysetup` (issue 13, item 1):
//! the hash tree is byte for byte the one `veritysetup format` writes for the
//! same salt and UUID, with and without the superblock, at the sizes where
//! the tree's shape changes; `veritysetup verify` accepts the image with the
//! root hash slate reports and rejects it after one flipped byte of data or
//! of the tree; the default salt makes the output reproducible.

mod images;

use images::shared::{documented_json_fields, json_fields};
use images::{run_ok, skip_without, slate};
use std::path::{Path, PathBuf};
use std::process::Command;

const UUID: &str = "01234567-89ab-cdef-0123-456789abcdef";

/// `blocks` 4 KiB blocks of pseudo-random bytes (no two blocks alike).
fn image(dir: &Path, name: &str, blocks: u64) -> PathBuf {
    let mut x = blocks.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let bytes: Vec<u8> = (0..blocks * 4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// `slate verity DATA HASH ARGS --json`.
fn slate_verity(data: &Path, hash: &Path, args: &[&str]) -> serde_json::Value {
    let o = run_ok(
        slate()
            .arg("verity")
            .arg(data)
            .arg(hash)
            .args(args)
            .arg("--json"),
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `veritysetup ARGS`: its exit status and output.
fn veritysetup(args: &[&dyn AsRef<std::ffi::OsStr>]) -> (bool, String) {
    let mut c = Command::new("veritysetup");
    for a in args {
        c.arg(a);
    }
    let o = c.output().expect("running veritysetup");
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    (o.status.success(), text)
}

fn flip(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    f.write_all_at(&[b[0] ^ 0x01], offset).unwrap();
}

#[test]
fn trees_are_the_ones_veritysetup_writes() {
    let test = "trees_are_the_ones_veritysetup_writes";
    if skip_without(test, &["veritysetup"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    // One block (no tree), one hash block, a second level, a third.
    for blocks in [1u64, 2, 128, 129, 300, 128 * 128 + 1] {
        let data = image(d.path(), &format!("d{blocks}.img"), blocks);
        for superblock in [true, false] {
            let (ours, theirs) = (d.path().join("ours"), d.path().join("theirs"));
            let _ = std::fs::remove_file(&ours);
            let _ = std::fs::remove_file(&theirs);
            let mut args = vec!["--salt", "00112233"];
            if superblock {
                args.extend(["--uuid", UUID]);
            } else {
                args.push("--no-superblock");
            }
            let v = slate_verity(&data, &ours, &args);
            let mut vs: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"format", &data, &theirs];
            for a in &args {
                vs.push(a);
            }
            let (ok, out) = veritysetup(&vs);
            assert!(ok, "veritysetup format: {out}");
            let root = v["root_hash"].as_str().unwrap();
            assert!(
                out.contains(&format!("Root hash:      \t{root}")),
                "{blocks} blocks, superblock {superblock}: ours {root}, veritysetup:\n{out}"
            );
            // veritysetup writes nothing for one block without a superblock.
            let bytes = |p: &Path| std::fs::read(p).unwrap_or_default();
            let (a, b) = (bytes(&ours), bytes(&theirs));
            assert!(
                a == b,
                "{blocks} blocks, superblock {superblock}: the hash files differ ({} and {} bytes)",
                a.len(),
                b.len()
            );
            assert_eq!(v["hash_len"], std::fs::metadata(&ours).unwrap().len());
        }
    }
}

#[test]
fn veritysetup_verify_accepts_and_catches_one_flipped_byte() {
    let test = "veritysetup_verify_accepts_and_catches_one_flipped_byte";
    if skip_without(test, &["veritysetup"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let data = image(d.path(), "data.img", 1000);
    let hash = d.path().join("hash.img");
    let v = slate_verity(&data, &hash, &[]);
    let root = v["root_hash"].as_str().unwrap().to_string();
    let verify = || veritysetup(&[&"verify", &data, &hash, &root]);
    let (ok, out) = verify();
    assert!(ok, "veritysetup verify refused slate's tree: {out}");
    // One byte of data, then one byte of the lowest level of the tree.
    flip(&data, 777 * 4096 + 5);
    let (ok, out) = verify();
    assert!(!ok, "a flipped data byte went unnoticed: {out}");
    flip(&data, 777 * 4096 + 5);
    assert!(verify().0, "restored");
    let tree_end = v["hash_len"].as_u64().unwrap();
    flip(&hash, tree_end - 4096 + 40);
    let (ok, out) = verify();
    assert!(!ok, "a flipped tree byte went unnoticed: {out}");
    // Without a superblock veritysetup needs the parameters, as the kernel does.
    let bare = d.path().join("bare.img");
    flip(&hash, tree_end - 4096 + 40);
    let salt = v["salt"].as_str().unwrap().to_string();
    let nv = slate_verity(&data, &bare, &["--no-superblock", "--salt", &salt]);
    assert_eq!(nv["root_hash"], v["root_hash"]);
    let (ok, out) = veritysetup(&[
        &"verify",
        &"--no-superblock",
        &"--salt",
        &salt,
        &"--data-blocks",
        &"1000",
        &data,
        &bare,
        &root,
    ]);
    assert!(ok, "{out}");
}

#[test]
fn the_default_salt_makes_the_tree_reproducible() {
    let d = tempfile::tempdir().unwrap();
    let data = image(d.path(), "data.img", 50);
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    let va = slate_verity(&data, &a, &[]);
    let vb = slate_verity(&data, &b, &[]);
    assert_eq!(va, vb);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // The salt is the image's SHA-256, checked with coreutils.
    let o = run_ok(Command::new("sha256sum").arg(&data));
    let sum = String::from_utf8_lossy(&o.stdout);
    assert_eq!(va["salt"], sum.split_whitespace().next().unwrap());
    assert_eq!(va["data_blocks"], 50);
    assert_eq!(json_fields(&va), documented_json_fields("verity"), "{va}");
    assert_eq!(va["tree_offset"], 4096);
    // Another image, another salt.
    let other = image(d.path(), "other.img", 51);
    let vo = slate_verity(&other, &d.path().join("o"), &[]);
    assert_ne!(vo["salt"], va["salt"]);
}

#[test]
fn bad_input_is_one_line_and_leaves_no_output() {
    let d = tempfile::tempdir().unwrap();
    let odd = d.path().join("odd.img");
    std::fs::write(&odd, vec![1u8; 5000]).unwrap();
    let out = d.path().join("hash.img");
    let data = image(d.path(), "data.img", 3);
    for (input, args, needle) in [
        (
            &odd,
            vec![],
            "odd.img is 5000 bytes, not a whole number of 4096-byte blocks",
        ),
        (&data, vec!["--salt", "xyz"], "--salt \"xyz\" is not hex"),
        (
            &data,
            vec!["--uuid", "nope"],
            "--uuid \"nope\" is not a UUID",
        ),
    ] {
        let o = slate()
            .arg("verity")
            .arg(input)
            .arg(&out)
            .args(&args)
            .output()
            .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(!out.exists(), "nothing written");
    }
}
