//! Debian packages for an image: resolve with apt (private state), pin in a
//! lock file, download into a cache, unpack in Rust.

pub mod apt;
pub mod deb;
pub mod fetch;
pub mod lock;
pub mod vendor;

use crate::recipe::{KernelSource, Recipe, RecipeError};
use apt::{Apt, AptError, ResolvedUri};
use fetch::{Missing, Sources};
use lock::{Archive, LOCK_VERSION, LockFile, LockInputs, LockedPackage, Role};
use std::path::{Path, PathBuf};

/// Packages the boot chain always needs: the boot loader, and busybox for the
/// initramfs and init.
pub const BOOT_PACKAGES: [&str; 2] = ["busybox-static", "systemd-boot-efi"];

/// Why packages could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum PackagesError {
    /// A recipe field names something apt cannot provide.
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    /// apt failed.
    #[error(transparent)]
    Apt(#[from] AptError),
    /// The lock file is unusable.
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    /// Locked packages that no source could provide.
    #[error("{}", unavailable_message(.lock, .missing))]
    Unavailable {
        /// Lock path.
        lock: String,
        /// The packages and the sources tried for each.
        missing: Vec<Missing>,
    },
    /// `--locked` and the lock would change.
    #[error(
        "{lock}: {reason}; --locked forbids changing the lock (build without --locked to resolve again)"
    )]
    LockWouldChange {
        /// Lock path.
        lock: String,
        /// Why it would change.
        reason: String,
    },
    /// The kernel package does not contain a kernel.
    #[error("{0}")]
    Kernel(String),
}

/// The cache directory: `$SLATE_CACHE_DIR`, else `$XDG_CACHE_HOME/slate`,
/// else `~/.cache/slate`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SLATE_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("slate");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache").join("slate")
}

/// A downloaded, verified package.
#[derive(Debug, Clone)]
pub struct FetchedPackage {
    /// Its lock entry.
    pub locked: LockedPackage,
    /// The .deb in the cache.
    pub path: PathBuf,
}

/// Everything a build needs from the archive.
#[derive(Debug, Clone)]
pub struct ResolvedPackages {
    /// The lock that was used (and written).
    pub lock: LockFile,
    /// The packages, in lock order.
    pub packages: Vec<FetchedPackage>,
}

impl ResolvedPackages {
    /// Packages with a role.
    pub fn with_role(&self, role: Role) -> impl Iterator<Item = &FetchedPackage> {
        self.packages.iter().filter(move |p| p.locked.role == role)
    }
}

fn inputs_for(recipe: &Recipe) -> Result<LockInputs, PackagesError> {
    let a = &recipe.apt;
    let mut rootfs = recipe.rootfs.packages.clone();
    if !rootfs.iter().any(|p| p == "busybox-static") {
        // init and /bin/sh come from busybox.
        rootfs.push("busybox-static".into());
    }
    // The SSH server and NTP client `[debug]` and `[network]` ask for.
    rootfs.extend(recipe.runtime_packages());
    let snapshot = a
        .snapshot
        .as_ref()
        .map(|t| format!(" snapshot={t}"))
        .unwrap_or_default();
    Ok(LockInputs {
        apt: format!(
            "{} {} {} security={} arch={}{snapshot}",
            a.mirror,
            a.suite,
            a.components.join(","),
            a.security_mirror,
            a.architecture
        ),
        rootfs,
        kernel: match &recipe.kernel.source {
            KernelSource::Package(p) => p.clone(),
            KernelSource::Path { .. } => String::new(),
        },
        boot: BOOT_PACKAGES.iter().map(|s| s.to_string()).collect(),
        local: local_inputs(recipe)?,
    })
}

/// `path sha256` of every local .deb: a rebuilt .deb changes the inputs.
fn local_inputs(recipe: &Recipe) -> Result<Vec<String>, PackagesError> {
    recipe
        .rootfs
        .debs
        .iter()
        .map(|rel| {
            let host = recipe.dir().join(rel);
            let sha = apt::sha256_file(&host)?;
            Ok(format!("{} {sha}", rel.display()))
        })
        .collect()
}

