//! The build pipeline: everything is written into a private directory next
//! to the output and renamed into place at the end, so a failed build never
//! leaves a partial `disk.img` behind.

use super::esp::{EspInputs, HostFile, esp_tree};
use super::initramfs::{initramfs_tree, plan_modules};
use super::rootfs::{RootfsInputs, rootfs_tree, staged_file};
use super::{ComposeError, disk};
use crate::agent::cmdline;
use crate::agent::config::AgentConfig;
use crate::boot_env::{EntrySpec, SlotId};
use crate::build_manifest::{self, Artifact, BuildManifest, PackageRecord};
use crate::filesystems::{cpio, ext4};
use crate::io::hash;
use crate::kernel::modules::{ModuleError, ModuleIndex};
use crate::packages::deb::{self, Unpacked};
use crate::packages::lock::Role;
use crate::packages::{self, ResolvedPackages};
use crate::progress::Progress;
use crate::recipe::{KernelSource, Recipe};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// File names inside a build directory.
pub mod files {
    /// The full disk image.
    pub const DISK: &str = "disk.img";
    /// The slot filesystem.
    pub const ROOTFS: &str = "rootfs.ext4";
    /// The kernel.
    pub const KERNEL: &str = "vmlinuz";
    /// The initramfs.
    pub const INITRD: &str = "initrd.img";
    /// Boot parameters for the agent when it installs this build.
    pub const BOOTSPEC: &str = "boot.json";
    /// The block map of the disk image, for bmaptool.
    pub const BMAP: &str = "disk.img.bmap";
}

/// What `slate build` was asked to do.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The recipe file.
    pub recipe: PathBuf,
    /// Output directory (default `out/<image name>`).
    pub out_dir: Option<PathBuf>,
    /// Re-resolve packages even if the lock matches.
    pub update_lock: bool,
    /// Package cache.
    pub cache: PathBuf,
    /// The executable embedded as the agent.
    pub agent: PathBuf,
}

/// Boot parameters shipped with a build (`boot.json`), so the agent can
/// write a boot entry for it after installing it from a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSpec {
    /// Image name.
    pub name: String,
    /// Image version.
    pub version: String,
    /// The recipe's kernel command line (without slate's parameters).
    pub cmdline: String,
    /// Kernel release.
    pub kernel_release: String,
    /// Watchdog period for the initramfs, seconds.
    pub watchdog_secs: u64,
}

/// Result of a build.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// Where the outputs are.
    pub dir: PathBuf,
    /// Their manifest.
    pub manifest: BuildManifest,
}

/// Partition GUIDs of a disk built from a recipe: derived from the image
/// name and version, so builds are reproducible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskIds {
    /// Disk GUID.
    pub disk: String,
    /// ESP.
    pub esp: String,
    /// Slot A root.
    pub root_a: String,
    /// Slot B root.
    pub root_b: String,
    /// Data.
    pub data: String,
}

impl DiskIds {
    /// Derives the GUIDs.
    pub fn derive(name: &str, version: &str) -> Self {
        let id = |part: &str| {
            crate::reproducible::format_uuid(&crate::reproducible::derived_uuid(&[
                b"slate-gpt",
                name.as_bytes(),
                version.as_bytes(),
                part.as_bytes(),
            ]))
        };
        Self {
            disk: id("disk"),
            esp: id("esp"),
            root_a: id("root-a"),
            root_b: id("root-b"),
            data: id("data"),
        }
    }

    /// The root GUID of a slot.
    pub fn root(&self, slot: SlotId) -> &str {
        match slot {
            SlotId::A => &self.root_a,
            SlotId::B => &self.root_b,
        }
    }
}

/// Kernel files found in the kernel package (or on the host).
struct KernelFiles {
    vmlinuz: PathBuf,
    vmlinuz_size: u64,
    release: String,
    modules: ModuleIndex,
}

