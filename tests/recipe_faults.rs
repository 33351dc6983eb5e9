//! Bad recipe inputs through `slate build`: each fails with one line naming
//! the recipe file and line and the field (or the object: a host file, a
//! URL), a nonzero exit, and nothing in or beside the output directory.
//! (Failure catalogue: docs/reliability.md; more cases in
//! tests/image_build.rs `bad_recipes_fail_with_one_line_naming_the_field`.)

mod images;

use images::{Recipe, keygen, slate};
use std::path::Path;

/// Writes `<dir>/<file>.toml` and builds it; expects failure. Returns the
/// error line after checking it is the only one, that the exit code is
/// nonzero and that no output (or hidden work directory) was left.
fn failing_build(dir: &Path, file: &str, text: &str) -> String {
    let recipe = dir.join(format!("{file}.toml"));
    std::fs::write(&recipe, text).unwrap();
    // Reuse a lock of the same packages when there is one (saves a resolve).
    let shared = dir.join("shared.lock");
    let lock = dir.join(format!("{file}.lock"));
    if shared.exists() && !lock.exists() && !text.contains("[apt]") {
        std::fs::copy(&shared, &lock).unwrap();
    }
    let out_dir = dir.join("out").join(file);
    let before = images_listing(dir);
    let out = slate()
        .arg("build")
        .arg(&recipe)
        .arg("--out-dir")
        .arg(&out_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "build of {file} succeeded:\n{stderr}"
    );
    assert_ne!(
        out.status.code(),
        Some(101),
        "{file}: slate panicked:\n{stderr}"
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("slate: error:"))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "{file}: expected one error line:\n{stderr}"
    );
    assert!(
        !stderr
            .lines()
            .any(|l| l.starts_with("  ") || l.contains("Caused by")),
        "{file}: more than one line of error:\n{stderr}"
    );
    assert!(!out_dir.exists(), "{file}: output left behind");
    if let Ok(entries) = std::fs::read_dir(dir.join("out")) {
        let left: Vec<_> = entries.map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "{file}: left in out/: {left:?}");
    }
    let after = images_listing(dir);
    let new: Vec<_> = after
        .iter()
        // out/ is the output's parent, checked empty above.
        .filter(|n| !before.contains(n) && !n.ends_with(".lock") && *n != "out")
        .collect();
    assert!(new.is_empty(), "{file}: files appeared: {new:?}");
    if lock.exists() && !shared.exists() && !text.contains("[apt]") {
        std::fs::copy(&lock, &shared).unwrap();
    }
    eprintln!("{file}: {}", errors[0]);
    errors[0].to_string()
}

fn images_listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn base(dir: &Path) -> Recipe {
    let (_, public) = keygen(dir, "k");
    Recipe::counter("1.0.0", &public)
}

/// Checked when the recipe is read: no packages needed.
#[test]
fn wrong_types_unknown_keys_and_bad_destinations() {
    let d = tempfile::tempdir().unwrap();
    let good = base(d.path()).toml();
    let line_of = |text: &str, needle: &str| {
        text.lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .unwrap()
    };
    let cases: Vec<(&str, String, String)> = vec![
        (
            "type-slot",
            good.replace("slot = \"128M\"", "slot = 128"),
            "disk.slot: invalid type: integer `128`, expected a string".into(),
        ),
        (
            "type-tries",
            good.replace("tries = 2", "tries = \"two\""),
            "update.tries: invalid type: string \"two\"".into(),
        ),
        (
            "type-packages",
            good.replace(
                "packages = [\"busybox-static\"]",
                "packages = \"busybox-static\"",
            ),
            "rootfs.packages: invalid type: string \"busybox-static\", expected a sequence".into(),
        ),
        (
            "type-wait",
            good.replace("wait = true", "wait = \"yes\""),
            "service[0].wait: invalid type: string \"yes\", expected a boolean".into(),
        ),
        (
            "unknown-key",
            good.replace("[rootfs]\npackages", "[rootfs]\npakages"),
            "rootfs.pakages: unknown field `pakages`".into(),
        ),
        (
            "unknown-table",
            format!("{good}\n[imagee]\nname = \"x\"\n"),
            "unknown field `imagee`".into(),
        ),
    ];
    for (file, text, want) in cases {
        let line = text
            .lines()
            .position(|l| {
                l.contains("slot = 128")
                    || l.contains("\"two\"")
                    || l.starts_with("packages = \"")
                    || l.contains("\"yes\"")
                    || l.starts_with("pakages")
                    || l.starts_with("[imagee]")
            })
            .unwrap()
            + 1;
        let e = failing_build(d.path(), file, &text);
        let at = format!("{file}.toml:{line}: ");
        assert!(e.contains(&at), "{e:?} lacks {at:?}");
        assert!(e.contains(&want), "{e:?} lacks {want:?}");
    }

    // Destinations: `..`, relative, the root itself.
    for (i, dst) in ["/etc/../../x", "../x", "etc/x", "/", "/usr/.."]
        .iter()
        .enumerate()
    {
        let text = format!("{good}\n[[rootfs.files]]\ndst = {dst:?}\ncontent = \"x\"\n");
        let file = format!("dst-{i}");
        let e = failing_build(d.path(), &file, &text);
        let line = line_of(&text, &format!("dst = {dst:?}"));
        let want =
            format!("{file}.toml:{line}: rootfs.files[2].dst: must be an absolute path below /");
        assert!(e.contains(&want), "{dst}: {e:?} lacks {want:?}");
    }
}

