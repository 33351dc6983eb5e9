//! Issue 10: an application's inputs. One recipe uses every kind: a local
//! .deb (whose dependency, jq, comes from the archive) run as a service by a
//! declared user, a base tarball, an OCI image layout and a `docker save`
//! archive as layers (whiteouts and an opaque whiteout), and two overlays
//! (a manifest re-owns one file, a declared owner the other tree). The
//! image's own health check proves each input is there on the running
//! device; debugfs reads the slot filesystem independently.

mod images;

use images::{keygen, run_ok, slate};
use std::path::Path;
use std::process::Command;

fn recipe(public: &Path) -> String {
    let mut r = images::Recipe::counter("1.0.0", public);
    r.name = "app-inputs".into();
    r.slot = "160M".into();
    r.health = [
        "test \"$(cat /tmp/demo-app.uid)\" = 1000",
        "grep -q true /tmp/demo-app.jq",
        "test \"$(stat -c %u:%g:%a /etc/demo/config.toml)\" = 1000:1000:640",
        "test \"$(stat -c %u:%g:%a /opt/demo/README)\" = 0:0:644",
        "test \"$(stat -c %a /opt/demo/run.sh)\" = 755",
        "test \"$(stat -c %u:%g /srv/demo/state)\" = 1000:1000",
        "test -e /opt/base/marker",
        "test -e /opt/layer/keep",
        "test ! -e /opt/layer/gone",
        "test ! -e /opt/opq/old",
        "test -e /opt/opq/new",
        "test -e /opt/docker/hello",
        "test ! -e /opt/layer/keep2",
    ]
    .join(" && ");
    r.health_timeout = "3s".into();
    r.watchdog = "150s".into();
    r.extra.push_str(
        r#"
[[user]]
name = "app"
uid = 1000

[[service]]
name = "demo"
exec = "/usr/bin/demo-app"
user = "app"
"#,
    );
    r.toml()
        .replace(
            "packages = [\"busybox-static\"]\n",
            r#"packages = ["busybox-static"]
debs = ["debs"]
base = "base.tar.xz"
layers = ["oci:oci", "docker-archive:img.tar"]
overlays = [{ src = "overlay", manifest = "overlay.mtree" }, { src = "overlay-app", owner = "app" }]
"#,
        )
        .replace(
            "watchdog = \"150s\"\n",
            "watchdog = \"150s\"\nretries = 20\ninterval = \"1s\"\n",
        )
}

fn gen_inputs(dir: &Path) {
    run_ok(
        Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/gen-app-inputs.py"
            ))
            .arg(dir),
    );
}

/// `debugfs -R "stat PATH"` of the slot filesystem: (uid, gid, mode bits).
fn owner_mode(fs: &Path, path: &str) -> (u32, u32, u32) {
    let out = run_ok(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("stat {path}"))
            .arg(fs),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| -> String {
        text.split_whitespace()
            .skip_while(|w| *w != name)
            .nth(1)
            .unwrap_or_else(|| panic!("{path}: no {name} in {text}"))
            .to_string()
    };
    let mode = u32::from_str_radix(&field("Mode:"), 8).unwrap();
    (
        field("User:").parse().unwrap(),
        field("Group:").parse().unwrap(),
        mode & 0o7777,
    )
}

fn exists(fs: &Path, path: &str) -> bool {
    let out = run_ok(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("stat {path}"))
            .arg(fs),
    );
    !String::from_utf8_lossy(&out.stderr).contains("File not found")
}

