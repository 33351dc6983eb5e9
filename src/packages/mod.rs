//! Debian packages for an image: resolve with apt (private state), pin in a
//! lock file, download into a cache, unpack in Rust.

pub mod apt;
pub mod deb;
pub mod lock;

use crate::recipe::{KernelSource, Recipe, RecipeError};
use apt::{Apt, AptError, PackageVersion};
use lock::{LOCK_VERSION, LockFile, LockInputs, LockedPackage, Role};
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
    /// A locked version is gone from the archive.
    #[error(
        "{lock}: {name} {version} is no longer available from the archive ({reason}); run slate build --update-lock"
    )]
    Stale {
        /// Lock path.
        lock: String,
        /// Package.
        name: String,
        /// Locked version.
        version: String,
        /// apt's message.
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

fn inputs_for(recipe: &Recipe) -> LockInputs {
    let a = &recipe.apt;
    let mut rootfs = recipe.rootfs.packages.clone();
    if !rootfs.iter().any(|p| p == "busybox-static") {
        // init and /bin/sh come from busybox.
        rootfs.push("busybox-static".into());
    }
    LockInputs {
        apt: format!(
            "{} {} {} security={} arch={}",
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
    }
}

/// Resolves (or reads from the lock), downloads and verifies the recipe's
/// packages. The caller stores [`ResolvedPackages::lock`] beside the recipe
/// once the build succeeded (a failed build changes no lock).
pub fn provide(
    recipe: &Recipe,
    cache: &Path,
    update_lock: bool,
    status: &dyn Fn(&str),
) -> Result<ResolvedPackages, PackagesError> {
    let apt = Apt::new(cache, &recipe.apt)?;
    let _lock = apt.lock()?;
    let lock_path = lock::lock_path(&recipe.path);
    let inputs = inputs_for(recipe);
    let existing = if update_lock {
        None
    } else {
        LockFile::load(&lock_path)?.filter(|l| l.inputs == inputs)
    };
    let lock = match existing {
        Some(l) => l,
        None => {
            status("resolving packages");
            apt.update()?;
            resolve(recipe, &apt, inputs)?
        }
    };
    let mut packages = Vec::new();
    for p in &lock.packages {
        let cached = apt.debs_dir().join(&p.file);
        if cached.exists() && apt::sha256_file(&cached)? == p.sha256 {
            packages.push(FetchedPackage {
                locked: p.clone(),
                path: cached,
            });
            continue;
        }
        status(&format!("downloading {} {}", p.name, p.version));
        let pv = PackageVersion {
            name: p.name.clone(),
            version: p.version.clone(),
        };
        let fetched = match apt.fetch(&pv) {
            Ok(f) => f,
            Err(_) if !apt.has_lists() => {
                apt.update()?;
                apt.fetch(&pv).map_err(|e| stale(&lock_path, p, e))?
            }
            Err(e) => {
                // The lists may be older than the lock: refresh once.
                apt.update()?;
                apt.fetch(&pv).map_err(|_| stale(&lock_path, p, e))?
            }
        };
        if fetched.1 != p.sha256 {
            return Err(PackagesError::Stale {
                lock: lock_path.display().to_string(),
                name: p.name.clone(),
                version: p.version.clone(),
                reason: format!(
                    "archive now has sha256 {} instead of {}",
                    fetched.1, p.sha256
                ),
            });
        }
        packages.push(FetchedPackage {
            locked: p.clone(),
            path: fetched.0,
        });
    }
    Ok(ResolvedPackages { lock, packages })
}

fn stale(lock_path: &Path, p: &LockedPackage, e: AptError) -> PackagesError {
    PackagesError::Stale {
        lock: lock_path.display().to_string(),
        name: p.name.clone(),
        version: p.version.clone(),
        reason: e.to_string(),
    }
}

fn resolve(recipe: &Recipe, apt: &Apt, inputs: LockInputs) -> Result<LockFile, PackagesError> {
    let mut packages = Vec::new();
    // Resolve each requested rootfs package alone first, so an unknown name
    // is reported against its own recipe field.
    let closure = match apt.resolve(&inputs.rootfs) {
        Ok(c) => c,
        Err(AptError::UnknownPackage(name)) => {
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
            return Err(recipe.error(&field, message).into());
        }
        Err(e) => return Err(e.into()),
    };
    for pv in closure {
        packages.push((Role::Rootfs, pv));
    }
    if !inputs.kernel.is_empty() {
        let closure = match apt.resolve(std::slice::from_ref(&inputs.kernel)) {
            Ok(c) => c,
            Err(AptError::UnknownPackage(name)) => {
                return Err(recipe
                    .error("kernel.package", format!("unknown package {name:?}"))
                    .into());
            }
            Err(e) => return Err(e.into()),
        };
        // Only the kernel images matter: their maintainer-script
        // dependencies (initramfs-tools, kmod, ...) are not used.
        let images: Vec<_> = closure
            .into_iter()
            .filter(|p| p.name.starts_with("linux-image-"))
            .collect();
        if images.is_empty() {
            return Err(recipe
                .error(
                    "kernel.package",
                    format!("{} does not provide a linux-image package", inputs.kernel),
                )
                .into());
        }
        for pv in images {
            packages.push((Role::Kernel, pv));
        }
    }
    for name in &inputs.boot {
        let closure = apt.resolve(std::slice::from_ref(name))?;
        if let Some(pv) = closure.into_iter().find(|p| &p.name == name) {
            packages.push((Role::Boot, pv));
        }
    }
    let mut locked = Vec::new();
    for (role, pv) in packages {
        let uri = apt.uri(&pv)?;
        locked.push(LockedPackage {
            role,
            name: pv.name,
            version: pv.version,
            file: uri.file_name,
            sha256: uri.sha256,
        });
    }
    locked.sort();
    locked.dedup();
    Ok(LockFile {
        version: LOCK_VERSION,
        inputs,
        packages: locked,
    })
}
