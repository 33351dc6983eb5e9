//! Obtaining the exact bytes a lock names. Every package is looked for in
//! order in: the local content-addressed cache (by SHA-256), the vendor
//! directory, the configured archive, and the snapshot archive the lock
//! records. Each candidate is verified against the lock's SHA-256 and size;
//! a mismatch or an unreachable source only moves on to the next one.

use super::lock::{Archive, LockedPackage};
use crate::io::hash::HashingWriter;
use crate::progress::Progress;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Parallel downloads.
const WORKERS: usize = 4;

/// Where packages may come from, in the order they are tried.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Content-addressed store: `<dir>/<sha256>.deb`.
    pub cache: PathBuf,
    /// A `slate vendor` directory: `<dir>/<file>`.
    pub vendor: Option<PathBuf>,
    /// Main archive root URL.
    pub mirror: String,
    /// Security archive root URL (empty: none).
    pub security_mirror: String,
    /// Snapshot service base and timestamp, when the lock records one.
    pub snapshot: Option<(String, String)>,
    /// The recipe's directory, which local .debs are relative to.
    pub local_root: PathBuf,
}

/// A package that no source could provide: every source and why it failed.
#[derive(Debug, Clone)]
pub struct Missing {
    /// The package.
    pub package: LockedPackage,
    /// `(source, reason)` for each source tried.
    pub tried: Vec<(String, String)>,
}

impl Sources {
    /// The cache path of a package.
    pub fn cached(&self, sha256: &str) -> PathBuf {
        self.cache.join(format!("{sha256}.deb"))
    }

    /// The URLs of a package, archive first, then snapshot (none for a
    /// local .deb).
    pub fn urls(&self, p: &LockedPackage) -> Vec<(String, String)> {
        let (base, snapshot_name) = match p.archive {
            Archive::Main => (&self.mirror, "debian"),
            Archive::Security => (&self.security_mirror, "debian-security"),
            Archive::Local => return Vec::new(),
        };
        let mut out = Vec::new();
        if !base.is_empty() {
            out.push((
                format!("archive {base}"),
                format!("{}/{}", base.trim_end_matches('/'), p.path),
            ));
        }
        if let Some((snap, ts)) = &self.snapshot {
            let root = format!("{}/{snapshot_name}/{ts}", snap.trim_end_matches('/'));
            out.push((format!("snapshot {root}"), format!("{root}/{}", p.path)));
        }
        out
    }

