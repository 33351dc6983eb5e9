//! Outputs that appear complete or not at all: write to a temp file beside the
//! destination, fsync, rename over it, fsync the directory.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// A file being written that becomes visible at `dest` only on [`AtomicFile::commit`].
/// Dropping it without committing removes the temp file, so a failed command
/// never leaves something a user could mistake for a result.
#[derive(Debug)]
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
}

impl AtomicFile {
    /// Creates the temp file in the destination's directory (so the rename
    /// cannot cross filesystems).
    pub fn create(dest: impl AsRef<Path>) -> io::Result<Self> {
        let dest = dest.as_ref().to_path_buf();
        let dir = parent_dir(&dest);
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Mode 0666 less the umask, like any file a program creates (the
        // temp file default, 0600, would make lock files and images private).
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(dir)?;
        Ok(Self { tmp, dest })
    }

    /// The file to write into.
    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// The temp file's own path (for reading what was written back before
    /// [`AtomicFile::commit`]).
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Where the file will appear.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// fsyncs the data, renames it into place and fsyncs the directory.
    pub fn commit(self) -> io::Result<()> {
        self.tmp.as_file().sync_all()?;
        let dir = parent_dir(&self.dest).to_path_buf();
        self.tmp.persist(&self.dest).map_err(|e| e.error)?;
        sync_dir(&dir)
    }
}

/// Writes `bytes` to `dest` atomically (temp file, fsync, rename, directory fsync).
pub fn write_atomic(dest: impl AsRef<Path>, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut f = AtomicFile::create(dest)?;
    f.file().write_all(bytes)?;
    f.commit()
}

/// fsyncs a directory so a rename inside it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_dir(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_is_that_of_a_created_file() {
        // Issue 11: lock files came out 0600.
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        write_atomic(d.path().join("a"), b"x").unwrap();
        std::fs::File::create(d.path().join("b")).unwrap();
        let mode = |n: &str| {
            std::fs::metadata(d.path().join(n))
                .unwrap()
                .permissions()
                .mode()
        };
        assert_eq!(mode("a"), mode("b"));
        assert_ne!(mode("a") & 0o044, 0, "{:o}", mode("a"));
    }
    use std::io::Write;

    #[test]
    fn commit_makes_file_visible() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("out.img");
        let mut f = AtomicFile::create(&dest).unwrap();
        f.file().write_all(b"hello").unwrap();
        assert!(!dest.exists());
        f.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn drop_leaves_nothing_behind() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("out.img");
        {
            let mut f = AtomicFile::create(&dest).unwrap();
            f.file().write_all(b"partial").unwrap();
        }
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