fn unavailable_message(lock: &str, missing: &[Missing]) -> String {
    let Some(first) = missing.first() else {
        return format!("{lock}: no package missing");
    };
    let p = &first.package;
    let tried: Vec<String> = first
        .tried
        .iter()
        .map(|(source, why)| format!("{source}: {why}"))
        .collect();
    let more = if missing.len() > 1 {
        let names: Vec<&str> = missing[1..]
            .iter()
            .map(|m| m.package.name.as_str())
            .collect();
        format!(" (also missing: {})", names.join(", "))
    } else {
        String::new()
    };
    format!(
        "{lock}: cannot obtain {} {} (sha256 {}) from any source [{}]{more}; \
         either run `slate build --update-lock` to move to the archive's current versions, \
         or build from a vendor directory that has it (`slate vendor` writes one; \
         then `--vendor DIR` or `[apt] vendor`)",
        p.name,
        p.version,
        p.sha256,
        tried.join("; ")
    )
}

/// How [`provide`] may use the lock.
#[derive(Debug, Clone, Default)]
pub struct ProvideOptions {
    /// Resolve again even if the lock matches the recipe.
    pub update_lock: bool,
    /// Fail instead of changing the lock.
    pub locked: bool,
    /// Vendor directory (overrides `[apt] vendor`).
    pub vendor: Option<PathBuf>,
}

/// The `[apt]` configuration apt resolves against: a pinned snapshot
/// replaces the live mirrors.
pub fn effective_apt(recipe: &Recipe) -> crate::recipe::AptSpec {
    let mut a = recipe.apt.clone();
    if let Some(ts) = &a.snapshot {
        a.mirror = format!("{}/debian/{ts}", a.snapshot_mirror);
        if !a.security_mirror.is_empty() {
            a.security_mirror = format!("{}/debian-security/{ts}", a.snapshot_mirror);
        }
    }
    a
}

/// Where a build's packages may come from, in order.
pub fn sources(recipe: &Recipe, lock: &LockFile, cache: &Path, vendor: Option<&Path>) -> Sources {
    let a = effective_apt(recipe);
    let vendor = vendor
        .map(Path::to_path_buf)
        .or_else(|| recipe.apt.vendor.as_ref().map(|v| recipe.dir().join(v)));
    Sources {
        cache: cache.join("debs-sha256"),
        vendor,
        mirror: a.mirror,
        security_mirror: a.security_mirror,
        snapshot: lock
            .snapshot
            .as_ref()
            .map(|t| (recipe.apt.snapshot_mirror.clone(), t.clone())),
        local_root: recipe.dir().to_path_buf(),
    }
}

/// Reads the lock beside the recipe (resolving it again when it is missing,
/// does not match the recipe, or `update_lock` is set), obtains every locked
/// package from the first source that has its exact bytes. The caller
/// stores [`ResolvedPackages::lock`] beside the recipe once the build
/// succeeded (a failed build changes no lock).
pub fn provide(
    recipe: &Recipe,
    cache: &Path,
    opts: &ProvideOptions,
    status: &dyn Fn(&str),
) -> Result<ResolvedPackages, PackagesError> {
    let lock_path = lock::lock_path(&recipe.path);
    let lock = current_lock(recipe, cache, &lock_path, opts, status)?;
    let sources = sources(recipe, &lock, cache, opts.vendor.as_deref());
    let paths = sources
        .obtain_all(&lock.packages, status)
        .map_err(|missing| PackagesError::Unavailable {
            lock: lock_path.display().to_string(),
            missing,
        })?;
    let packages = lock
        .packages
        .iter()
        .zip(paths)
        .map(|(p, path)| FetchedPackage {
            locked: p.clone(),
            path,
        })
        .collect();
    Ok(ResolvedPackages { lock, packages })
}

