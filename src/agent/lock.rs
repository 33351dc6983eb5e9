//! One lock for everything that changes the update state: the boot verdict
//! and installs. The state is loaded only after the lock is taken, so two
//! agents never act on the same stale copy.

use anyhow::{Context, Result, bail};
use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

/// The lock file (on /run: it never outlives a boot).
pub const LOCK_PATH: &str = "/run/slate/update.lock";

/// Held for as long as this value lives.
#[derive(Debug)]
pub struct UpdateLock {
    _file: File,
}

fn open(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

fn try_lock(f: &File) -> bool {
    rustix::fs::flock(f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok()
}

impl UpdateLock {
    /// Takes the lock or fails at once (a second install).
    pub fn try_acquire(path: &Path) -> Result<Self> {
        let file = open(path)?;
        if !try_lock(&file) {
            bail!(
                "another install or boot verdict is running (lock {} is held)",
                path.display()
            );
        }
        Ok(Self { _file: file })
    }

    /// Waits up to `timeout` for the lock (the boot verdict waits for an
    /// install that is finishing; installs have bounded network timeouts).
    pub fn wait(path: &Path, timeout: Duration) -> Result<Self> {
        let file = open(path)?;
        let start = Instant::now();
        while !try_lock(&file) {
            if start.elapsed() >= timeout {
                bail!(
                    "lock {} still held after {}s",
                    path.display(),
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_release() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x/update.lock");
        let held = UpdateLock::try_acquire(&p).unwrap();
        let e = UpdateLock::try_acquire(&p).unwrap_err();
        assert!(e.to_string().contains("another install"), "{e}");
        assert!(UpdateLock::wait(&p, Duration::from_millis(300)).is_err());
        drop(held);
        UpdateLock::wait(&p, Duration::from_secs(1)).unwrap();
    }
}
