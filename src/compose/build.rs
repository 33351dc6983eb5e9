//! The build pipeline: everything is written into a private directory next
//! to the output and renamed into place at the end, so a failed build never
//! leaves a partial `disk.img` behind.

use super::esp::{EspInputs, HostFile, SlotBoot, esp_tree};
use super::initramfs::{initramfs_tree, plan_modules};
use super::layers::{UnpackedLayer, unpack_layer};
use super::rootfs::{RootfsInputs, rootfs_tree, staged_file};
use super::{ComposeError, disk};
use crate::agent::cmdline;
use crate::agent::config::AgentConfig;
use crate::boot_env::{EntrySpec, SlotId};
use crate::boot_spec::BootSpec;
use crate::build_manifest::{self, Artifact, BuildManifest, PackageRecord};
use crate::filesystems::{cpio, ext4};
use crate::io::hash;
use crate::kernel::modules::{ModuleError, ModuleIndex};
use crate::packages::deb::{self, Unpacked};
use crate::packages::lock::Role;
use crate::packages::{self, ResolvedPackages};
use crate::progress::Progress;
use crate::recipe::{KernelSource, Recipe};
use std::path::{Path, PathBuf};

/// File names inside a build directory.
pub mod files {
    /// The full disk image.
    pub const DISK: &str = "disk.img";
    /// The slot filesystem.
    pub const ROOTFS: &str = "rootfs.ext4";
    /// The SPDX 2.3 SBOM.
    pub const SBOM: &str = crate::sbom::FILE_NAME;
    /// The kernel.
    pub const KERNEL: &str = "vmlinuz";
    /// The initramfs.
    pub const INITRD: &str = "initrd.img";
    /// Boot parameters for the agent when it installs this build.
    pub const BOOTSPEC: &str = crate::boot_spec::FILE_NAME;
    /// The block map of the disk image, for bmaptool.
    pub const BMAP: &str = "disk.img.bmap";
    /// Where the root filesystem's blocks are (see docs/ext4-writer.md).
    pub const LAYOUT: &str = "rootfs.layout.json";
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
    /// Fail if the lock would change.
    pub locked: bool,
    /// Vendor directory of .deb files (overrides `[apt] vendor`).
    pub vendor: Option<PathBuf>,
    /// Package cache.
    pub cache: PathBuf,
    /// The executable embedded as the agent.
    pub agent: PathBuf,
    /// A previous build directory, or its layout file: lay the root
    /// filesystem out like that one (same geometry, UUID, inode numbers and
    /// blocks for unchanged files) so that updates between them are small.
    pub previous: Option<PathBuf>,
}

