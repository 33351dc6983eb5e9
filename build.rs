//! Build script: records the git commit the binary was built from, for
//! `slate --version`. Works without git and outside a git checkout (a
//! source tarball): the commit is then "unknown", or `SLATE_GIT_COMMIT`.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SLATE_GIT_COMMIT");
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let commit = std::env::var("SLATE_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let found = git_commit(Path::new(&dir), "git");
            for path in found.as_ref().map(|f| f.watch.as_slice()).unwrap_or(&[]) {
                println!("cargo:rerun-if-changed={path}");
            }
            found.map(|f| f.commit)
        })
        .unwrap_or_else(|| "unknown".into());
    let target = std::env::var("TARGET").unwrap_or_default();
    let profile = std::env::var("PROFILE").unwrap_or_default();
    println!(
        "cargo:rustc-env=SLATE_LONG_VERSION={} (commit {commit}, {target}, {profile})",
        std::env::var("CARGO_PKG_VERSION").unwrap_or_default()
    );
}

/// The commit of a checkout and the files that change when it moves.
pub struct Found {
    /// The first 12 hex digits of HEAD.
    pub commit: String,
    /// HEAD and the branch ref (loose or packed) it points to.
    pub watch: Vec<String>,
}

fn git(program: &str, dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// HEAD of the git checkout at `dir`, asking `program` (normally "git");
/// `None` without git or outside a checkout.
pub fn git_commit(dir: &Path, program: &str) -> Option<Found> {
    let head = git(program, dir, &["rev-parse", "--verify", "HEAD"])?;
    let commit: String = head.chars().take(12).collect();
    if commit.len() != 12 || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut watch = Vec::new();
    if let Some(git_dir) = git(program, dir, &["rev-parse", "--absolute-git-dir"]) {
        watch.push(format!("{git_dir}/HEAD"));
    }
    let common = git(program, dir, &["rev-parse", "--git-common-dir"]).map(|c| dir.join(c));
    if let (Some(common), Some(branch)) =
        (common, git(program, dir, &["symbolic-ref", "-q", "HEAD"]))
    {
        for p in [common.join(&branch), common.join("packed-refs")] {
            if p.exists() {
                watch.push(p.display().to_string());
            }
        }
    }
    Some(Found { commit, watch })
}