#[test]
fn every_input_kind_builds_and_boots() {
    if !images::have_apt("app_inputs") || !images::have_qemu("app_inputs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    gen_inputs(d.path());
    let (_, public) = keygen(d.path(), "k");
    let out = images::build_toml(d.path(), "app", &recipe(&public));
    let fs = out.join("rootfs.ext4");

    // The slot filesystem, read by debugfs.
    assert_eq!(
        owner_mode(&fs, "/etc/demo/config.toml"),
        (1000, 1000, 0o640)
    );
    assert_eq!(owner_mode(&fs, "/opt/demo/README"), (0, 0, 0o644));
    assert_eq!(owner_mode(&fs, "/srv/demo/state"), (1000, 1000, 0o644));
    // Directories the tree already had keep their owner.
    assert_eq!(owner_mode(&fs, "/etc").0, 0);
    assert_eq!(owner_mode(&fs, "/usr/bin/demo-app").2, 0o755);
    assert!(
        exists(&fs, "/usr/bin/jq"),
        "the .deb's dependency is installed"
    );
    for (path, present) in [
        ("/opt/base/marker", true),
        ("/opt/layer/keep", true),
        ("/opt/layer/gone", false),
        ("/opt/opq/old", false),
        ("/opt/opq/new", true),
        ("/opt/docker/hello", true),
        ("/opt/layer/keep2", false),
        ("/opt/layer/.wh.gone", false),
        ("/opt/opq/.wh..wh..opq", false),
    ] {
        assert_eq!(exists(&fs, path), present, "{path}");
    }

    // The lock pins the local .deb by digest, relative to the recipe.
    let lock = std::fs::read_to_string(d.path().join("app.lock")).unwrap();
    let lock: toml::Value = toml::from_str(&lock).unwrap();
    let local: Vec<&toml::Value> = lock["package"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["archive"].as_str() == Some("local"))
        .collect();
    assert_eq!(local.len(), 1, "{lock}");
    assert_eq!(local[0]["name"].as_str(), Some("demo-app"));
    assert_eq!(
        local[0]["path"].as_str(),
        Some("debs/demo-app_1.0_amd64.deb")
    );
    assert_eq!(
        local[0]["sha256"].as_str().unwrap(),
        images::sha256sum(&d.path().join("debs/demo-app_1.0_amd64.deb"))
    );

    // The SBOM is valid SPDX and lists the local package, its dependency
    // and every layer.
    match images::pyspdxtools() {
        Some(tool) => images::assert_valid_spdx(&tool, &out.join("sbom.spdx.json")),
        None => images::skipped(
            "app_inputs (SBOM validation)",
            "pyspdxtools (PyPI spdx-tools) is not installed",
        ),
    }
    let sbom: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("sbom.spdx.json")).unwrap()).unwrap();
    let names: Vec<&str> = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for want in ["demo-app", "jq", "libjq1"] {
        assert!(names.contains(&want), "{want} not in the SBOM: {names:?}");
    }
    let layers = names
        .iter()
        .filter(|n| n.contains("layer") || n.ends_with("base.tar.xz"))
        .count();
    assert_eq!(
        layers, 4,
        "base, two OCI layers, one docker layer: {names:?}"
    );

    // Boot: the health check proves the inputs on the device.
    let o = run_ok(
        slate()
            .arg("qemu")
            .arg(out.join("disk.img"))
            .args(["--snapshot", "--timeout", "240"])
            .args(["--expect", "committed:A"]),
    );
    assert!(o.status.success());

    // A rebuilt local .deb changes the lock: --locked refuses and says so.
    let deb = d.path().join("debs/demo-app_1.0_amd64.deb");
    let mut bytes = std::fs::read(&deb).unwrap();
    bytes.extend_from_slice(b"\n");
    std::fs::write(&deb, bytes).unwrap();
    let o = slate()
        .arg("build")
        .arg(d.path().join("app.toml"))
        .arg("--locked")
        .arg("--out-dir")
        .arg(d.path().join("app2"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("app.lock") && err.contains("--locked"),
        "{err}"
    );
}

#[test]
fn input_errors_name_the_recipe_line_and_field() {
    let d = tempfile::tempdir().unwrap();
    gen_inputs(d.path());
    let (_, public) = keygen(d.path(), "k");
    let good = recipe(&public);
    let cases = [
        (
            "debs = [\"debs\"]",
            "debs = [\"nodebs\"]",
            "rootfs.debs[0]: cannot read",
        ),
        (
            "base = \"base.tar.xz\"",
            "base = \"oci:base.tar.xz\"",
            "rootfs.base: ",
        ),
        (
            "user = \"app\"",
            "user = \"nobody\"",
            "service[2].user: no [[user]] named \"nobody\"",
        ),
        (
            "owner = \"app\" }",
            "owner = \"nobody\" }",
            "rootfs.overlays[1].owner: no [[user]] named \"nobody\"",
        ),
    ];
    for (from, to, want) in cases {
        assert!(good.contains(from), "{from}");
        let path = d.path().join("bad.toml");
        std::fs::write(&path, good.replace(from, to)).unwrap();
        let o = slate()
            .arg("build")
            .arg(&path)
            .arg("--out-dir")
            .arg(d.path().join("bad"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        let line = good
            .lines()
            .position(|l| l.contains(from))
            .map(|i| i + 1)
            .unwrap();
        assert_eq!(o.status.code(), Some(3), "{to}: {err}");
        assert!(
            err.contains(&format!("bad.toml:{line}: {want}")),
            "{to}: want bad.toml:{line}: {want}, got {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}