/// Reads the root filesystem layout of a previous build: `path` is a build
/// directory (its manifest names the layout file) or a layout file.
pub fn load_previous_layout(path: &Path) -> Result<ext4::Ext4Layout, ComposeError> {
    let file = if path.is_dir() {
        let name = match BuildManifest::load(path) {
            Ok(bm) => bm.layout.map(|a| a.file),
            Err(_) => None,
        };
        path.join(name.unwrap_or_else(|| files::LAYOUT.into()))
    } else {
        path.to_path_buf()
    };
    let bytes = std::fs::read(&file).map_err(|e| {
        ComposeError::Other(format!(
            "previous layout {}: {e} (builds before this slate wrote no layout file)",
            file.display()
        ))
    })?;
    ext4::Ext4Layout::from_json(&bytes)
        .map_err(|e| ComposeError::Other(format!("previous layout {}: {e}", file.display())))
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
/// name, so builds are reproducible and every version of an image names
/// the same partitions (a unified kernel image in a bundle carries them in
/// its signed command line).
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
    pub fn derive(name: &str) -> Self {
        let id = |part: &str| {
            crate::reproducible::format_uuid(&crate::reproducible::derived_uuid(&[
                b"slate-gpt",
                name.as_bytes(),
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
        verity: None,
    })
}

/// The rootfs's manifest record, with the dm-verity parameters of both
/// slots (salted with the image's SHA-256).
fn rootfs_artifact(w: &Path) -> Result<Artifact, ComposeError> {
    let mut a = artifact(w, "rootfs", files::ROOTFS)?;
    let path = w.join(files::ROOTFS);
    let salt = crate::verity::unhex32(&a.sha256).unwrap_or_default();
    let v = crate::slot_image::image_verity(&path, salt).map_err(|e| {
        ComposeError::Other(format!(
            "computing the dm-verity trees of {}: {e}",
            path.display()
        ))
    })?;
    a.verity = Some(crate::bundle::manifest::ArtifactVerity::from_image(&v));
    Ok(a)
}

/// Stage 1 output: the recipe and everything it names, fetched.
struct Inputs {
    recipe: Recipe,
    out_dir: PathBuf,
    out: super::outdir::OutDir,
    packages: ResolvedPackages,
}

/// Stage 2 output: packages unpacked, kernel found, timestamps fixed.
struct UnpackedInputs {
    rootfs_pkgs: Vec<Unpacked>,
    base: Option<UnpackedLayer>,
    layers: Vec<UnpackedLayer>,
    boot_pkgs: Vec<Unpacked>,
    kernel: KernelFiles,
    epoch: i64,
}

/// Stage 3 output: the trees the filesystems are written from.
struct Trees {
    initramfs: crate::tree::Tree,
    rootfs: crate::tree::Tree,
    watchdog_secs: u64,
    /// Files of the root filesystem copied from the build host.
    host_files: Vec<crate::sbom::HostFile>,
}

/// Stage 4 output: the boot files and the slot filesystem, in the work dir.
struct Filesystems {
    kernel: PathBuf,
    initrd: PathBuf,
    rootfs: PathBuf,
    /// The rootfs's manifest record, verity parameters included.
    rootfs_record: Artifact,
}

/// Runs a build: a sequence of stages, each with explicit inputs and outputs.
/// Everything is written into a private work directory that replaces the
/// output directory only when complete.
pub fn build(opts: &BuildOptions, status: &dyn Fn(&str)) -> Result<BuildOutput, ComposeError> {
    let previous = opts
        .previous
        .as_deref()
        .map(load_previous_layout)
        .transpose()?;
    let inputs = resolve_inputs(opts, status)?;
    let unpacked = unpack(&inputs, &opts.cache, status)?;
    let trees = compose_trees(&inputs.recipe, &unpacked, &opts.agent, &opts.cache, status)?;
    let work = super::outdir::work_dir(&inputs.out)?;
    let fs = write_filesystems(
        &inputs.recipe,
        &unpacked,
        &trees,
        previous.as_ref(),
        work.path(),
        status,
    )?;
    let ukis = write_ukis(
        &inputs.recipe,
        &unpacked,
        &fs,
        trees.watchdog_secs,
        work.path(),
        status,
    )?;
    let chain = BootChain {
        signed_loader: sign_boot_chain(
            &inputs.recipe,
            &unpacked,
            ukis.as_ref(),
            work.path(),
            status,
        )?,
        ukis,
    };
    write_disk_image(
        &inputs.recipe,
        &unpacked,
        &fs,
        &chain,
        trees.watchdog_secs,
        work.path(),
        status,
    )?;
    write_bootspec(
        &inputs.recipe,
        &unpacked.kernel,
        trees.watchdog_secs,
        work.path(),
    )?;
    write_sbom(&inputs, &unpacked, &trees.host_files, work.path())?;
    let manifest = write_manifest(
        &inputs,
        unpacked.epoch,
        fs.rootfs_record,
        chain.ukis.is_some(),
        work.path(),
        status,
    )?;
    // Swap the finished directory into place, then record the lock: a
    // failed build leaves both untouched.
    super::outdir::replace(work, &inputs.out)?;
    inputs
        .packages
        .lock
        .store(&crate::packages::lock::lock_path(&inputs.recipe.path))
        .map_err(crate::packages::PackagesError::from)?;
    Ok(BuildOutput {
        dir: inputs.out_dir,
        manifest,
    })
}

/// Stage 1: load the recipe, check the inputs that need no download, and
/// provide the packages (from the lock, the cache or the archive).
fn resolve_inputs(opts: &BuildOptions, status: &dyn Fn(&str)) -> Result<Inputs, ComposeError> {
    let recipe = Recipe::load(&opts.recipe)?;
    let out_dir = opts
        .out_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("out").join(&recipe.name));
    // Never replace what slate did not write; checked before any slow work.
    let out = super::outdir::check(&out_dir)?;
    // Keys, kernel, files and protected paths, before any slow work.
    super::preflight::check_inputs(&recipe, &|w| eprintln!("slate: warning: {w}"))?;
    let provide = packages::ProvideOptions {
        update_lock: opts.update_lock,
        locked: opts.locked,
        vendor: opts.vendor.clone(),
    };
    let packages = packages::provide(&recipe, &opts.cache, &provide, status)?;
    Ok(Inputs {
        recipe,
        out_dir,
        out,
        packages,
    })
}

/// Stage 2: unpack every package, find the kernel and plan the initramfs
/// modules; fix the timestamp every output uses.
fn unpack(
    inputs: &Inputs,
    cache: &Path,
    status: &dyn Fn(&str),
) -> Result<UnpackedInputs, ComposeError> {
    let recipe = &inputs.recipe;
    status("unpacking packages");
    let rootfs_pkgs = unpack_role(&inputs.packages, Role::Rootfs, cache)?;
    let kernel_pkgs = unpack_role(&inputs.packages, Role::Kernel, cache)?;
    let boot_pkgs = unpack_role(&inputs.packages, Role::Boot, cache)?;
    super::preflight::check_packages(recipe, &rootfs_pkgs)?;
    let arch = packages::effective_apt(recipe).architecture;
    let layer = |l| -> Result<UnpackedLayer, ComposeError> {
        let u = unpack_layer(recipe, l, cache, &arch)?;
        super::preflight::check_layer(recipe, &u)?;
        Ok(u)
    };
    let base = recipe.rootfs.base.as_ref().map(layer).transpose()?;
    let layers = recipe
        .rootfs
        .layers
        .iter()
        .map(layer)
        .collect::<Result<Vec<_>, _>>()?;
    let epoch = build_epoch(&rootfs_pkgs)?;
    let kernel = find_kernel(recipe, &kernel_pkgs)?;
    Ok(UnpackedInputs {
        rootfs_pkgs,
        base,
        layers,
        boot_pkgs,
        kernel,
        epoch,
    })
}

/// Timestamps: SOURCE_DATE_EPOCH, else the newest file in the packages
/// (deterministic for a given lock).
fn build_epoch(rootfs_pkgs: &[Unpacked]) -> Result<i64, ComposeError> {
    let env =
        crate::reproducible::source_date_epoch().map_err(|e| ComposeError::Other(e.to_string()))?;
    Ok(env.unwrap_or_else(|| {
        rootfs_pkgs
            .iter()
            .flat_map(|p| p.entries.iter().map(|e| e.mtime))
            .max()
            .unwrap_or(0)
    }))
}

/// The initramfs modules the recipe asks for, with their dependencies.
fn plan_initramfs_modules<'a>(
    recipe: &Recipe,
    kernel: &'a KernelFiles,
) -> Result<super::initramfs::ModulePlan<'a>, ComposeError> {
    let requested = super::runtime::requested_modules(recipe, &kernel.modules);
    plan_modules(&kernel.modules, &requested).map_err(|e| match e {
        ModuleError::Unknown { ref name, .. } => {
            let field = super::runtime::module_field(recipe, name);
            ComposeError::Recipe(recipe.error(&field, e.to_string()))
        }
        e => ComposeError::Other(e.to_string()),
    })
}