    /// Provides every package (in parallel), returning their cache paths in
    /// the order given, or every package that could not be obtained.
    pub fn obtain_all(
        &self,
        packages: &[LockedPackage],
        status: &dyn Fn(&str),
    ) -> Result<Vec<PathBuf>, Vec<Missing>> {
        if let Err(e) = std::fs::create_dir_all(&self.cache) {
            let why = format!("creating {}: {e}", self.cache.display());
            return Err(packages
                .iter()
                .map(|p| Missing {
                    package: p.clone(),
                    tried: vec![("cache".into(), why.clone())],
                })
                .collect());
        }
        let todo: Vec<usize> = (0..packages.len())
            .filter(|&i| !self.cache_hit(&packages[i]))
            .collect();
        if !todo.is_empty() {
            status(&format!("fetching {} packages", todo.len()));
        }
        let total: u64 = todo.iter().map(|&i| packages[i].size).sum();
        let progress = Progress::bytes(total, "packages");
        let next = AtomicUsize::new(0);
        let missing = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..WORKERS.min(todo.len()) {
                s.spawn(|| {
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&i) = todo.get(k) else { break };
                        if let Err(m) = self.obtain(&packages[i], &progress) {
                            if let Ok(mut v) = missing.lock() {
                                v.push(*m);
                            }
                        }
                    }
                });
            }
        });
        progress.finish();
        let mut missing = missing.into_inner().unwrap_or_default();
        if !missing.is_empty() {
            missing.sort_by(|a, b| a.package.cmp(&b.package));
            return Err(missing);
        }
        Ok(packages.iter().map(|p| self.cached(&p.sha256)).collect())
    }

    fn cache_hit(&self, p: &LockedPackage) -> bool {
        let path = self.cached(&p.sha256);
        match crate::io::hash::sha256_file(&path) {
            Ok(h) if h == p.sha256 => true,
            Ok(_) => {
                // A corrupt cache entry is dropped and fetched again.
                let _ = std::fs::remove_file(&path);
                false
            }
            Err(_) => false,
        }
    }

    /// Tries every source for one package; the first verified copy lands in
    /// the cache.
    fn obtain(&self, p: &LockedPackage, progress: &Progress) -> Result<(), Box<Missing>> {
        let mut tried = vec![("cache".to_string(), "not present".to_string())];
        let dest = self.cached(&p.sha256);
        if p.archive == Archive::Local {
            let src = self.local_root.join(&p.path);
            let result = std::fs::File::open(&src)
                .map_err(|e| e.to_string())
                .and_then(|f| self.store(p, f, &dest, None));
            match result {
                Ok(()) => {
                    progress.inc(p.size);
                    return Ok(());
                }
                Err(why) => tried.push((format!("local {}", src.display()), why)),
            }
        }
        match &self.vendor {
            Some(dir) => {
                let src = dir.join(&p.file);
                match std::fs::File::open(&src) {
                    Ok(f) => match self.store(p, f, &dest, None) {
                        Ok(()) => {
                            progress.inc(p.size);
                            return Ok(());
                        }
                        Err(why) => tried.push((format!("vendor {}", dir.display()), why)),
                    },
                    Err(e) => tried.push((format!("vendor {}", dir.display()), e.to_string())),
                }
            }
            None => tried.push(("vendor".into(), "no vendor directory given".into())),
        }
        let agent = agent();
        for (source, url) in self.urls(p) {
            let resp = match agent.get(&url).call() {
                Ok(r) => r,
                Err(e) => {
                    tried.push((source, http_error(&url, e)));
                    continue;
                }
            };
            let body = resp.into_body().into_reader();
            match self.store(p, body, &dest, Some(progress)) {
                Ok(()) => return Ok(()),
                Err(why) => tried.push((source, format!("{url}: {why}"))),
            }
        }
        Err(Box::new(Missing {
            package: p.clone(),
            tried,
        }))
    }

    /// Copies `r` into the cache under `dest` if it has exactly the lock's
    /// size and SHA-256 (never reading more than the size plus one byte).
    fn store(
        &self,
        p: &LockedPackage,
        r: impl Read,
        dest: &Path,
        progress: Option<&Progress>,
    ) -> Result<(), String> {
        let mut out = crate::io::AtomicFile::create(dest)
            .map_err(|e| format!("creating {}: {e}", dest.display()))?;
        let mut w = HashingWriter::new(out.file());
        let mut limited = r.take(p.size.saturating_add(1));
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = limited
                .read(&mut buf)
                .map_err(|e| format!("reading: {e}"))?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n])
                .map_err(|e| format!("writing {}: {e}", dest.display()))?;
            if let Some(pr) = progress {
                pr.inc(n as u64);
            }
        }
        let (digest, size, _) = w.finish();
        if size != p.size {
            return Err(format!("{size} bytes instead of the lock's {}", p.size));
        }
        let found = crate::io::hash::hex(&digest);
        if found != p.sha256 {
            return Err(format!(
                "sha256 {found} does not match the lock's {}",
                p.sha256
            ));
        }
        out.commit()
            .map_err(|e| format!("storing {}: {e}", dest.display()))
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_recv_body(Some(Duration::from_secs(600)))
        .build()
        .new_agent()
}