/// The lock to build from: the file when it matches the recipe, else a
/// fresh resolution (refused under `--locked`).
fn current_lock(
    recipe: &Recipe,
    cache: &Path,
    lock_path: &Path,
    opts: &ProvideOptions,
    status: &dyn Fn(&str),
) -> Result<LockFile, PackagesError> {
    let inputs = inputs_for(recipe)?;
    let existing = LockFile::load(lock_path);
    if opts.locked {
        let reason = match (&existing, opts.update_lock) {
            (_, true) => Some("--update-lock asks to rewrite it".to_string()),
            (Err(e), _) => Some(e.to_string()),
            (Ok(None), _) => Some("there is no lock file".to_string()),
            (Ok(Some(l)), _) if l.inputs != inputs => {
                Some("the recipe's packages or [apt] settings changed".to_string())
            }
            _ => None,
        };
        if let Some(reason) = reason {
            return Err(PackagesError::LockWouldChange {
                lock: lock_path.display().to_string(),
                reason,
            });
        }
    }
    if !opts.update_lock {
        if let Some(l) = existing?.filter(|l| l.inputs == inputs) {
            return Ok(l);
        }
    }
    let apt = Apt::new(cache, &effective_apt(recipe))?;
    let _guard = apt.lock()?;
    status("resolving packages");
    let progress = crate::progress::Progress::spinner("resolving");
    apt.update()?;
    let lock = resolve(recipe, &apt, inputs);
    progress.finish();
    lock
}

/// Resolves the three closures (image, kernel, boot chain) with one apt run
/// each, concurrently, then pins every package with its path and digest.
fn resolve(recipe: &Recipe, apt: &Apt, inputs: LockInputs) -> Result<LockFile, PackagesError> {
    let kernel_req: Vec<String> = if inputs.kernel.is_empty() {
        Vec::new()
    } else {
        vec![inputs.kernel.clone()]
    };
    // apt takes local .debs by path and resolves their dependencies with
    // the rest.
    let local = local_debs(recipe)?;
    let mut rootfs_req = inputs.rootfs.clone();
    rootfs_req.extend(local.iter().map(|(abs, _)| abs.display().to_string()));
    let (rootfs, kernel, boot) = std::thread::scope(|s| {
        let r = s.spawn(|| apt.resolve_uris(&rootfs_req));
        let k = s.spawn(|| apt.resolve_uris(&kernel_req));
        let b = apt.resolve_uris(&inputs.boot);
        (
            r.join().unwrap_or_else(|_| Err(panicked())),
            k.join().unwrap_or_else(|_| Err(panicked())),
            b,
        )
    });
    let rootfs = rootfs.map_err(|e| match e {
        AptError::UnknownPackage(name) => {
            let field = recipe
                .rootfs
                .packages
                .iter()
                .position(|p| *p == name)
                .map(|i| format!("rootfs.packages.{i}"))
                .unwrap_or_else(|| "rootfs.packages".into());
            let message = format!(
                "unknown package {name:?} (not in {} {})",
                recipe.apt.mirror, recipe.apt.suite
            );
            recipe.error(&field, message).into()
        }
        e => PackagesError::from(e),
    })?;
    let kernel = kernel.map_err(|e| match e {
        AptError::UnknownPackage(name) => recipe
            .error("kernel.package", format!("unknown package {name:?}"))
            .into(),
        e => PackagesError::from(e),
    })?;
    let boot = boot?;

    let mut packages: Vec<(Role, ResolvedUri)> =
        rootfs.into_iter().map(|p| (Role::Rootfs, p)).collect();
    if !inputs.kernel.is_empty() {
        let images = kernel_images(kernel);
        if images.is_empty() {
            return Err(recipe
                .error(
                    "kernel.package",
                    format!("{} does not provide a linux-image package", inputs.kernel),
                )
                .into());
        }
        packages.extend(images.into_iter().map(|p| (Role::Kernel, p)));
    }
    packages.extend(
        boot.into_iter()
            .filter(|p| inputs.boot.contains(&p.package.name))
            .map(|p| (Role::Boot, p)),
    );

    let spec = effective_apt(recipe);
    let mut locked = Vec::new();
    for (role, r) in packages {
        if let Some(abs) = r.uri.uri.strip_prefix("file:").map(PathBuf::from) {
            locked.push(local_lock_entry(recipe, &local, &abs, r)?);
            continue;
        }
        let (archive, path) = locate(&r.uri.uri, &spec).ok_or_else(|| {
            PackagesError::Apt(AptError::Failed {
                action: format!("locating {}", r.package.name),
                message: format!("{} is not below a configured mirror", r.uri.uri),
            })
        })?;
        locked.push(LockedPackage {
            role,
            name: r.package.name,
            version: r.package.version,
            file: r.uri.file_name,
            sha256: r.uri.sha256,
            size: r.uri.size,
            archive,
            path,
        });
    }
    locked.sort();
    locked.dedup();
    Ok(LockFile {
        version: LOCK_VERSION,
        inputs,
        snapshot: recipe
            .apt
            .snapshot
            .clone()
            .or_else(|| apt.release_timestamp()),
        packages: locked,
    })
}