/// The agent's configuration, as the image carries it.
fn agent_config(recipe: &Recipe, watchdog_secs: u64) -> AgentConfig {
    AgentConfig {
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
        secure_boot_cert: recipe
            .secure_boot
            .as_ref()
            .map(|_| crate::agent::config::SECURE_BOOT_CERT_PATH.into()),
    }
}

/// The initramfs's device-mapper helper: `slate-dm`, installed beside the
/// slate executable that is embedded as the agent.
fn dm_helper(agent: &Path) -> Result<PathBuf, ComposeError> {
    let helper = agent.with_file_name("slate-dm");
    if !helper.is_file() {
        return Err(ComposeError::Other(format!(
            "{} is missing: slate-dm (built and installed with slate) opens the verified root in the initramfs",
            helper.display()
        )));
    }
    Ok(helper)
}

/// Stage 3: compose the initramfs and root filesystem trees in memory.
fn compose_trees(
    recipe: &Recipe,
    unpacked: &UnpackedInputs,
    agent: &Path,
    cache: &Path,
    status: &dyn Fn(&str),
) -> Result<Trees, ComposeError> {
    let epoch = unpacked.epoch;
    let (busybox, busybox_size) = staged_file(&unpacked.boot_pkgs, "/bin/busybox")
        .ok_or_else(|| ComposeError::Other("busybox-static has no /bin/busybox".into()))?;
    let applets = super::rootfs::busybox_applets(&busybox)?;
    let modules = plan_initramfs_modules(recipe, &unpacked.kernel)?;
    let dm_helper = dm_helper(agent)?;
    let mut initramfs = initramfs_tree(
        &busybox,
        busybox_size,
        &applets,
        &dm_helper,
        &modules,
        epoch,
    )?;
    initramfs.clamp_mtimes(epoch);

    status("composing root filesystem");
    let watchdog_secs = recipe.health.watchdog.as_secs().max(1);
    let mut rootfs = rootfs_tree(
        recipe,
        &RootfsInputs {
            packages: &unpacked.rootfs_pkgs,
            base: unpacked.base.as_ref(),
            layers: &unpacked.layers,
            agent,
            agent_config: &agent_config(recipe, watchdog_secs),
            mtime: epoch,
        },
    )?;
    rootfs.clamp_mtimes(epoch);
    let host_files = crate::sbom::host_files(&rootfs, cache)
        .map_err(|e| ComposeError::Other(format!("hashing host files for the SBOM: {e}")))?;
    Ok(Trees {
        initramfs,
        rootfs,
        watchdog_secs,
        host_files,
    })
}

