//! Locks that survive the archive (issue 10), against a real signed apt
//! repository served over HTTP on 127.0.0.1 (tests/fixtures/local-archive.gen.sh):
//! a version disappears from the archive, the mirror is unreachable, a
//! package's bytes do not match the lock, and an offline build from a vendor
//! directory is byte-identical to the online one.
//!
//! The boot chain's packages (kernel, busybox, systemd-boot) are Debian's own,
//! taken once from the public archive with `slate vendor` (whatever version it
//! has that day) and re-packed without their dependency fields; the package
//! whose versions change, `slate-test-app`, is built by the fixture script.

mod images;

use images::{cache_dir, keygen, run_ok, slate};
use std::path::{Path, PathBuf};
use std::process::Command;

const GEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/local-archive.gen.sh"
);

use images::shared as common;
use images::shared::pyhttp::PyHttp;

fn fixture(args: &[&dyn AsRef<std::ffi::OsStr>]) {
    let mut c = Command::new(GEN);
    for a in args {
        c.arg(a);
    }
    run_ok(&mut c);
}

/// Debian's boot-chain packages, re-packed without dependencies.
fn seed_debs(work: &Path) -> (Vec<PathBuf>, String) {
    let seed = work.join("seed");
    std::fs::create_dir_all(seed.join("recipes")).unwrap();
    let (_, public) = keygen(work, "seedkey");
    let recipe = seed.join("recipes/seed.toml");
    std::fs::write(
        &recipe,
        format!(
            "[image]\nname = \"seed\"\nversion = \"1\"\n[kernel]\npackage = \"linux-image-cloud-amd64\"\n\
             [rootfs]\npackages = [\"busybox-static\"]\n[update]\npublic_keys = [{:?}]\n",
            public.display().to_string()
        ),
    )
    .unwrap();
    run_ok(slate().arg("vendor").arg(&recipe).arg(seed.join("vendor")));
    let mut debs = Vec::new();
    let mut kernel = String::new();
    let index = std::fs::read_to_string(seed.join("vendor/index.toml")).unwrap();
    let index: toml::Table = toml::from_str(&index).unwrap();
    for p in index["package"].as_array().unwrap() {
        let file = p["file"].as_str().unwrap();
        let name = p["name"].as_str().unwrap();
        if name.starts_with("linux-image-") {
            kernel = name.to_string();
        }
        let out = work.join("debs").join(format!("{name}.deb"));
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        if !debs.contains(&out) {
            fixture(&[&"strip", &seed.join("vendor").join(file), &out]);
            debs.push(out);
        }
    }
    (debs, kernel)
}

struct Fixture {
    work: PathBuf,
    srv: PathBuf,
    gnupg: PathBuf,
    debs: Vec<PathBuf>,
    recipe: PathBuf,
}

impl Fixture {
    /// Publishes `debs` plus slate-test-app `app_version` as the archive.
    fn publish(&self, app_version: &str) {
        let app = self.work.join(format!("app-{app_version}.deb"));
        fixture(&[&"app", &app, &app_version]);
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"repo", &self.srv, &self.gnupg];
        for d in &self.debs {
            args.push(d);
        }
        args.push(&app);
        fixture(&args);
    }

    fn build(&self, cache: &str, out: &str, extra: &[&str]) -> std::process::Output {
        let mut c = slate();
        c.env("SLATE_CACHE_DIR", self.work.join(cache))
            .arg("build")
            .arg(&self.recipe)
            .arg("--out-dir")
            .arg(self.work.join(out))
            .args(extra);
        c.output().unwrap()
    }

    fn lock(&self) -> String {
        std::fs::read_to_string(self.recipe.with_extension("lock")).unwrap()
    }
}

