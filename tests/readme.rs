//! The README's update walkthrough, run literally (issue 11): the lines
//! between its `walkthrough` markers, as one bash script, in a fresh
//! directory holding only recipes/minimal.toml, with this build's slate
//! first on PATH.

mod images;

use std::path::Path;
use std::process::Command;

fn walkthrough() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find("<!-- walkthrough: start -->")
        .expect("start marker");
    let end = readme
        .find("<!-- walkthrough: end -->")
        .expect("end marker");
    let block = &readme[start..end];
    let body = &block[block.find("```sh\n").expect("```sh block") + 6..];
    body[..body.find("```").unwrap()].to_string()
}

#[test]
fn readme_walkthrough_runs_as_written() {
    let script = walkthrough();
    // It is the walkthrough the issue asked for.
    for needle in [
        "--out-dir out/minimal-v2",
        "--snapshot",
        "--expect committed:B",
    ] {
        assert!(
            script.contains(needle),
            "walkthrough lacks {needle}:\n{script}"
        );
    }
    if !images::have_apt("readme_walkthrough") || !images::have_qemu("readme_walkthrough") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    std::fs::create_dir(root.join("recipes")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/minimal.toml"),
        root.join("recipes/minimal.toml"),
    )
    .unwrap();
    let bin = root.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_slate"), bin.join("slate")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(root)
        .env("PATH", path)
        .env("SLATE_CACHE_DIR", images::cache_dir())
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the README walkthrough failed:\n{stderr}"
    );
    assert!(stderr.contains("committed"), "{stderr}");
    // --snapshot left v1's disk as built.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("out/minimal/manifest.json")).unwrap())
            .unwrap();
    let disk = images::sha256sum(&root.join("out/minimal/disk.img"));
    assert_eq!(manifest["disk"]["sha256"], disk.as_str());
    // v2 went to its own directory.
    let v2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("out/minimal-v2/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(v2["version"], "1.1.0");
}
