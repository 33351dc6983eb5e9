//! Every build writes an SPDX 2.3 SBOM (issue 10): valid per the independent
//! `spdx-tools` (pyspdxtools, installed into a virtualenv by
//! scripts/qemu-test.sh), listing every package of the image and every host
//! file copied in; the bundle carries it under the signed manifest and
//! `slate inspect --sbom` prints it.

mod images;

use images::{Recipe, build, bundle, keygen, run_ok, sha256sum, slate};
use std::process::Command;

#[test]
fn sbom_is_valid_spdx_and_lists_every_package() {
    if !images::have_apt("sbom_is_valid_spdx") {
        return;
    }
    let Some(tool) = images::pyspdxtools() else {
        images::skipped(
            "sbom_is_valid_spdx",
            "pyspdxtools (PyPI spdx-tools) is not installed",
        );
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let (key, public) = keygen(d.path(), "k");
    let out = build(d.path(), "img", &Recipe::counter("1.0.0", &public));
    let sbom_path = out.join("sbom.spdx.json");

    // The independent validator accepts it...
    images::assert_valid_spdx(&tool, &sbom_path);
    // ...and rejects a broken copy (the check can fail).
    let text = std::fs::read_to_string(&sbom_path).unwrap();
    let broken = d.path().join("broken.spdx.json");
    std::fs::write(&broken, text.replacen("\"SPDX-2.3\"", "\"SPDX-9\"", 1)).unwrap();
    let v = Command::new(&tool).arg("-i").arg(&broken).output().unwrap();
    let said = String::from_utf8_lossy(&v.stderr);
    assert!(!v.status.success() || said.contains("invalid"), "{said}");

    // Every locked package is listed with its version and digest.
    let sbom: serde_json::Value = serde_json::from_str(&text).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let pkgs = sbom["packages"].as_array().unwrap();
    let listed = |name: &str, version: &str, sha: &str| {
        pkgs.iter().any(|p| {
            p["name"] == name
                && p["versionInfo"] == version
                && p["checksums"][0]["checksumValue"] == sha
        })
    };
    let locked = manifest["packages"].as_array().unwrap();
    assert!(locked.len() >= 3, "{manifest}");
    for p in locked {
        let (n, v, s) = (
            p["name"].as_str().unwrap(),
            p["version"].as_str().unwrap(),
            p["sha256"].as_str().unwrap(),
        );
        assert!(listed(n, v, s), "{n} {v} missing from the SBOM");
    }
    // Host files: the agent and the shared libraries it needs.
    let host: Vec<&str> = pkgs
        .iter()
        .filter(|p| p["primaryPackagePurpose"] == "FILE")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(host.contains(&"/usr/bin/slate-agent"), "{host:?}");
    assert!(host.iter().any(|h| h.contains("libc.so.6")), "{host:?}");
    assert_eq!(
        sbom["creationInfo"]["created"], "2023-11-14T22:13:20Z",
        "SOURCE_DATE_EPOCH, not the wall clock"
    );

    // The bundle carries it, its digest in the signed manifest.
    let b = bundle(&out, &key, &d.path().join("img.bundle"));
    let inspect = run_ok(slate().arg("inspect").arg(&b).arg("--json"));
    let j: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let art = j["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "sbom")
        .unwrap_or_else(|| panic!("no sbom artifact: {j}"));
    assert_eq!(art["sha256"].as_str().unwrap(), sha256sum(&sbom_path));
    let printed = run_ok(
        slate()
            .arg("inspect")
            .arg(&b)
            .arg("--sbom")
            .arg("--pubkey")
            .arg(&public),
    );
    assert_eq!(String::from_utf8_lossy(&printed.stdout), text);
    let from_dir = run_ok(slate().arg("inspect").arg(&out).arg("--sbom"));
    assert_eq!(String::from_utf8_lossy(&from_dir.stdout), text);
}