fn ok(o: &std::process::Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn same_file(a: &Path, b: &Path) {
    let st = Command::new("cmp").arg(a).arg(b).status().unwrap();
    assert!(st.success(), "{} and {} differ", a.display(), b.display());
}

/// Regression for issue 10: a lock stays buildable after the archive moves on.
#[test]
fn issue_10_locks_survive_the_archive() {
    if common::skip_without(
        "issue_10_locks_survive_the_archive",
        &[
            "apt-get",
            "apt-ftparchive",
            "gpg",
            "dpkg-deb",
            "python3",
            "cmp",
        ],
    ) || !images::have_apt("issue_10_locks_survive_the_archive")
    {
        return;
    }
    let _ = cache_dir();
    let d = tempfile::tempdir().unwrap();
    let work = d.path().to_path_buf();
    let (debs, kernel) = seed_debs(&work);
    let gnupg = work.join("gnupg");
    let keyring = work.join("archive.gpg");
    fixture(&[&"key", &gnupg, &keyring]);
    let srv = work.join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    let recipes = work.join("recipes");
    std::fs::create_dir_all(&recipes).unwrap();
    let (_, public) = keygen(&work, "k");
    let f = Fixture {
        work: work.clone(),
        srv: srv.clone(),
        gnupg,
        debs,
        recipe: recipes.join("app.toml"),
    };
    f.publish("1.0");
    let server = PyHttp::start(&srv);
    let port = server.port();
    std::fs::write(
        &f.recipe,
        format!(
            r#"[image]
name = "app"
version = "1.0.0"

[kernel]
package = "{kernel}"
modules = ["virtio_pci", "virtio_blk"]

[rootfs]
packages = ["slate-test-app"]

[health]
# The locked version (which later vanishes from the archive) is in the image.
command = "grep -qx 'slate-test-app 1.0' /usr/share/slate-test-app/version"

[update]
public_keys = [{public:?}]

[apt]
mirror = "http://127.0.0.1:{port}/debian"
security_mirror = ""
keyring = {keyring:?}
snapshot_mirror = "http://127.0.0.1:{port}/snapshot"
"#,
            public = public.display().to_string(),
            keyring = keyring.display().to_string(),
        ),
    )
    .unwrap();

    // Online build from the local archive: the lock pins slate-test-app 1.0
    // with its path, and records the archive's Release date as the snapshot.
    let o = f.build("cache1", "online", &[]);
    ok(&o, "online build");
    let lock = f.lock();
    assert!(
        lock.contains("name = \"slate-test-app\"\nversion = \"1.0\""),
        "{lock}"
    );
    assert!(
        lock.contains("path = \"pool/main/s/slate-test-app/slate-test-app_1.0_amd64.deb\""),
        "{lock}"
    );
    let ts = lock
        .lines()
        .find_map(|l| l.strip_prefix("snapshot = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no snapshot in the lock:\n{lock}"))
        .to_string();
    let online = work.join("online/disk.img");

    // Vendor, then build with the archive down (server stopped), an empty
    // cache and, as root, no network namespace at all: same bytes.
    run_ok(
        slate()
            .env("SLATE_CACHE_DIR", work.join("cache1"))
            .arg("vendor")
            .arg(&f.recipe)
            .arg(work.join("vendor"))
            .arg("--locked"),
    );
    drop(server);
    let o = f.build("cache-down", "down", &["--locked"]);
    assert!(
        !o.status.success(),
        "built with the mirror down and no vendor dir"
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one error line:\n{stderr}");
    let e = errors[0];
    for want in [
        "app.lock: cannot obtain ",
        "cache: not present",
        "vendor: no vendor directory given",
        &format!("archive http://127.0.0.1:{port}/debian"),
        &format!("snapshot http://127.0.0.1:{port}/snapshot/debian/{ts}"),
        "--update-lock",
        "--vendor DIR",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
    let vendor = work.join("vendor");
    let mut c = if common::is_root() && common::have("unshare") {
        let mut c = Command::new("unshare");
        c.arg("-n").arg(env!("CARGO_BIN_EXE_slate"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_slate"))
    };
    let o = c
        .env("LC_ALL", "C")
        .env("SOURCE_DATE_EPOCH", images::EPOCH)
        .env("SLATE_CACHE_DIR", work.join("cache-offline"))
        .arg("build")
        .arg(&f.recipe)
        .arg("--out-dir")
        .arg(work.join("offline"))
        .arg("--locked")
        .arg("--vendor")
        .arg(&vendor)
        .output()
        .unwrap();
    ok(&o, "offline build from the vendor dir");
    same_file(&online, &work.join("offline/disk.img"));

    // The archive moves on: 1.1 replaces 1.0, which only the snapshot keeps.
    let snap = srv.join("snapshot/debian").join(&ts);
    std::fs::create_dir_all(snap.parent().unwrap()).unwrap();
    std::fs::rename(srv.join("debian"), &snap).unwrap();
    f.publish("1.1");
    let server = PyHttp::start_on(&srv, port);
    let lock_before = f.lock();
    let o = f.build("cache2", "moved", &["--locked"]);
    ok(&o, "locked build after the archive dropped 1.0");
    assert_eq!(f.lock(), lock_before, "the lock is used as committed");
    same_file(&online, &work.join("moved/disk.img"));
    if images::have_qemu("issue_10_locks_survive_the_archive (boot)") {
        // The image built from the lock as committed boots and commits.
        run_ok(
            slate()
                .arg("qemu")
                .arg(work.join("moved/disk.img"))
                .args([
                    "--snapshot",
                    "--expect",
                    "healthy:A",
                    "--expect",
                    "committed:A",
                ])
                .args(["--timeout", "240"]),
        );
    }

    // Without the snapshot either, the error names the package, the sources
    // and both ways out; the lock is untouched.
    std::fs::rename(srv.join("snapshot"), work.join("snapshot-aside")).unwrap();
    let o = f.build("cache3", "gone", &[]);
    assert!(!o.status.success(), "built a vanished version");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("cannot obtain slate-test-app 1.0"), "{e}");
    assert!(e.contains("HTTP 404"), "{e}");
    assert!(!e.contains("cannot obtain linux-image"), "{e}");
    assert_eq!(f.lock(), lock_before);

    // A copy whose bytes differ from the lock is refused from every source.
    std::fs::rename(work.join("snapshot-aside"), srv.join("snapshot")).unwrap();
    let bad = snap.join("pool/main/s/slate-test-app/slate-test-app_1.0_amd64.deb");
    let mut bytes = std::fs::read(&bad).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&bad, &bytes).unwrap();
    let o = f.build("cache4", "tampered", &["--locked"]);
    assert!(
        !o.status.success(),
        "built from bytes that do not match the lock"
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("does not match the lock's"), "{e}");
    assert!(
        !work.join("tampered").exists(),
        "no output from a failed build"
    );

    // --update-lock moves to what the archive has now.
    let o = f.build("cache4", "updated", &["--update-lock"]);
    ok(&o, "--update-lock");
    assert!(f.lock().contains("version = \"1.1\""), "{}", f.lock());
    let o = f.build("cache4", "again", &["--locked"]);
    ok(&o, "--locked with a current lock");
    drop(server);
}