fn http_error(url: &str, e: ureq::Error) -> String {
    match e {
        ureq::Error::StatusCode(code) => format!("{url}: HTTP {code}"),
        e => format!("{url}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packages::lock::Role;

    fn pkg(content: &[u8]) -> LockedPackage {
        LockedPackage {
            role: Role::Rootfs,
            name: "p".into(),
            version: "1".into(),
            file: "p_1_amd64.deb".into(),
            sha256: crate::io::hash::hex(&crate::io::hash::sha256_reader(content).unwrap().0),
            archive: Archive::Security,
            path: "pool/updates/main/p/p/p_1_amd64.deb".into(),
            size: content.len() as u64,
        }
    }

    fn sources(d: &Path, vendor: Option<PathBuf>) -> Sources {
        Sources {
            cache: d.join("cas"),
            vendor,
            // Port 9 on 127.0.0.1: nothing listens, the connection is refused.
            mirror: "http://127.0.0.1:9/debian".into(),
            security_mirror: "http://127.0.0.1:9/debian-security/".into(),
            snapshot: Some((
                "http://127.0.0.1:9/archive".into(),
                "20261125T000000Z".into(),
            )),
            local_root: d.join("recipe"),
        }
    }

    #[test]
    fn urls_follow_the_archive_and_snapshot_layout() {
        let d = tempfile::tempdir().unwrap();
        let s = sources(d.path(), None);
        let urls: Vec<String> = s.urls(&pkg(b"x")).into_iter().map(|u| u.1).collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:9/debian-security/pool/updates/main/p/p/p_1_amd64.deb",
                "http://127.0.0.1:9/archive/debian-security/20261125T000000Z/pool/updates/main/p/p/p_1_amd64.deb"
            ]
        );
    }

    #[test]
    fn vendor_copy_is_verified_and_lands_in_the_cache() {
        let d = tempfile::tempdir().unwrap();
        let vendor = d.path().join("vendor");
        std::fs::create_dir_all(&vendor).unwrap();
        let p = pkg(b"package bytes");
        std::fs::write(vendor.join(&p.file), b"package bytes").unwrap();
        let s = sources(d.path(), Some(vendor.clone()));
        let paths = s.obtain_all(std::slice::from_ref(&p), &|_| {}).unwrap();
        assert_eq!(std::fs::read(&paths[0]).unwrap(), b"package bytes");

        // A tampered vendor copy (and no reachable mirror) names every source.
        std::fs::remove_file(&paths[0]).unwrap();
        std::fs::write(vendor.join(&p.file), b"package bytez").unwrap();
        let m = s.obtain_all(std::slice::from_ref(&p), &|_| {}).unwrap_err();
        let tried: Vec<&str> = m[0].tried.iter().map(|t| t.0.as_str()).collect();
        assert_eq!(tried.len(), 4, "{tried:?}");
        assert!(m[0].tried[1].1.contains("does not match the lock"), "{m:?}");
        assert!(tried[2].starts_with("archive "), "{tried:?}");
        assert!(tried[3].starts_with("snapshot "), "{tried:?}");
        assert!(!s.cached(&p.sha256).exists(), "a bad copy is never cached");
    }

    #[test]
    fn corrupt_cache_entry_is_not_used() {
        let d = tempfile::tempdir().unwrap();
        let p = pkg(b"abc");
        let s = sources(d.path(), None);
        std::fs::create_dir_all(&s.cache).unwrap();
        std::fs::write(s.cached(&p.sha256), b"abd").unwrap();
        assert!(s.obtain_all(std::slice::from_ref(&p), &|_| {}).is_err());
        assert!(!s.cached(&p.sha256).exists());
    }

    #[test]
    fn local_debs_come_from_the_recipe_dir_and_must_match_the_lock() {
        let d = tempfile::tempdir().unwrap();
        let s = sources(d.path(), None);
        let mut p = pkg(b"local bytes");
        p.archive = Archive::Local;
        p.path = "debs/p_1_amd64.deb".into();
        assert!(s.urls(&p).is_empty());
        std::fs::create_dir_all(s.local_root.join("debs")).unwrap();
        std::fs::write(s.local_root.join(&p.path), b"local bytes").unwrap();
        let paths = s.obtain_all(std::slice::from_ref(&p), &|_| {}).unwrap();
        assert_eq!(std::fs::read(&paths[0]).unwrap(), b"local bytes");

        // Rebuilt with other content after the lock was written: refused,
        // naming the file.
        std::fs::remove_file(&paths[0]).unwrap();
        std::fs::write(s.local_root.join(&p.path), b"local bytez").unwrap();
        let m = s.obtain_all(std::slice::from_ref(&p), &|_| {}).unwrap_err();
        assert!(m[0].tried[1].0.starts_with("local "), "{m:?}");
        assert!(m[0].tried[1].1.contains("does not match the lock"), "{m:?}");
    }
}