/// Stage 4: write the initramfs, copy the kernel and write the slot's ext4.
fn write_filesystems(
    recipe: &Recipe,
    unpacked: &UnpackedInputs,
    trees: &Trees,
    previous: Option<&ext4::Ext4Layout>,
    w: &Path,
    status: &dyn Fn(&str),
) -> Result<Filesystems, ComposeError> {
    status("writing initramfs");
    let initrd = w.join(files::INITRD);
    write_initramfs(&trees.initramfs, &initrd)?;
    let kernel = w.join(files::KERNEL);
    std::fs::copy(&unpacked.kernel.vmlinuz, &kernel)
        .map_err(|e| ComposeError::io("copying", &unpacked.kernel.vmlinuz, e))?;
    let rootfs = w.join(files::ROOTFS);
    write_rootfs(recipe, &trees.rootfs, unpacked.epoch, previous, &rootfs)?;
    status("computing dm-verity trees");
    let rootfs_record = rootfs_artifact(w)?;
    Ok(Filesystems {
        kernel,
        initrd,
        rootfs,
        rootfs_record,
    })
}

fn write_initramfs(tree: &crate::tree::Tree, path: &Path) -> Result<(), ComposeError> {
    use std::io::Write;
    let f = std::fs::File::create(path).map_err(|e| ComposeError::io("creating", path, e))?;
    let mut bw = std::io::BufWriter::with_capacity(1 << 20, f);
    cpio::write_cpio(tree, cpio::Compression::Zstd, &mut bw)
        .map_err(|e| ComposeError::Other(format!("writing {}: {e}", path.display())))?;
    bw.flush().map_err(|e| ComposeError::io("writing", path, e))
}

