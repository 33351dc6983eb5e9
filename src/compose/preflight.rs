//! Checks of a recipe's inputs before any download or output: trust
//! material parses, host files exist and are what they claim, and nothing in
//! the recipe replaces what slate itself places in an image.

use super::ComposeError;
use super::rootfs::{AGENT_PATH, resolve};
use crate::bundle::{KeyError, PublicKey};
use crate::packages::deb::Unpacked;
use crate::recipe::{FileSource, KernelSource, Recipe};
use std::io::Read;
use std::path::Path;

/// Paths slate places in every root filesystem, with what they are. A
/// recipe file or a package that claims one of them (or, for a directory,
/// anything below it) is an error: the image would boot but could never
/// commit or take an update.
pub const PROTECTED: &[(&str, &str)] = &[
    (AGENT_PATH, "slate's update agent"),
    (
        "/etc/slate",
        "slate's agent configuration, trusted keys and shutdown hook",
    ),
    (
        "/etc/inittab",
        "the init table that starts slate's agent and the recipe's services",
    ),
    (
        "/sbin/init",
        "init (busybox init reading slate's /etc/inittab)",
    ),
];

/// Paths recipe files may not replace beyond [`PROTECTED`]: what init and
/// the early setup run, and the mount points of the boot chain.
const PROTECTED_FROM_FILES: &[(&str, &str)] = &[
    (
        "/bin/busybox",
        "busybox, which init and the early setup run",
    ),
    ("/bin/sh", "the shell that runs init's services"),
    ("/data", "the mount point of the persistent data partition"),
    ("/efi", "the mount point of the EFI system partition"),
    ("/proc", "a mount point of the early setup"),
    ("/sys", "a mount point of the early setup"),
    ("/dev", "a mount point of the early setup"),
    ("/run", "a mount point of the early setup"),
];