/// Issue 10: `[network]`, `[debug]` and `[state]`, through `slate build`:
/// one line naming the file, line and field (and a key file's own line).
#[test]
fn network_debug_and_state_faults() {
    let d = tempfile::tempdir().unwrap();
    let good = base(d.path()).toml();
    let eth0 = "[[network.interface]]\nname = \"eth0\"\ndhcp = true\n";
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJld8tjnakHlA8V8LnW//Z1AnHrwVJeagaSV5ElYeGZo t";
    std::fs::write(
        d.path().join("team.pub"),
        format!("# team\n{key}\nssh-ed25519 AAAA x\n"),
    )
    .unwrap();
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "net-address",
            "[[network.interface]]\nname = \"eth0\"\naddress = \"10.0.0.2\"\n".into(),
            "address = ",
            "network.interface[0].address: invalid address \"10.0.0.2\"",
        ),
        (
            "net-ntp-var",
            format!("[network]\nntp = [\"pool.ntp.org\"]\n{eth0}"),
            "ntp = ",
            "network.ntp: openntpd keeps its drift file",
        ),
        (
            "debug-key-missing",
            format!("{eth0}[debug]\nssh_authorized_keys = [\"nope.pub\"]\n"),
            "ssh_authorized_keys",
            "debug.ssh_authorized_keys[0]: cannot read",
        ),
        (
            "state-writable",
            "[state]\nwritable = [\"/usr/lib/x\"]\n".into(),
            "writable = ",
            "state.writable[0]: must be a path below /etc/",
        ),
    ];
    for (file, extra, needle, want) in cases {
        let text = format!("{good}\n{extra}");
        let line = text.lines().position(|l| l.starts_with(needle)).unwrap() + 1;
        let e = failing_build(d.path(), file, &text);
        let at = format!("{file}.toml:{line}: {want}");
        assert!(e.contains(&at), "{e:?} lacks {at:?}");
    }
    let e = failing_build(
        d.path(),
        "debug-key-line",
        &format!("{good}\n{eth0}[debug]\nssh_authorized_keys = [\"team.pub\"]\n"),
    );
    assert!(
        e.contains("team.pub:3: ssh-ed25519 key: the key data"),
        "{e}"
    );

    // A NIC driver the kernel does not have (known once the kernel is there).
    if images::have_apt("network_debug_and_state_faults") {
        let text = format!("{good}\n[network]\nmodules = [\"no_such_nic\"]\n{eth0}");
        let line = text
            .lines()
            .position(|l| l.starts_with("modules = [\"no_"))
            .unwrap()
            + 1;
        let e = failing_build(d.path(), "net-module", &text);
        let at = format!("net-module.toml:{line}: network.modules[0]: ");
        assert!(
            e.contains(&at) && e.contains("no_such_nic"),
            "{e:?} lacks {at:?}"
        );
    }
}