/// Plans the slot filesystem (size errors name `rootfs.size` or `disk.slot`)
/// and writes it, with its layout file beside it.
fn write_rootfs(
    recipe: &Recipe,
    tree: &crate::tree::Tree,
    epoch: i64,
    previous: Option<&ext4::Ext4Layout>,
    path: &Path,
) -> Result<(), ComposeError> {
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
    let planned = match previous {
        Some(prev) => ext4::Ext4Plan::with_previous(tree, &ext4_opts, prev),
        None => ext4::Ext4Plan::new(tree, &ext4_opts),
    };
    let plan = match planned {
        Ok(p) => p,
        Err(e @ ext4::Ext4Error::Previous(_)) => {
            return Err(ComposeError::Other(format!(
                "planning the root filesystem: {e}"
            )));
        }
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
        let needed = ext4::required_size(tree, &ext4_opts)
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
    let f = std::fs::File::create(path).map_err(|e| ComposeError::io("creating", path, e))?;
    f.set_len(plan.size().get())
        .map_err(|e| ComposeError::io("sizing", path, e))?;
    let progress = Progress::bytes(plan.data_bytes(), "rootfs");
    let summary = plan
        .write(&f, &progress)
        .map_err(|e| ComposeError::Other(format!("writing {}: {e}", path.display())))?;
    progress.finish();
    f.sync_all()
        .map_err(|e| ComposeError::io("syncing", path, e))?;
    let layout_path = path.with_file_name(files::LAYOUT);
    let layout = plan
        .layout(&summary)
        .map_err(|e| ComposeError::Other(format!("recording {}: {e}", layout_path.display())))?;
    std::fs::write(&layout_path, layout.to_json())
        .map_err(|e| ComposeError::io("writing", &layout_path, e))
}

/// The kernel command line of `slot` on a disk built from `recipe`.
fn slot_cmdline(
    recipe: &Recipe,
    ids: &DiskIds,
    watchdog_secs: u64,
    verity: &crate::bundle::manifest::ArtifactVerity,
    slot: SlotId,
) -> String {
    cmdline::compose(
        &recipe.kernel.cmdline,
        slot,
        ids.root(slot),
        &ids.data,
        &ids.esp,
        watchdog_secs,
        Some(&verity.slot(slot)),
    )
}

fn rootfs_verity(
    fs: &Filesystems,
) -> Result<crate::bundle::manifest::ArtifactVerity, ComposeError> {
    fs.rootfs_record
        .verity
        .ok_or_else(|| ComposeError::Other("the rootfs has no dm-verity parameters".into()))
}

/// Stage 5a: each slot's unified kernel image, when the recipe asks for them.
fn write_ukis(
    recipe: &Recipe,
    unpacked: &UnpackedInputs,
    fs: &Filesystems,
    watchdog_secs: u64,
    w: &Path,
    status: &dyn Fn(&str),
) -> Result<Option<[PathBuf; 2]>, ComposeError> {
    if !recipe.kernel.uki {
        return Ok(None);
    }
    status("assembling unified kernel images");
    let ids = DiskIds::derive(&recipe.name);
    let verity = rootfs_verity(fs)?;
    let inputs = super::uki::UkiInputs {
        boot_pkgs: &unpacked.boot_pkgs,
        kernel: &fs.kernel,
        initrd: &fs.initrd,
        name: &recipe.name,
        version: recipe.version.as_str(),
    };
    super::uki::write_ukis(
        &inputs,
        &|slot| slot_cmdline(recipe, &ids, watchdog_secs, &verity, slot),
        w,
    )
    .map(Some)
}

/// Stage 5 outputs besides the disk: each slot's unified kernel image and
/// the signed boot loader, when the recipe asks for them.
struct BootChain {
    ukis: Option<[PathBuf; 2]>,
    signed_loader: Option<PathBuf>,
}

/// File name of the signed boot loader in a build directory.
pub const SIGNED_LOADER: &str = "systemd-bootx64.efi";

/// Stage 5b: with `[secure_boot]`, signs both unified kernel images in
/// place and a copy of systemd-boot (returned) with the recipe's db key.
fn sign_boot_chain(
    recipe: &Recipe,
    unpacked: &UnpackedInputs,
    ukis: Option<&[PathBuf; 2]>,
    w: &Path,
    status: &dyn Fn(&str),
) -> Result<Option<PathBuf>, ComposeError> {
    let Some(signer) = super::preflight::check_secure_boot(recipe)? else {
        return Ok(None);
    };
    status("signing the boot chain for Secure Boot");
    let sign = |input: &Path, output: &Path| {
        crate::authenticode::sign_file(input, output, &signer)
            .map_err(|e| ComposeError::Other(format!("signing {}: {e}", input.display())))
    };
    for uki in ukis.into_iter().flatten() {
        sign(uki, uki)?;
    }
    let (loader, _) = loader_file(unpacked)?;
    let out = w.join(SIGNED_LOADER);
    sign(&loader, &out)?;
    Ok(Some(out))
}

/// systemd-boot as the locked systemd-boot-efi package ships it.
fn loader_file(unpacked: &UnpackedInputs) -> Result<(PathBuf, u64), ComposeError> {
    staged_file(
        &unpacked.boot_pkgs,
        crate::boot_env::systemd_boot::PACKAGE_BINARY,
    )
    .ok_or_else(|| {
        ComposeError::Other(format!(
            "systemd-boot-efi has no {}",
            crate::boot_env::systemd_boot::PACKAGE_BINARY
        ))
    })
}

/// Stage 5c: the ESP (boot loader, each slot's kernel and initramfs or its
/// unified kernel image, an entry per slot) and the GPT disk around it.
fn write_disk_image(
    recipe: &Recipe,
    unpacked: &UnpackedInputs,
    fs: &Filesystems,
    chain: &BootChain,
    watchdog_secs: u64,
    w: &Path,
    status: &dyn Fn(&str),
) -> Result<(), ComposeError> {
    status("writing disk image");
    let ukis = chain.ukis.as_ref();
    let signed_loader = chain.signed_loader.as_deref();
    let ids = DiskIds::derive(&recipe.name);
    let verity = rootfs_verity(fs)?;
    let entry = |slot: SlotId| EntrySpec {
        title: format!("{} {} (slot {slot})", recipe.name, recipe.version),
        version: recipe.version.to_string(),
        options: slot_cmdline(recipe, &ids, watchdog_secs, &verity, slot),
        uki: ukis.is_some(),
    };
    let size_of = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len())
            .map_err(|e| ComposeError::io("reading", p, e))
    };
    let (loader, loader_size) = match signed_loader {
        Some(p) => (p.to_path_buf(), size_of(p)?),
        None => loader_file(unpacked)?,
    };
    let boot = match ukis {
        Some([a, b]) => SlotBoot::Uki([
            HostFile {
                path: a,
                size: size_of(a)?,
            },
            HostFile {
                path: b,
                size: size_of(b)?,
            },
        ]),
        None => SlotBoot::Separate {
            kernel: HostFile {
                path: &fs.kernel,
                size: unpacked.kernel.vmlinuz_size,
            },
            initrd: HostFile {
                path: &fs.initrd,
                size: size_of(&fs.initrd)?,
            },
        },
    };
    let esp = esp_tree(&EspInputs {
        loader: HostFile {
            path: &loader,
            size: loader_size,
        },
        boot,
        entries: [(SlotId::A, entry(SlotId::A)), (SlotId::B, entry(SlotId::B))],
        mtime: unpacked.epoch,
    })?;
    disk::write_disk(
        &w.join(files::DISK),
        &disk::DiskInputs {
            recipe,
            ids: &ids,
            esp: &esp,
            rootfs: &fs.rootfs,
            verity: &verity,
            epoch: unpacked.epoch,
        },
    )?;
    let disk_path = w.join(files::DISK);
    crate::filesystems::bmap::write_bmap(&disk_path, &w.join(files::BMAP))
        .map_err(|e| ComposeError::io("writing the block map of", &disk_path, e))
}

