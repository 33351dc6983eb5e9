//! The output directory of a build: checked before any work, replaced only
//! when it is absent, empty, or holds nothing but what slate writes there,
//! and swapped in atomically at the end.

use super::ComposeError;
use super::build::files;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The file that marks a directory as a slate build directory.
pub const MARKER: &str = ".slate-build";

const MARKER_TEXT: &str = "This directory was written by `slate build`; the next build into it \
replaces it, as long as it holds only the files slate writes.\n";

/// Every name a build directory may hold: what `slate build` writes.
pub fn outputs() -> [&'static str; 10] {
    [
        files::DISK,
        files::ROOTFS,
        files::KERNEL,
        files::INITRD,
        files::BOOTSPEC,
        files::SBOM,
        files::BMAP,
        files::LAYOUT,
        crate::build_manifest::FILE_NAME,
        MARKER,
    ]
}

/// A checked output directory.
#[derive(Debug, Clone)]
pub struct OutDir {
    /// The absolute path (symlinks in its parent resolved).
    pub path: PathBuf,
    /// Its parent, where the work directory is made.
    pub parent: PathBuf,
    name: OsString,
}

fn refuse(dir: &Path, why: String) -> ComposeError {
    ComposeError::OutDir(format!(
        "output directory {}: {why}; choose a new or empty --out-dir (slate replaces only \
         directories it wrote)",
        dir.display()
    ))
}

