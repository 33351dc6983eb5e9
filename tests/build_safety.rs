//! Issue 11: `slate build` is safe in a user's hands. Each test reproduces a
//! problem a new user hit and checks the safe behaviour: one error line
//! naming the file and field, exit code 3 (invalid input), nothing written
//! and nothing downloaded (the package cache stays empty).

mod images;

use images::Recipe;
use std::path::{Path, PathBuf};
use std::process::Command;

const INVALID_INPUT: i32 = 3;

struct Setup {
    dir: tempfile::TempDir,
    public: PathBuf,
    private: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = images::keygen(dir.path(), "dev");
    Setup {
        dir,
        public,
        private,
    }
}

impl Setup {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A slate with a private, empty package cache.
    fn slate(&self) -> Command {
        let mut c = images::slate();
        c.env("SLATE_CACHE_DIR", self.path().join("cache"));
        c
    }

    fn write_recipe(&self, recipe: &Recipe) -> PathBuf {
        let p = self.path().join("r.toml");
        std::fs::write(&p, recipe.toml()).unwrap();
        p
    }

    /// Builds `recipe` expecting refusal; returns the error line.
    fn refused(&self, recipe: &Recipe, extra: &[&str]) -> String {
        let r = self.write_recipe(recipe);
        let out = self
            .slate()
            .arg("build")
            .arg(&r)
            .arg("--out-dir")
            .arg(self.path().join("out"))
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(INVALID_INPUT), "{err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.contains("warning")).collect();
        assert_eq!(lines.len(), 1, "not one error line: {err}");
        assert!(lines[0].starts_with("slate: error: "), "{err}");
        self.assert_nothing_written();
        lines[0].to_string()
    }

    /// No download happened, no lock, no output, no temp directories.
    fn assert_nothing_written(&self) {
        let cache = self.path().join("cache");
        let debs = cache.join("debs");
        assert!(
            !debs.exists() || std::fs::read_dir(&debs).unwrap().next().is_none(),
            "packages were downloaded before the input check"
        );
        assert!(!self.path().join("r.lock").exists(), "a lock was written");
        for e in std::fs::read_dir(self.path()).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with('.'), "left behind: {name}");
            assert_ne!(name, "out", "an output directory was created");
        }
    }
}

fn counter(s: &Setup) -> Recipe {
    Recipe::counter("1.0.0", &s.public)
}

#[test]
fn out_dir_with_other_files_is_not_deleted() {
    let s = setup();
    let home = s.path().join("images");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(home.join("thesis.tex"), "years of work").unwrap();
    let r = s.write_recipe(&counter(&s));
    let out = s
        .slate()
        .arg("build")
        .arg(&r)
        .arg("--out-dir")
        .arg(&home)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(INVALID_INPUT), "{err}");
    assert!(
        err.contains("images") && err.contains("thesis.tex") && err.contains("did not write"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(home.join("thesis.tex")).unwrap(),
        "years of work"
    );
    // `--out-dir .` in a directory with the recipe in it: refused too.
    let out = s
        .slate()
        .current_dir(s.path())
        .args(["build", "r.toml", "--out-dir", "."])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(INVALID_INPUT), "{err}");
    assert!(err.contains("dev.key"), "{err}");
    assert!(s.path().join("r.toml").exists() && s.path().join("dev.key").exists());
    for e in std::fs::read_dir(s.path()).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "left behind: {name}");
    }
}

#[test]
fn private_key_as_trusted_key_is_refused() {
    let s = setup();
    let mut r = counter(&s);
    r.keys = vec![s.private.clone()];
    let e = s.refused(&r, &[]);
    assert!(e.contains("r.toml:"), "{e}");
    assert!(e.contains("update.public_keys[0]"), "{e}");
    assert!(e.contains("is a private signing key"), "{e}");
    assert!(e.contains("dev.pub"), "{e}");
    // Garbage and missing keys too.
    let junk = s.path().join("junk.pub");
    std::fs::write(&junk, "not a key\n").unwrap();
    r.keys = vec![s.public.clone(), junk];
    let e = s.refused(&r, &[]);
    assert!(
        e.contains("update.public_keys[1]") && e.contains("not an Ed25519 public key"),
        "{e}"
    );
}