/// The recipe's local .debs: (absolute path, path relative to the recipe).
fn local_debs(recipe: &Recipe) -> Result<Vec<(PathBuf, PathBuf)>, PackagesError> {
    recipe
        .rootfs
        .debs
        .iter()
        .enumerate()
        .map(|(i, rel)| {
            let abs = std::fs::canonicalize(recipe.dir().join(rel)).map_err(|e| {
                recipe.error(
                    &format!("rootfs.debs.{i}"),
                    format!("cannot read {}: {e}", rel.display()),
                )
            })?;
            Ok((abs, rel.clone()))
        })
        .collect()
}

/// The lock entry of a local .deb apt resolved: hashed here (apt gives no
/// digest for a file), its path kept relative to the recipe.
fn local_lock_entry(
    recipe: &Recipe,
    local: &[(PathBuf, PathBuf)],
    abs: &Path,
    r: ResolvedUri,
) -> Result<LockedPackage, PackagesError> {
    let rel = local
        .iter()
        .find(|(a, _)| a == abs)
        .map(|(_, rel)| rel.clone())
        .ok_or_else(|| {
            recipe.error(
                "rootfs.debs",
                format!("apt chose {} which the recipe does not name", abs.display()),
            )
        })?;
    let size = std::fs::metadata(abs)
        .map_err(|source| AptError::Io {
            what: "reading",
            path: abs.to_path_buf(),
            source,
        })?
        .len();
    Ok(LockedPackage {
        role: Role::Rootfs,
        name: r.package.name,
        version: r.package.version,
        file: r.uri.file_name,
        sha256: apt::sha256_file(abs)?,
        size,
        archive: Archive::Local,
        path: rel.display().to_string(),
    })
}

fn panicked() -> AptError {
    AptError::Failed {
        action: "resolving packages".into(),
        message: "resolver thread panicked".into(),
    }
}

/// Only the kernel images carry bytes into the image: their
/// maintainer-script dependencies (initramfs-tools, kmod, ...) are not used,
/// and a metapackage (`linux-image-cloud-amd64`) holds only documentation.
fn kernel_images(closure: Vec<ResolvedUri>) -> Vec<ResolvedUri> {
    let images: Vec<ResolvedUri> = closure
        .into_iter()
        .filter(|p| p.package.name.starts_with("linux-image-"))
        .collect();
    let versioned = |p: &ResolvedUri| {
        p.package.name["linux-image-".len()..].starts_with(|c: char| c.is_ascii_digit())
    };
    if images.iter().any(versioned) {
        images.into_iter().filter(versioned).collect()
    } else {
        images
    }
}

/// Which archive a download URL belongs to, and its path below the root.
fn locate(uri: &str, spec: &crate::recipe::AptSpec) -> Option<(Archive, String)> {
    for (archive, base) in [
        (Archive::Security, &spec.security_mirror),
        (Archive::Main, &spec.mirror),
    ] {
        if base.is_empty() {
            continue;
        }
        let prefix = format!("{}/", base.trim_end_matches('/'));
        if let Some(path) = uri.strip_prefix(&prefix) {
            return Some((archive, path.to_string()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_map_to_their_archive() {
        let spec = Recipe::default_apt();
        assert_eq!(
            locate(
                "http://deb.debian.org/debian-security/pool/updates/main/c/curl/c.deb",
                &spec
            ),
            Some((Archive::Security, "pool/updates/main/c/curl/c.deb".into()))
        );
        assert_eq!(
            locate("http://deb.debian.org/debian/pool/main/b/b/b.deb", &spec),
            Some((Archive::Main, "pool/main/b/b/b.deb".into()))
        );
        assert_eq!(locate("http://elsewhere/pool/x.deb", &spec), None);
    }
}