/// What protects `path`, if anything (`path` itself or a directory above it).
fn protected_by<'a>(path: &str, table: &'a [(&'a str, &'a str)]) -> Option<(&'a str, &'a str)> {
    let path = path.trim_end_matches('/');
    table.iter().copied().find(|(p, _)| {
        path == *p
            || path
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// What slate places at `path` (or above it), if anything, for an entry a
/// layer or overlay brings in; a directory slate also creates is fine.
pub fn protected(path: &str, is_dir: bool) -> Option<(&'static str, &'static str)> {
    let (p, what) = protected_by(path, PROTECTED)?;
    if is_dir && path.trim_end_matches('/') == p {
        return None;
    }
    Some((p, what))
}

/// Offset of the "HdrS" signature in a Linux x86 boot image (bzImage).
const BZIMAGE_MAGIC_OFFSET: usize = 0x202;

/// Whether `head` starts like a Linux bzImage: the boot-sector flag 0xAA55
/// at 0x1FE and "HdrS" at 0x202 (Documentation/arch/x86/boot.rst).
pub fn is_bzimage(head: &[u8]) -> bool {
    head.len() >= BZIMAGE_MAGIC_OFFSET + 4
        && head[0x1fe..0x200] == [0x55, 0xaa]
        && &head[BZIMAGE_MAGIC_OFFSET..BZIMAGE_MAGIC_OFFSET + 4] == b"HdrS"
}

fn read_head(path: &Path, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(n);
    std::fs::File::open(path)?
        .take(n as u64)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// Checks every input of `recipe` that is on the build host; `warn` gets
/// problems that do not stop the build.
pub fn check_inputs(recipe: &Recipe, warn: &dyn Fn(&str)) -> Result<(), ComposeError> {
    check_keys(recipe, warn)?;
    check_secure_boot(recipe)?;
    check_kernel(recipe)?;
    check_files(recipe)?;
    super::runtime::authorized_keys(recipe).map(|_| ())
}

/// The Secure Boot key and certificate load and belong together; returns
/// the loaded signer.
pub fn check_secure_boot(
    recipe: &Recipe,
) -> Result<Option<crate::authenticode::SigningKey>, ComposeError> {
    use crate::authenticode::{SignError, SigningKey};
    let Some(sb) = &recipe.secure_boot else {
        return Ok(None);
    };
    let (key, cert) = (resolve(recipe, &sb.key), resolve(recipe, &sb.cert));
    SigningKey::load(&key, &cert).map(Some).map_err(|e| {
        let field = match &e {
            SignError::Cert(_) => "secure_boot.cert",
            SignError::Io { context, .. } if context.ends_with(&cert.display().to_string()) => {
                "secure_boot.cert"
            }
            _ => "secure_boot.key",
        };
        recipe.error(field, e.to_string()).into()
    })
}

fn check_keys(recipe: &Recipe, warn: &dyn Fn(&str)) -> Result<(), ComposeError> {
    let u = &recipe.update;
    if u.public_keys.is_empty() && u.enabled {
        warn(&format!(
            "{}: [update] lists no public_keys: devices running this image can never \
             install an update. Add public_keys (slate keygen keys/dev, then \
             public_keys = [\"keys/dev.pub\"]) or set [update] enabled = false.",
            recipe.location("update")
        ));
    }
    for (i, k) in u.public_keys.iter().enumerate() {
        let field = format!("update.public_keys.{i}");
        let p = resolve(recipe, k);
        match PublicKey::read_pem_file(&p) {
            Ok(_) => {}
            Err(KeyError::Io { source, .. }) => {
                return Err(recipe
                    .error(
                        &field,
                        format!(
                            "cannot read {}: {source} (create a key pair with: slate keygen {})",
                            p.display(),
                            p.with_extension("").display()
                        ),
                    )
                    .into());
            }
            Err(e) => {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let message = if text.contains("PRIVATE KEY-----") {
                    format!(
                        "{} is a private signing key: it must never be shipped in an image; \
                         list its public half ({}) instead",
                        p.display(),
                        p.with_extension("pub").display()
                    )
                } else {
                    format!("not an Ed25519 public key (SPKI PEM): {e}")
                };
                return Err(recipe.error(&field, message).into());
            }
        }
    }
    Ok(())
}

fn check_kernel(recipe: &Recipe) -> Result<(), ComposeError> {
    let KernelSource::Path {
        vmlinuz,
        modules_dir,
    } = &recipe.kernel.source
    else {
        return Ok(());
    };
    let p = resolve(recipe, vmlinuz);
    let head = read_head(&p, 4096).map_err(|e| {
        ComposeError::Recipe(
            recipe.error("kernel.path", format!("cannot read {}: {e}", p.display())),
        )
    })?;
    if !is_bzimage(&head) {
        return Err(recipe
            .error(
                "kernel.path",
                format!(
                    "{} is not a Linux kernel image (no bzImage \"HdrS\" header at offset \
                     0x202; {} bytes read)",
                    p.display(),
                    head.len()
                ),
            )
            .into());
    }
    if let Some(d) = modules_dir {
        let d = resolve(recipe, d);
        if !d.is_dir() {
            return Err(recipe
                .error(
                    "kernel",
                    format!("modules_dir {} is not a directory", d.display()),
                )
                .into());
        }
    }
    Ok(())
}

fn check_files(recipe: &Recipe) -> Result<(), ComposeError> {
    for (i, f) in recipe.rootfs.files.iter().enumerate() {
        let field = format!("rootfs.files.{i}");
        for table in [PROTECTED, PROTECTED_FROM_FILES] {
            if let Some((path, what)) = protected_by(&f.dst, table) {
                let which = if path == f.dst.trim_end_matches('/') {
                    f.dst.clone()
                } else {
                    format!("{} (inside {path})", f.dst)
                };
                return Err(recipe
                    .error(
                        &format!("{field}.dst"),
                        format!(
                            "{which} is {what}, placed by slate; a recipe file cannot replace it"
                        ),
                    )
                    .into());
            }
        }
        if let FileSource::Host(src) = &f.source {
            let p = resolve(recipe, src);
            let md = std::fs::metadata(&p).map_err(|e| {
                ComposeError::Recipe(recipe.error(
                    &format!("{field}.src"),
                    format!("cannot read {}: {e}", p.display()),
                ))
            })?;
            if !md.is_file() {
                return Err(recipe
                    .error(
                        &format!("{field}.src"),
                        format!("{} is not a regular file", p.display()),
                    )
                    .into());
            }
            std::fs::File::open(&p).map_err(|e| {
                ComposeError::Recipe(recipe.error(
                    &format!("{field}.src"),
                    format!("cannot read {}: {e}", p.display()),
                ))
            })?;
        }
    }
    for (i, b) in recipe.rootfs.binaries.iter().enumerate() {
        let field = format!("rootfs.binaries.{i}");
        let path = b.to_string_lossy();
        if let Some((_, what)) = protected_by(&path, PROTECTED) {
            return Err(recipe
                .error(
                    &field,
                    format!("{path} is {what}, placed by slate; it cannot be replaced"),
                )
                .into());
        }
        std::fs::File::open(b).map_err(|e| {
            ComposeError::Recipe(recipe.error(&field, format!("cannot read {path}: {e}")))
        })?;
    }
    Ok(())
}

/// Refuses packages that ship a path slate places ([`PROTECTED`]), naming
/// the package and the recipe key that brought it in.
pub fn check_packages(recipe: &Recipe, packages: &[Unpacked]) -> Result<(), ComposeError> {
    for p in packages {
        for e in &p.entries {
            let Some((path, what)) = protected_by(&e.path, PROTECTED) else {
                continue;
            };
            // Directories slate also creates are fine; their contents are not.
            if e.path.trim_end_matches('/') == path
                && matches!(e.kind, crate::packages::deb::EntryKind::Dir)
            {
                continue;
            }
            let field = recipe
                .rootfs
                .packages
                .iter()
                .position(|n| *n == p.name)
                .map(|i| format!("rootfs.packages.{i}"))
                .unwrap_or_else(|| "rootfs.packages".into());
            let how = if field == "rootfs.packages" {
                format!("{} (a dependency)", p.name)
            } else {
                p.name.clone()
            };
            return Err(recipe
                .error(
                    &field,
                    format!(
                        "package {how} ships {}, which is {what}, placed by slate; \
                         remove the package or pick one without it",
                        e.path
                    ),
                )
                .into());
        }
    }
    Ok(())
}

/// Refuses a layer input that ships a path slate places, naming the layer
/// and the path (whiteouts are not entries and may name anything).
pub fn check_layer(
    recipe: &Recipe,
    layer: &super::layers::UnpackedLayer,
) -> Result<(), ComposeError> {
    for (blob, u) in layer.blobs.iter().zip(&layer.unpacked) {
        for e in &u.entries {
            if e.path
                .rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with(".wh."))
            {
                continue;
            }
            let is_dir = matches!(e.kind, crate::packages::deb::EntryKind::Dir);
            if let Some((p, what)) = protected(&e.path, is_dir) {
                return Err(recipe
                    .error(
                        &layer.layer.field.replace('[', ".").replace(']', ""),
                        format!(
                            "{} ships {}, which would replace {p} ({what}, placed by slate)",
                            blob.label, e.path
                        ),
                    )
                    .into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protection_covers_subpaths_only() {
        assert!(protected_by("/etc/slate/keys/0.pub", PROTECTED).is_some());
        assert!(protected_by("/etc/slate", PROTECTED).is_some());
        assert!(protected_by("/etc/slate/", PROTECTED).is_some());
        assert!(protected_by("/etc/slatex", PROTECTED).is_none());
        assert!(protected_by("/usr/bin/slate-agent", PROTECTED).is_some());
        assert!(protected_by("/etc/inittab.d", PROTECTED).is_none());
        assert!(protected_by("/data/x", PROTECTED_FROM_FILES).is_some());
    }

    #[test]
    fn packages_shipping_slate_paths_are_refused() {
        use crate::packages::deb::{DebEntry, EntryKind};
        let recipe = Recipe::parse(
            Path::new("r.toml"),
            "[image]\nname = \"x\"\nversion = \"1\"\n[kernel]\npackage = \"linux-image-amd64\"\n\
             [rootfs]\npackages = [\"busybox-static\", \"sysvinit-core\"]\n",
        )
        .unwrap();
        let entry = |path: &str, kind: EntryKind| DebEntry {
            path: path.into(),
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        let file = || EntryKind::File {
            staged: "f".into(),
            size: 1,
        };
        let pkg = |name: &str, entries: Vec<DebEntry>| Unpacked {
            name: name.into(),
            dir: "/nonexistent".into(),
            entries,
        };
        // Directories slate also makes, and other files: fine.
        let ok = [pkg(
            "busybox-static",
            vec![
                entry("/etc/slate", EntryKind::Dir),
                entry("/bin/busybox", file()),
            ],
        )];
        check_packages(&recipe, &ok).unwrap();
        let e = check_packages(
            &recipe,
            &[pkg("sysvinit-core", vec![entry("/sbin/init", file())])],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("r.toml:7: rootfs.packages[1]: package sysvinit-core ships /sbin/init"),
            "{e}"
        );
        let e = check_packages(
            &recipe,
            &[pkg("libfoo", vec![entry("/etc/inittab", file())])],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("rootfs.packages: package libfoo (a dependency) ships /etc/inittab"),
            "{e}"
        );
        let e = check_packages(
            &recipe,
            &[pkg("x", vec![entry("/etc/slate/keys/evil.pub", file())])],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/etc/slate/keys/evil.pub"), "{e}");
    }

    #[test]
    fn bzimage_magic() {
        let mut k = vec![0u8; 1024];
        assert!(!is_bzimage(&k));
        k[0x1fe] = 0x55;
        k[0x1ff] = 0xaa;
        k[0x202..0x206].copy_from_slice(b"HdrS");
        assert!(is_bzimage(&k));
        assert!(!is_bzimage(&k[..0x204]));
        assert!(!is_bzimage(b"myhost\n"));
    }
}
