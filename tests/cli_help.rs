//! Every command's help fits in 80 columns, and `slate-agent` is `slate agent`.

use std::process::Command;

const COMMANDS: &[&[&str]] = &[
    &[],
    &["build"],
    &["mkfs"],
    &["mkfs", "ext4"],
    &["mkfs", "fat"],
    &["mkfs", "cpio"],
    &["keygen"],
    &["bundle"],
    &["channel"],
    &["channel", "init"],
    &["channel", "publish"],
    &["channel", "promote"],
    &["channel", "withdraw"],
    &["channel", "refresh"],
    &["channel", "rotate"],
    &["channel", "list"],
    &["channel", "fetch"],
    &["verify"],
    &["inspect"],
    &["extract"],
    &["qemu"],
    &["agent"],
    &["agent", "boot"],
    &["agent", "status"],
    &["agent", "install"],
    &["completions"],
];

#[test]
fn help_fits_in_80_columns() {
    for cmd in COMMANDS {
        let out = Command::new(env!("CARGO_BIN_EXE_slate"))
            .args(*cmd)
            .arg("--help")
            .env("COLUMNS", "200")
            .output()
            .unwrap();
        assert!(out.status.success(), "slate {cmd:?} --help failed");
        let text = String::from_utf8(out.stdout).unwrap();
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "slate {cmd:?} --help: {line:?}");
        }
    }
}

#[test]
fn invoked_as_slate_agent_it_is_the_agent() {
    let d = tempfile::tempdir().unwrap();
    let link = d.path().join("slate-agent");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_slate"), &link).unwrap();
    let out = Command::new(&link).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("install") && text.contains("status"),
        "{text}"
    );
    // Off the device there is no agent config: one clear error line.
    let out = Command::new(&link)
        .args(["--config", "/nonexistent/agent.json", "status"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/agent.json"), "{err}");
}