/// Checked once packages are there (they come from the archive).
#[test]
fn missing_escaping_and_changing_sources() {
    if !images::have_apt("missing_escaping_and_changing_sources") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let t = d.path();
    let good = base(t).toml();
    let with_src =
        |src: &str, dst: &str| format!("{good}\n[[rootfs.files]]\nsrc = {src:?}\ndst = {dst:?}\n");

    // A missing file.
    let text = with_src("files/absent.conf", "/etc/app.conf");
    let e = failing_build(t, "missing", &text);
    let lines: Vec<&str> = text.lines().collect();
    let header = lines
        .iter()
        .rposition(|l| *l == "[[rootfs.files]]")
        .unwrap()
        + 1;
    let line: usize = e
        .split("missing.toml:")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no line in {e:?}"));
    assert!(
        (header..header + 3).contains(&line),
        "{e} (entry at {header})"
    );
    assert!(
        e.contains("rootfs.files[2].src: cannot read ")
            && e.contains("files/absent.conf: No such file"),
        "{e}"
    );

    // Leaving the recipe's directory: `..`, an absolute symlink, a relative
    // symlink out, a directory symlink.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "host secret\n").unwrap();
    std::fs::create_dir_all(t.join("files")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", t.join("files/abs-link")).unwrap();
    std::os::unix::fs::symlink(outside.path(), t.join("files/dir-link")).unwrap();
    let rel_out = pathdiff(outside.path(), &t.join("files"));
    std::os::unix::fs::symlink(rel_out.join("secret"), t.join("files/rel-link")).unwrap();
    let up = pathdiff(&outside.path().join("secret"), t);
    for (i, src) in [
        up.display().to_string(),
        "files/abs-link".into(),
        "files/rel-link".into(),
        "files/dir-link/secret".into(),
    ]
    .iter()
    .enumerate()
    {
        let file = format!("escape-{i}");
        let e = failing_build(t, &file, &with_src(src, "/etc/app.conf"));
        assert!(
            e.contains(&format!("{file}.toml:"))
                && e.contains("rootfs.files[2]:")
                && e.contains("outside the recipe's directory"),
            "{src}: {e}"
        );
    }
    // ... while a symlink that stays inside, and an absolute src, are fine
    // (checked by building: see large_files.rs for a build with a src).

    // A destination that would go through a symlink of the image
    // (/sbin/init -> /bin/busybox, an absolute link).
    std::fs::write(t.join("files/app.conf"), "x\n").unwrap();
    let e = failing_build(
        t,
        "through-link",
        &with_src("files/app.conf", "/sbin/init/x"),
    );
    assert!(
        e.contains("through-link.toml:") && e.contains("rootfs.files[2]"),
        "{e}"
    );
    assert!(e.contains("/sbin/init"), "{e}");

    // A source that is not what it was when checked: this sysfs file says
    // it has 4096 bytes and yields a few, as a file truncated between the
    // check and the copy would.
    let sys = "/sys/devices/system/cpu/online";
    if std::fs::metadata(sys).is_ok_and(|m| m.len() == 4096) {
        let e = failing_build(t, "shrinks", &with_src(sys, "/etc/online"));
        assert!(e.contains(sys), "{e}");
        assert!(e.contains("shr") || e.contains("shorter"), "{e}");
    } else {
        images::skipped(
            "source_shrinks",
            "no 4096-byte /sys/devices/system/cpu/online",
        );
    }
}

/// `to` relative to directory `from` (both absolute).
fn pathdiff(to: &Path, from: &Path) -> std::path::PathBuf {
    let to: Vec<_> = to.components().collect();
    let from: Vec<_> = from.components().collect();
    let common = to.iter().zip(&from).take_while(|(a, b)| a == b).count();
    let mut p = std::path::PathBuf::new();
    for _ in common..from.len() {
        p.push("..");
    }
    for c in &to[common..] {
        p.push(c.as_os_str());
    }
    p
}

#[test]
fn slot_too_small_names_both_sizes() {
    if !images::have_apt("slot_too_small_names_both_sizes") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let small = Recipe {
        slot: "8M".into(),
        ..base(d.path())
    };
    let text = small.toml();
    let e = failing_build(d.path(), "small", &text);
    let line = text.lines().position(|l| l.starts_with("slot = ")).unwrap() + 1;
    assert!(
        e.contains(&format!("small.toml:{line}: disk.slot: ")),
        "{e}"
    );
    // "the root filesystem needs N MiB (M MiB at least) but a slot holds 8 MiB"
    let needs: u64 = e
        .split("needs ")
        .nth(1)
        .and_then(|r| r.split(" MiB").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no size needed in {e:?}"));
    assert!(needs > 8, "{e}");
    assert!(e.ends_with("but a slot holds 8 MiB"), "{e}");
}

#[test]
fn unreachable_mirror_is_named() {
    if !images::have_apt("unreachable_mirror_is_named") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    // A port on 127.0.0.1 that nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mirror = format!("http://127.0.0.1:{port}/debian");
    let text = format!(
        "{}\n[apt]\nmirror = {mirror:?}\nsecurity_mirror = \"\"\n",
        base(d.path()).toml()
    );
    let e = failing_build(d.path(), "mirror", &text);
    assert!(e.contains(&mirror), "{e}");
    assert!(
        e.contains("Connection refused") || e.contains("Could not connect"),
        "{e}"
    );
    assert!(!e.contains("unknown package"), "{e}");
}
