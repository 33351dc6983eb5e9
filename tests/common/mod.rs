//! Helpers shared by the integration tests: tools on PATH, skipping, running slate.
#![allow(dead_code)]

pub mod nginx;
pub mod pyhttp;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Whether `tool` is an executable on PATH (or in /sbin, /usr/sbin).
pub fn have(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/sbin", "/usr/sbin"].map(PathBuf::from))
        .any(|d| d.join(tool).is_file())
}

/// Records that `test` is skipped and why: printed, and appended to
/// `$SLATE_SKIP_LOG` (scripts/qemu-test.sh prints that file as a summary).
/// With `SLATE_REQUIRE_ALL_TESTS=1` (set in CI, where every tool is
/// installed) a skip is a failure instead.
pub fn skipped(test: &str, why: &str) {
    let line = format!("SKIP {test}: {why}");
    eprintln!("{line}");
    if let Some(log) = std::env::var_os("SLATE_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "{line}");
        }
    }
    if std::env::var_os("SLATE_REQUIRE_ALL_TESTS").is_some_and(|v| v == "1") {
        panic!("{line} (SLATE_REQUIRE_ALL_TESTS=1: this run must not skip tests)");
    }
}

/// Records that `test` cannot run on this machine's kernel at all (a missing
/// kernel feature no package can add, e.g. device-mapper in a container
/// kernel): listed in the skip summary as UNSUPPORTED, but not a failure
/// under `SLATE_REQUIRE_ALL_TESTS`, which is for what CI installs.
pub fn unsupported_here(test: &str, why: &str) {
    let line = format!("UNSUPPORTED {test}: {why}");
    eprintln!("{line}");
    if let Some(log) = std::env::var_os("SLATE_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// Prints why a test is skipped and returns true if any tool is missing.
pub fn skip_without(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return false;
    }
    skipped(test, &format!("missing {}", missing.join(", ")));
    true
}

/// A port on 127.0.0.1 nothing listens on right now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    l.local_addr().expect("local address").port()
}

/// Whether the tests run as root (loop devices, mounts, mknod).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A command with a fixed, tool-friendly environment (LC_ALL=C, TZ=UTC).
pub fn cmd(program: &str) -> Command {
    let mut c = Command::new(program);
    c.env("LC_ALL", "C")
        .env("TZ", "UTC")
        .env("MTOOLS_SKIP_CHECK", "1");
    c
}

/// The slate binary under test.
pub fn slate() -> Command {
    let mut c = cmd(env!("CARGO_BIN_EXE_slate"));
    c.env_remove("SOURCE_DATE_EPOCH");
    c
}

/// Runs `c`, panicking with its output unless it succeeds.
pub fn run_ok(c: &mut Command) -> Output {
    let out = c.output().unwrap_or_else(|e| panic!("running {c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `c` expecting failure; returns its stderr.
pub fn run_fail(c: &mut Command) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("running {c:?}: {e}"));
    assert!(!out.status.success(), "{c:?} unexpectedly succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Names in `dir` (to check that failed commands leave nothing behind).
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Sets the mtime of `p` (without following symlinks).
pub fn set_mtime(p: &Path, secs: i64) {
    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, utimensat};
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    utimensat(
        CWD,
        p,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// Every path under `root` (relative, sorted), directories included.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().to_path_buf());
            if p.symlink_metadata().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The top-level field names of docs/json.md's example `label` (after
/// "```json LABEL"), in order.
pub fn documented_json_fields(label: &str) -> Vec<String> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/json.md")).unwrap();
    let fence = format!("```json {label}\n");
    let start = doc
        .find(&fence)
        .unwrap_or_else(|| panic!("docs/json.md has no `{label}` example"))
        + fence.len();
    let body = &doc[start..start + doc[start..].find("```").unwrap()];
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    json_fields(&v)
}

/// The top-level field names of a JSON object, in order.
pub fn json_fields(v: &serde_json::Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}
