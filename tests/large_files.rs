//! A file and a root filesystem larger than 4 GiB through `slate build`
//! (checked by e2fsck, debugfs and ext4-view), `slate bundle`, and the
//! installer path available on the host: `slate extract` of the rootfs to a
//! file and to a loop device (as root), compared with cmp. Sparse inputs
//! keep the disk use to a few MiB of data.

mod images;

use images::{Recipe, keygen, run_ok, slate};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIG: u64 = (4 << 30) + 12_345;
const MARKS: [(u64, &[u8]); 4] = [
    (0, b"head of the big file"),
    (3 << 30, b"three GiB in"),
    ((4 << 30) + 100, b"past four GiB"),
    (BIG - 4, b"tail"),
];

/// Positional reads of an image file for ext4-view.
struct Image(std::fs::File);

impl ext4_view::Ext4Read for Image {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.0.read_exact_at(dst, start_byte).map_err(|e| e.into())
    }
}

struct Loop(PathBuf);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

fn extract(bundle: &Path, public: &Path, out: &Path) -> String {
    let o = run_ok(
        slate()
            .arg("extract")
            .arg(bundle)
            .arg("--pubkey")
            .arg(public)
            .arg("-o")
            .arg(out),
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn file_and_rootfs_beyond_4_gib_through_build_bundle_and_extract() {
    if !images::have_apt("beyond_4_gib_build")
        || images::skip_without("beyond_4_gib_build", &["e2fsck", "debugfs", "cmp"])
    {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let t = d.path();
    let (key, public) = keygen(t, "k");

    // A sparse 4 GiB + 12345 byte source file with marks at both ends and
    // on either side of 4 GiB.
    let big = t.join("big.bin");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(BIG).unwrap();
    for (at, what) in MARKS {
        f.write_all_at(what, at).unwrap();
    }
    drop(f);
    let recipe = Recipe {
        slot: "5G".into(),
        extra: format!(
            "{}\n[[rootfs.files]]\nsrc = \"big.bin\"\ndst = \"/var/big.bin\"\n",
            images::COUNTER_SERVICE
        ),
        ..Recipe::counter("1.0.0", &public)
    };
    let out = images::build(t, "big", &recipe);
    let rootfs = out.join("rootfs.ext4");
    let len = std::fs::metadata(&rootfs).unwrap().len();
    assert!(len > 4 << 30, "rootfs is {len} bytes");
    let disk = out.join("disk.img");
    assert!(std::fs::metadata(&disk).unwrap().len() > 2 * len);

    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&rootfs)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let stat = run_ok(
        Command::new("debugfs")
            .arg("-R")
            .arg("stat /var/big.bin")
            .arg(&rootfs),
    );
    let stat = String::from_utf8_lossy(&stat.stdout);
    assert!(stat.contains(&format!("Size: {BIG}")), "{stat}");
    assert!(stat.contains("Type: regular"), "{stat}");
    // The bytes at each mark, read by an independent ext4 reader.
    let fs = ext4_view::Ext4::load(Box::new(Image(std::fs::File::open(&rootfs).unwrap()))).unwrap();
    let mut file = fs.open("/var/big.bin").unwrap();
    for (at, what) in MARKS {
        let mut buf = vec![0u8; what.len()];
        file.seek_to(at).unwrap();
        let mut got = 0;
        while got < buf.len() {
            let n = file.read_bytes(&mut buf[got..]).unwrap();
            assert!(n > 0, "EOF at {at}");
            got += n;
        }
        assert_eq!(buf, what, "at {at}");
    }
    drop(file);
    drop(fs);

    // The bundle: zeros are holes, so it stays small.
    let bundle = images::bundle(&out, &key, &t.join("big.slate"));
    let blen = std::fs::metadata(&bundle).unwrap().len();
    assert!(blen < 64 << 20, "bundle is {blen} bytes");

    // Installer path on the host: to a file ...
    let file_out = t.join("rootfs.out");
    let msg = extract(&bundle, &public, &file_out);
    assert!(msg.contains("read back from the file"), "{msg}");
    run_ok(Command::new("cmp").arg(&rootfs).arg(&file_out));
    std::fs::remove_file(&file_out).unwrap();

    // ... and to a loop device (a slot) that is larger and holds old bytes
    // where the rootfs has holes.
    if !images::is_root() {
        images::skipped(
            "beyond_4_gib_extract_to_loop",
            "needs root for a loop device",
        );
        return;
    }
    let backing = t.join("slot.img");
    let f = std::fs::File::create(&backing).unwrap();
    f.set_len(5 << 30).unwrap();
    for at in [1 << 20, (4 << 30) + (1 << 20), len - 4096] {
        f.write_all_at(&[0xa5; 4096], at).unwrap();
    }
    drop(f);
    let o = run_ok(
        Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&backing),
    );
    let dev = Loop(PathBuf::from(String::from_utf8(o.stdout).unwrap().trim()));
    let msg = extract(&bundle, &public, &dev.0);
    assert!(msg.contains("read back from the device"), "{msg}");
    run_ok(
        Command::new("cmp")
            .arg("-n")
            .arg(len.to_string())
            .arg(&rootfs)
            .arg(&dev.0),
    );
}