fn find_kernel(recipe: &Recipe, kernel_pkgs: &[Unpacked]) -> Result<KernelFiles, ComposeError> {
    match &recipe.kernel.source {
        KernelSource::Package(name) => {
            let mut found = None;
            for p in kernel_pkgs {
                for e in &p.entries {
                    if let (Some(rel), deb::EntryKind::File { staged, size }) =
                        (e.path.strip_prefix("/boot/vmlinuz-"), &e.kind)
                    {
                        found = Some((p, rel.to_string(), p.dir.join(staged), *size));
                    }
                }
            }
            let (pkg, release, vmlinuz, vmlinuz_size) = found.ok_or_else(|| {
                ComposeError::Recipe(recipe.error(
                    "kernel.package",
                    format!("{name} contains no /boot/vmlinuz-*"),
                ))
            })?;
            let prefix = format!("/lib/modules/{release}/");
            let mut files = Vec::new();
            let mut builtin = String::new();
            for e in &pkg.entries {
                if let (Some(rel), deb::EntryKind::File { staged, .. }) =
                    (e.path.strip_prefix(&prefix), &e.kind)
                {
                    if rel == "modules.builtin" {
                        builtin = std::fs::read_to_string(pkg.dir.join(staged))
                            .map_err(|e| ComposeError::io("reading", &pkg.dir.join(staged), e))?;
                    }
                    files.push((rel.to_string(), pkg.dir.join(staged)));
                }
            }
            let modules = ModuleIndex::new(&release, files, &builtin)
                .map_err(|e| ComposeError::Other(e.to_string()))?;
            Ok(KernelFiles {
                vmlinuz,
                vmlinuz_size,
                release,
                modules,
            })
        }
        KernelSource::Path {
            vmlinuz,
            modules_dir,
        } => {
            let vmlinuz = super::rootfs::resolve(recipe, vmlinuz);
            let size = std::fs::metadata(&vmlinuz)
                .map_err(|e| {
                    ComposeError::Recipe(recipe.error(
                        "kernel.path",
                        format!("cannot read {}: {e}", vmlinuz.display()),
                    ))
                })?
                .len();
            let (files, builtin, release) = match modules_dir {
                Some(d) => {
                    let d = super::rootfs::resolve(recipe, d);
                    let files = crate::kernel::modules::scan_modules_dir(&d)
                        .map_err(|e| ComposeError::Other(e.to_string()))?;
                    let builtin =
                        std::fs::read_to_string(d.join("modules.builtin")).unwrap_or_default();
                    let release = d
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    (files, builtin, release)
                }
                None => (Vec::new(), String::new(), "host".into()),
            };
            let modules = ModuleIndex::new(&release, files, &builtin)
                .map_err(|e| ComposeError::Other(e.to_string()))?;
            Ok(KernelFiles {
                vmlinuz,
                vmlinuz_size: size,
                release,
                modules,
            })
        }
    }
}

fn unpack_role(
    resolved: &ResolvedPackages,
    role: Role,
    cache: &Path,
) -> Result<Vec<Unpacked>, ComposeError> {
    resolved
        .with_role(role)
        .map(|p| deb::unpack(&p.path, &p.locked.sha256, &p.locked.name, cache).map_err(Into::into))
        .collect()
}

fn artifact(dir: &Path, name: &str, file: &str) -> Result<Artifact, ComposeError> {
    let path = dir.join(file);
    let f = std::fs::File::open(&path).map_err(|e| ComposeError::io("reading", &path, e))?;
    let (digest, size) = hash::sha256_reader(std::io::BufReader::with_capacity(1 << 20, f))
        .map_err(|e| ComposeError::io("reading", &path, e))?;
    Ok(Artifact {
        name: name.into(),
        file: file.into(),
        size,
        sha256: hash::hex(&digest),
    })
}