#[test]
fn no_update_keys_warns_unless_disabled() {
    let s = setup();
    // Stop the build right after the input checks with a missing file.
    let missing = "\n[[rootfs.files]]\nsrc = \"nope.txt\"\ndst = \"/etc/x\"\n";
    let mut r = counter(&s);
    r.keys.clear();
    r.extra = missing.into();
    let text = r.toml();
    let path = s.path().join("r.toml");
    let run = |text: &str| {
        std::fs::write(&path, text).unwrap();
        let out = s
            .slate()
            .arg("build")
            .arg(&path)
            .arg("--out-dir")
            .arg(s.path().join("out"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&text);
    assert!(
        err.contains("warning") && err.contains("can never install an update"),
        "{err}"
    );
    let err = run(&text.replace("[update]\n", "[update]\nenabled = false\n"));
    assert!(!err.contains("warning"), "{err}");
    assert!(err.contains("rootfs.files[0].src"), "{err}");
    // enabled = false with keys is a contradiction.
    let mut r = counter(&s);
    r.extra = String::new();
    let err = run(&r
        .toml()
        .replace("[update]\n", "[update]\nenabled = false\n"));
    assert!(err.contains("update.enabled"), "{err}");
}

#[test]
fn slate_files_cannot_be_replaced_by_recipe_files() {
    let s = setup();
    for dst in [
        "/usr/bin/slate-agent",
        "/etc/inittab",
        "/etc/slate/keys/0.pub",
        "/etc/slate/agent.json",
        "/sbin/init",
    ] {
        let mut r = counter(&s);
        r.extra = format!("[[rootfs.files]]\ndst = \"{dst}\"\ncontent = \"x\"\n");
        let e = s.refused(&r, &[]);
        assert!(e.contains("rootfs.files[0].dst"), "{dst}: {e}");
        assert!(
            e.contains(dst) && e.contains("placed by slate"),
            "{dst}: {e}"
        );
    }
    // Other paths in /etc are the recipe's to set.
    let mut r = counter(&s);
    r.extra = "[[rootfs.files]]\ndst = \"/etc/slate-app.conf\"\ncontent = \"x\"\n\
               [[rootfs.files]]\nsrc = \"missing\"\ndst = \"/etc/y\"\n"
        .into();
    let e = s.refused(&r, &[]);
    assert!(e.contains("rootfs.files[1].src"), "{e}");
}

#[test]
fn kernel_path_must_be_a_kernel() {
    let s = setup();
    let hostname = s.path().join("hostname");
    std::fs::write(&hostname, "myhost\n").unwrap();
    let r = counter(&s);
    let text = r.toml().replace(
        "package = \"linux-image-cloud-amd64\"",
        &format!("path = {:?}", hostname.display().to_string()),
    );
    let path = s.path().join("r.toml");
    std::fs::write(&path, text).unwrap();
    let out = s
        .slate()
        .arg("build")
        .arg(&path)
        .arg("--out-dir")
        .arg(s.path().join("out"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(INVALID_INPUT), "{err}");
    assert!(err.contains("kernel.path"), "{err}");
    assert!(err.contains("is not a Linux kernel image"), "{err}");
    s.assert_nothing_written();
}

#[test]
fn missing_file_sources_fail_before_any_download() {
    let s = setup();
    let mut r = counter(&s);
    r.extra = format!(
        "{}\n[[rootfs.files]]\nsrc = \"app.conf\"\ndst = \"/etc/app.conf\"\n",
        r.extra
    );
    let e = s.refused(&r, &[]);
    assert!(e.contains("rootfs.files[2].src"), "{e}");
    assert!(e.contains("app.conf") && e.contains("No such file"), "{e}");
    assert_eq!(e.matches("No such file").count(), 1, "{e}");
}

/// A full build (needs the Debian archive): into `.` when it is empty, again
/// over its own output; a build that fails after downloading leaves the
/// output and the lock as they were; the lock is world-readable.
#[test]
fn output_and_lock_change_only_on_success() {
    if !images::have_apt("output_and_lock_change_only_on_success") {
        return;
    }
    let s = setup();
    let work = s.path().join("w");
    std::fs::create_dir(&work).unwrap();
    let recipe = s.path().join("r.toml");
    std::fs::write(&recipe, counter(&s).toml()).unwrap();
    let build = |extra: &[&str]| {
        images::slate()
            .current_dir(&work)
            .arg("build")
            .arg(&recipe)
            .args(["--out-dir", "."])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = build(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(work.join("disk.img").exists() && work.join(".slate-build").exists());
    let lock = s.path().join("r.lock");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&lock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o044, 0o044, "lock mode {mode:o}");
    // Again over its own output.
    let out = build(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Fails after resolving and unpacking: a root filesystem too small.
    let disk = std::fs::read(work.join("disk.img")).unwrap();
    std::fs::remove_file(&lock).unwrap();
    std::fs::write(
        &recipe,
        counter(&s)
            .toml()
            .replace("[rootfs]\n", "[rootfs]\nsize = \"2M\"\n"),
    )
    .unwrap();
    let out = build(&["--update-lock"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(INVALID_INPUT), "{err}");
    assert!(err.contains("rootfs.size"), "{err}");
    assert!(!lock.exists(), "a failed build wrote the lock");
    assert_eq!(std::fs::read(work.join("disk.img")).unwrap(), disk);
    for dir in [s.path(), work.as_path()] {
        for e in std::fs::read_dir(dir).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with('.') || name == ".slate-build",
                "left behind in {}: {name}",
                dir.display()
            );
        }
    }
}