/// Writes `boot.json` for the agent.
fn write_bootspec(
    recipe: &Recipe,
    kernel: &KernelFiles,
    watchdog_secs: u64,
    w: &Path,
) -> Result<(), ComposeError> {
    let bootspec = BootSpec {
        name: recipe.name.clone(),
        version: recipe.version.to_string(),
        cmdline: recipe.kernel.cmdline.clone(),
        kernel_release: kernel.release.clone(),
        watchdog_secs,
    };
    let path = w.join(files::BOOTSPEC);
    std::fs::write(&path, bootspec.to_json()).map_err(|e| ComposeError::io("writing", &path, e))
}

/// Writes the SPDX SBOM of the image (stage 6, with the manifest).
fn write_sbom(
    inputs: &Inputs,
    unpacked: &UnpackedInputs,
    host_files: &[crate::sbom::HostFile],
    w: &Path,
) -> Result<(), ComposeError> {
    let recipe = &inputs.recipe;
    let apt = packages::effective_apt(recipe);
    let text = crate::sbom::spdx_json(&crate::sbom::SbomInputs {
        name: &recipe.name,
        version: recipe.version.as_str(),
        epoch: unpacked.epoch,
        architecture: &apt.architecture,
        layers: unpacked
            .base
            .iter()
            .chain(&unpacked.layers)
            .flat_map(|l| &l.blobs)
            .collect(),
        packages: inputs
            .packages
            .packages
            .iter()
            .map(|p| {
                let base = match p.locked.archive {
                    packages::lock::Archive::Main => apt.mirror.clone(),
                    packages::lock::Archive::Security => apt.security_mirror.clone(),
                    packages::lock::Archive::Local => {
                        format!("file:{}", recipe.dir().display())
                    }
                };
                (&p.locked, base)
            })
            .collect(),
        host_files,
    });
    let path = w.join(files::SBOM);
    std::fs::write(&path, text).map_err(|e| ComposeError::io("writing", &path, e))
}