/// Runs a build.
pub fn build(opts: &BuildOptions, status: &dyn Fn(&str)) -> Result<BuildOutput, ComposeError> {
    let recipe = Recipe::load(&opts.recipe)?;
    let out_dir = opts
        .out_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("out").join(&recipe.name));
    // Never replace what slate did not write; checked before any slow work.
    let out = super::outdir::check(&out_dir)?;
    // Keys, kernel, files and protected paths, before any slow work.
    super::preflight::check_inputs(&recipe, &|w| eprintln!("slate: warning: {w}"))?;

    let resolved = packages::provide(&recipe, &opts.cache, opts.update_lock, status)?;
    status("unpacking packages");
    let rootfs_pkgs = unpack_role(&resolved, Role::Rootfs, &opts.cache)?;
    let kernel_pkgs = unpack_role(&resolved, Role::Kernel, &opts.cache)?;
    let boot_pkgs = unpack_role(&resolved, Role::Boot, &opts.cache)?;
    super::preflight::check_packages(&recipe, &rootfs_pkgs)?;

    // Timestamps: SOURCE_DATE_EPOCH, else the newest file in the packages
    // (deterministic for a given lock).
    let epoch = match crate::reproducible::source_date_epoch()
        .map_err(|e| ComposeError::Other(e.to_string()))?
    {
        Some(e) => e,
        None => rootfs_pkgs
            .iter()
            .flat_map(|p| p.entries.iter().map(|e| e.mtime))
            .max()
            .unwrap_or(0),
    };

    let kernel = find_kernel(&recipe, &kernel_pkgs)?;
    let plan = plan_modules(&kernel.modules, &recipe.kernel.modules).map_err(|e| match e {
        ModuleError::Unknown { ref name, .. } => {
            let field = recipe
                .kernel
                .modules
                .iter()
                .position(|m| m == name)
                .map(|i| format!("kernel.modules.{i}"))
                .unwrap_or_else(|| "kernel.modules".into());
            ComposeError::Recipe(recipe.error(&field, e.to_string()))
        }
        e => ComposeError::Other(e.to_string()),
    })?;

    let work = super::outdir::work_dir(&out)?;
    let w = work.path();

    // initramfs
    status("writing initramfs");
    let (busybox, busybox_size) = staged_file(&boot_pkgs, "/bin/busybox")
        .ok_or_else(|| ComposeError::Other("busybox-static has no /bin/busybox".into()))?;
    let applets = super::rootfs::busybox_applets(&busybox)?;
    let mut initramfs = initramfs_tree(&busybox, busybox_size, &applets, &plan, epoch)?;
    initramfs.clamp_mtimes(epoch);
    let initrd_path = w.join(files::INITRD);
    {
        let f = std::fs::File::create(&initrd_path)
            .map_err(|e| ComposeError::io("creating", &initrd_path, e))?;
        let mut bw = std::io::BufWriter::with_capacity(1 << 20, f);
        cpio::write_cpio(&initramfs, cpio::Compression::Zstd, &mut bw)
            .map_err(|e| ComposeError::Other(format!("writing {}: {e}", initrd_path.display())))?;
        use std::io::Write;
        bw.flush()
            .map_err(|e| ComposeError::io("writing", &initrd_path, e))?;
    }
    let kernel_out = w.join(files::KERNEL);
    std::fs::copy(&kernel.vmlinuz, &kernel_out)
        .map_err(|e| ComposeError::io("copying", &kernel.vmlinuz, e))?;

    // rootfs
    status("composing root filesystem");
    let watchdog_secs = recipe.health.watchdog.as_secs().max(1);
    let agent_config = AgentConfig {
        name: recipe.name.clone(),
        version: recipe.version.to_string(),
        compatible: recipe.compatible.clone(),
        security_version: recipe.update.security_version,
        health_command: recipe.health.command.clone(),
        health_timeout_ms: recipe.health.timeout.as_millis() as u64,
        health_retries: recipe.health.retries,
        health_interval_ms: recipe.health.interval.as_millis() as u64,
        tries: recipe.update.tries,
        public_keys: (0..recipe.update.public_keys.len())
            .map(|i| PathBuf::from(format!("/etc/slate/keys/{i}.pub")))
            .collect(),
        threshold: recipe.update.threshold,
        state_dir: "/data/slate".into(),
        esp_mount: "/efi".into(),
        boot_loader: "systemd-boot".into(),
        watchdog_secs,
    };
    let mut rootfs = rootfs_tree(
        &recipe,
        &RootfsInputs {
            packages: &rootfs_pkgs,
            agent: &opts.agent,
            agent_config: &agent_config,
            mtime: epoch,
        },
    )?;
    rootfs.clamp_mtimes(epoch);
    let rootfs_path = w.join(files::ROOTFS);
    let ext4_opts = ext4::Ext4Options {
        size: recipe.rootfs.size,
        label: format!("{}-root", recipe.name),
        uuid: Some(crate::reproducible::derived_uuid(&[
            b"slate-rootfs",
            recipe.name.as_bytes(),
            recipe.version.as_str().as_bytes(),
        ])),
        journal: false,
        timestamp: Some(epoch),
        ..Default::default()
    };
    let plan = match ext4::Ext4Plan::new(&rootfs, &ext4_opts) {
        Ok(p) => p,
        Err(ext4::Ext4Error::TooSmall { needed, size }) => {
            return Err(recipe
                .error(
                    "rootfs.size",
                    format!(
                        "tree needs at least {} MiB, rootfs.size is {} MiB",
                        needed.mib_ceil(),
                        size.get() >> 20
                    ),
                )
                .into());
        }
        Err(e) => {
            return Err(ComposeError::Other(format!(
                "planning the root filesystem: {e}"
            )));
        }
    };
    if plan.size() > recipe.disk.slot {
        let needed = ext4::required_size(&rootfs, &ext4_opts)
            .map_err(|e| ComposeError::Other(format!("sizing the root filesystem: {e}")))?;
        let field = if recipe.rootfs.size.is_some() && needed <= recipe.disk.slot {
            "rootfs.size"
        } else {
            "disk.slot"
        };
        return Err(recipe
            .error(
                field,
                format!(
                    "the root filesystem needs {} MiB ({} MiB at least) but a slot holds {} MiB",
                    plan.size().mib_ceil(),
                    needed.mib_ceil(),
                    recipe.disk.slot.get() >> 20
                ),
            )
            .into());
    }
    {
        let f = std::fs::File::create(&rootfs_path)
            .map_err(|e| ComposeError::io("creating", &rootfs_path, e))?;
        f.set_len(plan.size().get())
            .map_err(|e| ComposeError::io("sizing", &rootfs_path, e))?;
        let progress = Progress::bytes(plan.data_bytes(), "rootfs");
        plan.write(&f, &progress)
            .map_err(|e| ComposeError::Other(format!("writing {}: {e}", rootfs_path.display())))?;
        progress.finish();
        f.sync_all()
            .map_err(|e| ComposeError::io("syncing", &rootfs_path, e))?;
    }

    // ESP and disk
    status("writing disk image");
    let ids = DiskIds::derive(&recipe.name, recipe.version.as_str());
    let entry = |slot: SlotId| EntrySpec {
        title: format!("{} {} (slot {slot})", recipe.name, recipe.version),
        version: recipe.version.to_string(),
        options: cmdline::compose(
            &recipe.kernel.cmdline,
            slot,
            ids.root(slot),
            &ids.data,
            &ids.esp,
            watchdog_secs,
        ),
    };
    let (loader, loader_size) =
        staged_file(&boot_pkgs, crate::boot_env::systemd_boot::PACKAGE_BINARY).ok_or_else(
            || {
                ComposeError::Other(format!(
                    "systemd-boot-efi has no {}",
                    crate::boot_env::systemd_boot::PACKAGE_BINARY
                ))
            },
        )?;
    let initrd_size = std::fs::metadata(&initrd_path)
        .map_err(|e| ComposeError::io("reading", &initrd_path, e))?
        .len();
    let esp = esp_tree(&EspInputs {
        loader: HostFile {
            path: &loader,
            size: loader_size,
        },
        kernel: HostFile {
            path: &kernel_out,
            size: kernel.vmlinuz_size,
        },
        initrd: HostFile {
            path: &initrd_path,
            size: initrd_size,
        },
        entries: [(SlotId::A, entry(SlotId::A)), (SlotId::B, entry(SlotId::B))],
        mtime: epoch,
    })?;
    let disk_path = w.join(files::DISK);
    disk::write_disk(
        &disk_path,
        &disk::DiskInputs {
            recipe: &recipe,
            ids: &ids,
            esp: &esp,
            rootfs: &rootfs_path,
            epoch,
        },
    )?;
    crate::filesystems::bmap::write_bmap(&disk_path, &w.join(files::BMAP))
        .map_err(|e| ComposeError::io("writing the block map of", &disk_path, e))?;

    let bootspec = BootSpec {
        name: recipe.name.clone(),
        version: recipe.version.to_string(),
        cmdline: recipe.kernel.cmdline.clone(),
        kernel_release: kernel.release.clone(),
        watchdog_secs,
    };
    let mut bootspec_json =
        serde_json::to_string_pretty(&bootspec).map_err(|e| ComposeError::Other(e.to_string()))?;
    bootspec_json.push('\n');
    let bootspec_path = w.join(files::BOOTSPEC);
    std::fs::write(&bootspec_path, bootspec_json)
        .map_err(|e| ComposeError::io("writing", &bootspec_path, e))?;

    status("hashing outputs");
    let manifest = BuildManifest {
        format: build_manifest::FORMAT,
        name: recipe.name.clone(),
        version: recipe.version.to_string(),
        compatible: recipe.compatible.clone(),
        security_version: recipe.update.security_version,
        source_date_epoch: epoch,
        artifacts: vec![
            artifact(w, "rootfs", files::ROOTFS)?,
            artifact(w, "kernel", files::KERNEL)?,
            artifact(w, "initrd", files::INITRD)?,
            artifact(w, "boot", files::BOOTSPEC)?,
        ],
        disk: Some(artifact(w, "disk", files::DISK)?),
        packages: resolved
            .packages
            .iter()
            .map(|p| PackageRecord {
                name: p.locked.name.clone(),
                version: p.locked.version.clone(),
                sha256: p.locked.sha256.clone(),
            })
            .collect(),
    };
    let manifest_path = w.join(build_manifest::FILE_NAME);
    std::fs::write(&manifest_path, manifest.to_json())
        .map_err(|e| ComposeError::io("writing", &manifest_path, e))?;
    for f in [
        files::DISK,
        files::ROOTFS,
        files::KERNEL,
        files::INITRD,
        files::BOOTSPEC,
    ] {
        let p = w.join(f);
        std::fs::File::open(&p)
            .and_then(|f| f.sync_all())
            .map_err(|e| ComposeError::io("syncing", &p, e))?;
    }

    // Swap the finished directory into place, then record the lock: a
    // failed build leaves both untouched.
    super::outdir::replace(work, &out)?;
    resolved
        .lock
        .store(&crate::packages::lock::lock_path(&recipe.path))
        .map_err(crate::packages::PackagesError::from)?;
    Ok(BuildOutput {
        dir: out_dir,
        manifest,
    })
}