/// Checks that `dir` may be (re)placed by a build: absent, empty, or a
/// slate build directory with nothing else in it.
pub fn check(dir: &Path) -> Result<OutDir, ComposeError> {
    let cwd = std::env::current_dir()
        .map_err(|e| ComposeError::io("reading the current directory", Path::new("."), e))?;
    let abs = cwd.join(dir);
    let (path, exists) = match abs.canonicalize() {
        Ok(p) => (p, true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (normalize(&abs), false),
        Err(e) => return Err(ComposeError::io("resolving", &abs, e)),
    };
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(refuse(dir, "is the root directory".into()));
    };
    let out = OutDir {
        path: path.clone(),
        parent: parent.to_path_buf(),
        name: name.to_owned(),
    };
    if !exists {
        return Ok(out);
    }
    if !path.is_dir() {
        return Err(refuse(dir, "exists and is not a directory".into()));
    }
    let mut names = Vec::new();
    for e in std::fs::read_dir(&path).map_err(|e| ComposeError::io("reading", &path, e))? {
        let e = e.map_err(|e| ComposeError::io("reading", &path, e))?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    if names.is_empty() {
        return Ok(out);
    }
    let ours = outputs();
    let foreign: Vec<&String> = names
        .iter()
        .filter(|n| !ours.contains(&n.as_str()))
        .collect();
    if !foreign.is_empty() {
        let shown: Vec<&str> = foreign.iter().take(3).map(|s| s.as_str()).collect();
        let more = match foreign.len() {
            n if n > 3 => format!(" and {} more", n - 3),
            _ => String::new(),
        };
        return Err(refuse(
            dir,
            format!(
                "holds files slate did not write ({}{more})",
                shown.join(", ")
            ),
        ));
    }
    let marked = [MARKER, crate::build_manifest::FILE_NAME]
        .iter()
        .any(|m| names.iter().any(|n| n == m));
    if !marked {
        return Err(refuse(
            dir,
            format!(
                "is not a slate build directory (no {} or {MARKER})",
                crate::build_manifest::FILE_NAME
            ),
        ));
    }
    Ok(out)
}

/// `a/./b/../c` -> `a/c`, without touching the filesystem.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// A private work directory beside the output (its parents are created);
/// removed when dropped.
pub fn work_dir(out: &OutDir) -> Result<tempfile::TempDir, ComposeError> {
    std::fs::create_dir_all(&out.parent)
        .map_err(|e| ComposeError::io("creating", &out.parent, e))?;
    tempfile::Builder::new()
        .prefix(&format!(".{}.", out.name.to_string_lossy()))
        .tempdir_in(&out.parent)
        .map_err(|e| ComposeError::io("creating a work directory in", &out.parent, e))
}

/// Moves the finished `work` directory to `out`, replacing what was there
/// (checked again now). On any failure the old directory is back in place
/// and `work` is removed.
pub fn replace(work: tempfile::TempDir, out: &OutDir) -> Result<(), ComposeError> {
    let marker = work.path().join(MARKER);
    std::fs::write(&marker, MARKER_TEXT).map_err(|e| ComposeError::io("writing", &marker, e))?;
    let out = check(&out.path)?;
    let old = if out.path.exists() {
        // An empty directory of our own to rename the old output onto.
        let old = tempfile::Builder::new()
            .prefix(&format!(".{}.old.", out.name.to_string_lossy()))
            .tempdir_in(&out.parent)
            .map_err(|e| ComposeError::io("creating a directory in", &out.parent, e))?;
        std::fs::rename(&out.path, old.path())
            .map_err(|e| ComposeError::io("moving aside", &out.path, e))?;
        Some(old)
    } else {
        None
    };
    if let Err(e) = std::fs::rename(work.path(), &out.path) {
        if let Some(old) = &old {
            let _ = std::fs::rename(old.path(), &out.path);
        }
        return Err(ComposeError::io("creating", &out.path, e));
    }
    let _ = work.keep();
    // Dropping `old` removes the previous build.
    drop(old);
    crate::io::sync_dir(&out.parent).map_err(|e| ComposeError::io("syncing", &out.parent, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_refused(dir: &Path) -> String {
        match check(dir) {
            Err(ComposeError::OutDir(m)) => m,
            other => panic!("{} accepted: {other:?}", dir.display()),
        }
    }

    #[test]
    fn only_empty_absent_or_slate_directories() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        // Absent and empty: fine; checking creates nothing.
        let d = d.canonicalize().unwrap();
        let d = d.as_path();
        assert_eq!(check(&d.join("a/./x/../b")).unwrap().path, d.join("a/b"));
        assert!(!d.join("a").exists());
        std::fs::create_dir(d.join("empty")).unwrap();
        check(&d.join("empty")).unwrap();
        // Someone's files: refused, naming them.
        let home = d.join("home");
        std::fs::create_dir(&home).unwrap();
        std::fs::write(home.join("thesis.tex"), "years of work").unwrap();
        let m = is_refused(&home);
        assert!(
            m.contains("thesis.tex") && m.contains("did not write"),
            "{m}"
        );
        // slate's names but no manifest or marker: refused.
        let fake = d.join("fake");
        std::fs::create_dir(&fake).unwrap();
        std::fs::write(fake.join("disk.img"), "mine").unwrap();
        assert!(is_refused(&fake).contains("not a slate build directory"));
        // A build directory: fine; with an extra file: refused.
        std::fs::write(fake.join(MARKER), "").unwrap();
        check(&fake).unwrap();
        std::fs::write(fake.join("v2.slate"), "bundle").unwrap();
        assert!(is_refused(&fake).contains("v2.slate"));
        // A file.
        assert!(is_refused(&home.join("thesis.tex")).contains("not a directory"));
    }

    #[test]
    fn replace_swaps_and_keeps_nothing_else() {
        let t = tempfile::tempdir().unwrap();
        let out = check(&t.path().join("out")).unwrap();
        let work = work_dir(&out).unwrap();
        std::fs::write(work.path().join("disk.img"), "v1").unwrap();
        replace(work, &out).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.path.join("disk.img")).unwrap(),
            "v1"
        );
        let work = work_dir(&out).unwrap();
        std::fs::write(work.path().join("disk.img"), "v2").unwrap();
        replace(work, &out).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.path.join("disk.img")).unwrap(),
            "v2"
        );
        let names: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out"], "left behind: {names:?}");
    }
}