/// Stage 6: hash every output into the build manifest and sync them all.
fn write_manifest(
    inputs: &Inputs,
    epoch: i64,
    rootfs: Artifact,
    ukis: bool,
    w: &Path,
    status: &dyn Fn(&str),
) -> Result<BuildManifest, ComposeError> {
    status("hashing outputs");
    let recipe = &inputs.recipe;
    let mut artifacts = vec![
        rootfs,
        artifact(w, "kernel", files::KERNEL)?,
        artifact(w, "initrd", files::INITRD)?,
    ];
    let mut synced: Vec<String> = [
        files::DISK,
        files::BMAP,
        files::ROOTFS,
        files::KERNEL,
        files::INITRD,
        files::BOOTSPEC,
        files::SBOM,
        files::LAYOUT,
    ]
    .map(String::from)
    .to_vec();
    if w.join(SIGNED_LOADER).exists() {
        synced.push(SIGNED_LOADER.into());
    }
    if ukis {
        for slot in SlotId::ALL {
            let file = super::uki::file_name(slot);
            artifacts.push(artifact(w, &super::uki::artifact_name(slot), &file)?);
            synced.push(file);
        }
    }
    artifacts.push(artifact(w, "boot", files::BOOTSPEC)?);
    artifacts.push(artifact(w, "sbom", files::SBOM)?);
    let manifest = BuildManifest {
        format: build_manifest::FORMAT,
        name: recipe.name.clone(),
        version: recipe.version.to_string(),
        compatible: recipe.compatible.clone(),
        security_version: recipe.update.security_version,
        source_date_epoch: epoch,
        artifacts,
        disk: Some(artifact(w, "disk", files::DISK)?),
        layout: Some(artifact(w, "layout", files::LAYOUT)?),
        packages: inputs
            .packages
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
    for f in &synced {
        let p = w.join(f);
        std::fs::File::open(&p)
            .and_then(|f| f.sync_all())
            .map_err(|e| ComposeError::io("syncing", &p, e))?;
    }
    Ok(manifest)
}
