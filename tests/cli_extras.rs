//! Polish users expect (issue 11): completions that load in bash, man pages
//! that are current and render with man(1), `--version` with the commit,
//! `--quiet` and NO_COLOR.

#[path = "../build.rs"]
#[allow(dead_code)]
mod build_script;

use std::path::Path;
use std::process::Command;

fn slate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_slate"));
    c.env("LC_ALL", "C").env_remove("NO_COLOR");
    c
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn man_pages_are_current() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/man");
    let fresh = tempfile::tempdir().unwrap();
    let out = slate().arg("man").arg(fresh.path()).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let names = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let stale = "docs/man is out of date: run `cargo run -- man docs/man`";
    assert_eq!(names(fresh.path()), names(&committed), "{stale}");
    for n in names(fresh.path()) {
        let want = std::fs::read_to_string(fresh.path().join(&n)).unwrap();
        let have = std::fs::read_to_string(committed.join(&n)).unwrap();
        if let Some((w, h)) = want.lines().zip(have.lines()).find(|(w, h)| w != h) {
            panic!("{n}: {stale}\n  generated: {w}\n  committed: {h}");
        }
        assert_eq!(want.len(), have.len(), "{n}: {stale}");
    }
    assert!(names(&committed).contains(&"slate-build.1".to_string()));
}

#[test]
fn man_renders_the_pages() {
    if !have("man") {
        eprintln!("skipping man_renders_the_pages: man (Debian package man-db) is not installed");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/man");
    for (page, needle) in [("slate.1", "slate-build"), ("slate-build.1", "--out-dir")] {
        let out = Command::new("man")
            .args(["-l", "-P", "cat", "--warnings"])
            .arg(dir.join(page))
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "man -l {page}: {err}");
        assert!(err.trim().is_empty(), "man -l {page} warns: {err}");
        assert!(text.contains(needle), "{page}: {text}");
    }
}

#[test]
fn bash_loads_the_completions() {
    if !have("bash") {
        eprintln!("skipping bash_loads_the_completions: bash is not installed");
        return;
    }
    let script = format!(
        "source <({} completions bash) && complete -p slate",
        env!("CARGO_BIN_EXE_slate")
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("complete ") && text.trim_end().ends_with(" slate"),
        "{text}"
    );
    // The script completes subcommands: ask it as bash would.
    let script = format!(
        "source <({} completions bash); COMP_WORDS=(slate bu); COMP_CWORD=1; \
         COMP_LINE='slate bu'; COMP_POINT=8; _slate slate bu slate; echo \"${{COMPREPLY[@]}}\"",
        env!("CARGO_BIN_EXE_slate")
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.split_whitespace().any(|w| w == "build"), "{text}");
    assert!(text.split_whitespace().any(|w| w == "bundle"), "{text}");
    for shell in ["zsh", "fish"] {
        let out = slate().args(["completions", shell]).output().unwrap();
        assert!(out.status.success() && out.stdout.len() > 100, "{shell}");
    }
}

#[test]
fn version_names_the_commit() {
    let out = slate().arg("--version").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!("slate {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    match build_script::git_commit(root, "git") {
        Some(found) => assert!(text.contains(&found.commit), "{text}"),
        None => eprintln!("version_names_the_commit: not a git checkout, commit not compared"),
    }
    // -V stays short.
    let out = slate().arg("-V").output().unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("slate {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn version_without_git_or_outside_a_checkout() {
    let d = tempfile::tempdir().unwrap();
    assert!(build_script::git_commit(d.path(), "git").is_none());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(build_script::git_commit(root, "/nonexistent/git").is_none());
}

/// Runs `cmd` (a shell command line) under a pseudo-terminal with script(1),
/// so slate's stderr is a terminal; returns everything it printed.
fn on_a_terminal(cmd: &str, env: &[(&str, &str)]) -> Option<String> {
    if !have("script") {
        eprintln!("skipping: script (Debian package util-linux) is not installed");
        return None;
    }
    let mut c = Command::new("script");
    c.args(["-qec", cmd, "/dev/null"]).env_remove("NO_COLOR");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn no_color_and_quiet_on_a_terminal() {
    let bin = env!("CARGO_BIN_EXE_slate");
    let cmd = format!("{bin} inspect /nonexistent.slate");
    let Some(colored) = on_a_terminal(&cmd, &[]) else {
        return;
    };
    assert!(colored.contains("\x1b[1;31merror:"), "{colored:?}");
    let plain = on_a_terminal(&cmd, &[("NO_COLOR", "1")]).unwrap();
    assert!(plain.contains("slate: error: "), "{plain:?}");
    assert!(!plain.contains('\x1b'), "{plain:?}");

    // A progress bar on a terminal, none with --quiet (the result stays).
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("in.img");
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
    std::fs::write(&img, &data).unwrap();
    let tree = t.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("big"), &data).unwrap();
    let loud = on_a_terminal(
        &format!(
            "{bin} mkfs ext4 {} {}",
            tree.display(),
            t.path().join("l.ext4").display()
        ),
        &[],
    )
    .unwrap();
    assert!(
        loud.contains("ext4 ["),
        "no progress bar on a terminal: {loud:?}"
    );
    let quiet = on_a_terminal(
        &format!(
            "{bin} --quiet mkfs ext4 {} {}",
            tree.display(),
            t.path().join("q.ext4").display()
        ),
        &[],
    )
    .unwrap();
    assert!(
        !quiet.contains("ext4 ["),
        "--quiet printed a bar: {quiet:?}"
    );
    assert!(t.path().join("q.ext4").exists());
}

/// Every `A UNIT/B UNIT` a progress bar drew, in bytes.
fn bar_frames(output: &str) -> Vec<(f64, f64)> {
    let unit = |s: &str| -> Option<f64> {
        let (n, u) = s.trim().split_once(' ')?;
        let n: f64 = n.parse().ok()?;
        let m = match u {
            "B" => 1.0,
            "KiB" => 1024.0,
            "MiB" => 1048576.0,
            "GiB" => 1073741824.0,
            _ => return None,
        };
        Some(n * m)
    };
    let mut frames = Vec::new();
    for part in output.split("] ").skip(1) {
        let Some((a, rest)) = part.split_once('/') else {
            continue;
        };
        let b: String = rest
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        if let (Some(a), Some(b)) = (unit(a), unit(&b)) {
            frames.push((a, b));
        }
    }
    frames
}

#[test]
fn fat_progress_does_not_overshoot() {
    // Issue 11: the ESP bar showed 30.57 MiB/29.43 MiB: files with holes
    // counted only their data in the total but all their bytes as written.
    let bin = env!("CARGO_BIN_EXE_slate");
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let f = std::fs::File::create(tree.join("padded")).unwrap();
    std::io::Write::write_all(&mut &f, &vec![7u8; 1 << 20]).unwrap();
    f.set_len(24 << 20).unwrap();
    let cmd = format!(
        "{bin} mkfs fat {} {}",
        tree.display(),
        t.path().join("f.img").display()
    );
    let Some(out) = on_a_terminal(&cmd, &[]) else {
        return;
    };
    let frames = bar_frames(&out);
    assert!(!frames.is_empty(), "no bar drawn: {out:?}");
    for (done, total) in &frames {
        assert!(done <= total, "{done} of {total} bytes: {out:?}");
    }
    assert!(
        frames.iter().any(|(_, total)| *total >= (24 << 20) as f64),
        "{frames:?}"
    );
}
