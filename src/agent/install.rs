//! Installing a bundle into the inactive slot.
//!
//! Plan, then execute (the order is what makes it power-safe):
//! 1. Check the signed manifest against the device (compatible, anti-rollback
//!    floor, not the running version). Nothing is written on rejection.
//! 2. For a local source (file, block device), verify the whole bundle once
//!    before writing anything, so a corrupt bundle leaves the slot untouched.
//! 3. Take the target slot out of the boot order and record `Installing`.
//! 4. Stream the rootfs into the slot, verifying each chunk before writing
//!    it (again: the medium could change between passes), then fsync and
//!    read the whole slot back against the artifact's digest.
//! 5. Write the slot's kernel and initrd, or its unified kernel image (whose
//!    embedded command line must name this device's partitions and the
//!    signed root hash), to the ESP and read them back.
//! 6. Only now add the slot's boot entry with a try counter, record
//!    `Installed`, and reboot.
//!
//! A power cut before step 6 leaves the slot out of the boot order (the
//! running slot boots, the agent abandons the install); after it, the new
//! slot is complete and verified.

use super::boot::Device;
use super::cmdline;
use super::delta::{DeviceSeeds, SlotManifests};
use super::events::emit;
use super::fault::{self, FaultPoint};
use super::lock::{LOCK_PATH, UpdateLock};
use super::state::{DeviceState, PendingUpdate, UpdatePhase};
use super::system::{self, BlockPartition};
use crate::boot_env::systemd_boot::SystemdBoot;
use crate::boot_env::{BootFile, BootFlow, BootSnapshot, EntrySpec, SlotBootState, SlotId};
use crate::boot_spec::BootSpec;
use crate::bundle::delta::Counts;
use crate::bundle::delta::fetch::{Remote, RemoteHead, fetch_head};
use crate::bundle::{
    self, ArtifactHeader, BundleHead, BundleReader, ChunkSink, ChunkSource, DeviceSink, FileSink,
    TrustedKeys, VerifiedChunk,
};
pub use crate::io::source::Source;
use crate::verity::SlotVerity;
use crate::version::compare_versions;
use anyhow::{Context, Result, bail, ensure};
use serde_json::json;
use std::cmp::Ordering;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Artifacts a bundle must carry, by role; besides them either a kernel and
/// an initrd or both slots' unified kernel images ([`carries_ukis`]).
pub const REQUIRED_ARTIFACTS: [&str; 2] = ["rootfs", "boot"];

/// Largest embedded command line accepted from a unified kernel image.
const MAX_UKI_CMDLINE: usize = 64 << 10;

/// Whether the bundle boots its slot from a unified kernel image (it
/// carries `uki-a` and `uki-b`); its kernel and initrd, if any, go unused.
pub fn carries_ukis(m: &bundle::Manifest) -> bool {
    SlotId::ALL.iter().all(|s| {
        m.artifacts
            .iter()
            .any(|a| a.name == crate::uki::artifact_name(*s))
    })
}

/// Largest boot.json accepted.
const MAX_BOOTSPEC: u64 = 64 << 10;

/// Why a bundle is refused before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejection(pub String);

/// The device-side checks of a verified manifest (pure).
pub fn check_manifest(
    m: &bundle::Manifest,
    compatible: &str,
    running_version: &str,
    floor: u64,
) -> Result<(), Rejection> {
    if m.compatible != compatible {
        return Err(Rejection(format!(
            "bundle is for {:?}, this device is {compatible:?}",
            m.compatible
        )));
    }
    if m.security_version < floor {
        return Err(Rejection(format!(
            "bundle security_version {} is below this device's floor {floor}",
            m.security_version
        )));
    }
    if m.version == running_version {
        return Err(Rejection(format!(
            "version {} is already running",
            m.version
        )));
    }
    let boot_files: &[&str] = if carries_ukis(m) {
        &[]
    } else {
        &["kernel", "initrd"]
    };
    for name in REQUIRED_ARTIFACTS.iter().chain(boot_files) {
        if !m.artifacts.iter().any(|a| a.name == *name) {
            return Err(Rejection(format!(
                "bundle has no {name} artifact{}",
                if boot_files.contains(name) {
                    " (nor unified kernel images uki-a and uki-b)"
                } else {
                    ""
                }
            )));
        }
    }
    Ok(())
}

/// The device's trusted keys.
pub fn trusted_keys(dev: &Device) -> Result<TrustedKeys> {
    if dev.config.public_keys.is_empty() {
        bail!("this image trusts no update keys ([update] public_keys is empty)");
    }
    TrustedKeys::from_pem_files(
        &dev.config.public_keys,
        dev.config.threshold.max(1) as usize,
    )
    .context("loading the image's trusted keys")
}

/// The partition of `slot` on the disk the device booted from.
fn slot_partition(dev: &Device, slot: SlotId) -> Result<BlockPartition> {
    let root_guid = dev
        .params
        .root
        .as_deref()
        .context("the kernel command line has no slate.root=")?;
    let all = system::partitions()?;
    let booted = all
        .iter()
        .find(|p| p.guid.eq_ignore_ascii_case(root_guid))
        .with_context(|| format!("no partition with GUID {root_guid} (the booted root)"))?;
    all.iter()
        .find(|p| p.disk == booted.disk && p.name == slot.partition_name())
        .cloned()
        .with_context(|| {
            format!(
                "no {} partition on {}",
                slot.partition_name(),
                booted.disk.display()
            )
        })
}

/// Reads `len` bytes of `path` from the device itself (not the page
/// cache) and returns their SHA-256.
fn read_back(path: &Path, len: u64) -> Result<[u8; 32]> {
    let (digest, n) = crate::io::blockdev::sha256_uncached(path, len)
        .with_context(|| format!("reading back {}", path.display()))?;
    if n != len {
        bail!("{} is shorter than the written {len} bytes", path.display());
    }
    Ok(digest)
}

/// What an install ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Installed; the slot is tried on the next boot.
    Installed {
        /// The slot.
        slot: SlotId,
        /// Its version.
        version: String,
    },
    /// Refused before writing.
    Rejected(String),
}

fn reject(reason: String, version: Option<&str>) -> Outcome {
    let mut fields = vec![("reason", json!(reason))];
    if let Some(v) = version {
        fields.push(("version", json!(v)));
    }
    emit("rejected", &fields);
    Outcome::Rejected(reason)
}

/// Verifies every artifact; a bundle file must also end exactly where its
/// header says, a block device may continue.
fn verify_all(
    mut reader: BundleReader<Box<dyn Read>>,
    device: bool,
) -> Result<(), bundle::BundleError> {
    if !device {
        return reader.finish().map(|_| ());
    }
    while reader.next_artifact()?.is_some() {
        reader.verify_artifact(|_| {})?;
    }
    Ok(())
}

/// Opens and verifies the signed head of a bundle.
fn open_verified(
    source: &Source,
    keys: &TrustedKeys,
) -> Result<BundleReader<Box<dyn Read>>, String> {
    let src = source.open().map_err(|e| format!("{e:#}"))?;
    bundle::open(src, keys).map_err(|e| format!("{source}: {e}"))
}

/// Everything an install will write, decided before the first write.
struct Plan {
    reader: Box<dyn ChunkSource>,
    manifest: bundle::Manifest,
    manifest_bytes: Vec<u8>,
    digest: String,
    target: SlotId,
    part: BlockPartition,
    /// Predicted counts of a delta download (`None`: streamed).
    delta: Option<Counts>,
}

/// How the signed head of a bundle arrived.
enum Opened {
    /// Streaming the whole bundle, opened with [`open_verified`].
    Stream(BundleReader<Box<dyn Read>>),
    /// Streaming the reply of a server without range support.
    Whole(BundleReader<Box<dyn Read + Send>>),
    /// Range requests: the head only so far.
    Ranges(RemoteHead),
}

impl Opened {
    fn head(&self) -> &BundleHead {
        match self {
            Opened::Stream(r) => r.head(),
            Opened::Whole(r) => r.head(),
            Opened::Ranges(r) => r.head(),
        }
    }
}

/// Opens `source`: an http(s) URL by range requests (falling back, once,
/// to streaming it when the server has no range support or fails), any
/// other source as a stream.
fn open_source(source: &Source, keys: &TrustedKeys) -> Result<Opened, String> {
    if let Source::Url(url) = source {
        match fetch_head(url, keys, crate::io::source::HttpTimeouts::from_env()) {
            Ok(Remote::Ranges(r)) => return Ok(Opened::Ranges(r)),
            Ok(Remote::Whole(reader)) => {
                emit(
                    "delta_fallback",
                    &[("reason", json!(format!("{url} ignores Range requests")))],
                );
                return Ok(Opened::Whole(reader));
            }
            // A trust failure is final; anything else is retried as a stream.
            Err(
                e @ (bundle::BundleError::Untrusted { .. }
                | bundle::BundleError::BadSignature { .. }
                | bundle::BundleError::NoSignature),
            ) => return Err(format!("{source}: {e}")),
            Err(e) => emit("delta_fallback", &[("reason", json!(e.to_string()))]),
        }
    }
    open_verified(source, keys).map(Opened::Stream)
}

/// A stale `installing` record while the lock is ours means the installer
/// that wrote it died (a crash, not a power cut: the device is still up).
/// Its slot is finished (its trial entry exists) or taken out of the boot
/// order, without waiting for a reboot.
fn recover_interrupted(
    dev: &Device,
    state: &mut DeviceState,
    flow: &mut SystemdBoot,
) -> Result<()> {
    let UpdatePhase::Installing(p) = &state.update else {
        return Ok(());
    };
    let target = p.target;
    if matches!(flow.snapshot()?.get(target), SlotBootState::Trying { .. }) {
        state.installed()?;
    } else {
        flow.disable(target)?;
        state.abandon()?;
        emit(
            "abandoned",
            &[
                ("slot", json!(target.to_string())),
                ("reason", json!("the previous install did not finish")),
            ],
        );
    }
    dev.save_state(state)
}

/// Step 1 and 2: every check that can refuse the bundle, before anything is
/// written. `Err(outcome)` is a rejection (its event already emitted).
fn plan(
    dev: &Device,
    state: &DeviceState,
    snapshot: &BootSnapshot,
    source: &Source,
    esp: &Path,
) -> Result<std::result::Result<Plan, Outcome>> {
    let target = dev.booted.other();
    match &state.update {
        UpdatePhase::Idle => {}
        UpdatePhase::Installed(p) => {
            return Ok(Err(reject(
                format!(
                    "version {} is installed in slot {} and waits for a reboot; reboot first",
                    p.version, p.target
                ),
                None,
            )));
        }
        phase => {
            return Ok(Err(reject(
                format!("an update is in progress (phase {})", phase.word()),
                None,
            )));
        }
    }
    if !matches!(snapshot.get(dev.booted), SlotBootState::Good { .. })
        && matches!(snapshot.get(target), SlotBootState::Good { .. })
    {
        return Ok(Err(reject(
            format!(
                "slot {} is not committed and slot {target} is the committed fallback; \
                 installs wait for this boot's verdict",
                dev.booted
            ),
            None,
        )));
    }
    let keys = trusted_keys(dev)?;
    let opened = match open_source(source, &keys) {
        Ok(o) => o,
        Err(reason) => return Ok(Err(reject(reason, None))),
    };
    let manifest = opened.head().manifest.clone();
    let manifest_bytes = opened.head().manifest_bytes.clone();
    let digest = opened.head().manifest_digest.to_string();
    if let Err(r) = check_manifest(
        &manifest,
        &dev.config.compatible,
        &dev.config.version,
        state.floor,
    ) {
        return Ok(Err(reject(r.0, Some(&manifest.version))));
    }
    if dev.config.secure_boot_cert.is_some() && !carries_ukis(&manifest) {
        return Ok(Err(reject(
            "the bundle carries no unified kernel images; this image boots signed ones only ([secure_boot])"
                .into(),
            Some(&manifest.version),
        )));
    }
    let part = slot_partition(dev, target)?;
    if let Err(reason) = check_slot_fit(&manifest, dev.params.verity.is_some(), target, &part) {
        return Ok(Err(reject(reason, Some(&manifest.version))));
    }
    let (reader, delta): (Box<dyn ChunkSource>, _) = match opened {
        Opened::Ranges(remote) => {
            let running = slot_partition(dev, dev.booted)?;
            let seeds = DeviceSeeds {
                manifests: &SlotManifests::new(&dev.config.state_dir),
                running: (dev.booted, &running.dev),
                target: (target, &part.dev),
                slot_size: running.size,
                esp,
            }
            .index(&manifest)
            .context("indexing the chunks this device holds")?;
            // The other slot's unified kernel image is not fetched.
            let unused = crate::uki::artifact_name(dev.booted);
            let plan = remote.plan(&seeds, &|n| n != unused);
            let predicted = plan.counts.clone();
            (Box::new(remote.into_reader(seeds, plan)), Some(predicted))
        }
        Opened::Whole(reader) => (Box::new(reader), None),
        Opened::Stream(reader) if !source.rereadable() => (Box::new(reader), None),
        // Verify everything before the first write when the source allows it.
        Opened::Stream(reader) => match verify_then_reopen(reader, source, &keys, &digest) {
            Ok(r) => (Box::new(r), None),
            Err(rejected) => return Ok(Err(rejected)),
        },
    };
    Ok(Ok(Plan {
        reader,
        manifest,
        manifest_bytes,
        digest,
        target,
        part,
        delta,
    }))
}

/// Whether the bundle's rootfs, with its hash tree, fits the target slot,
/// and carries the dm-verity root hashes a device that boots verified roots
/// requires (`verified`: the running slot's root is verified).
fn check_slot_fit(
    manifest: &crate::bundle::Manifest,
    verified: bool,
    target: SlotId,
    part: &BlockPartition,
) -> std::result::Result<(), String> {
    let Some(rootfs) = manifest.artifacts.iter().find(|a| a.name == "rootfs") else {
        return Ok(());
    };
    let need = match &rootfs.verity {
        Some(_) => crate::slot_image::slot_len(rootfs.size).map_err(|e| e.to_string())?,
        None if verified => {
            return Err(
                "the bundle's rootfs has no dm-verity root hashes; this device boots verified roots only"
                    .into(),
            );
        }
        None => rootfs.size,
    };
    if need > part.size {
        return Err(format!(
            "rootfs of {} bytes ({need} with its hash tree) does not fit slot {target} ({} bytes)",
            rootfs.size, part.size
        ));
    }
    Ok(())
}

/// Step 5b: gives the written slot its identity and hash tree, and checks
/// the root hash it computed against the signed one. `Ok(None)` for a
/// bundle without verity.
fn seal_slot(
    manifest: &crate::bundle::Manifest,
    part: &BlockPartition,
    target: SlotId,
) -> Result<Option<SlotVerity>> {
    let Some(rootfs) = manifest.artifacts.iter().find(|a| a.name == "rootfs") else {
        return Ok(None);
    };
    let Some(signed) = &rootfs.verity else {
        return Ok(None);
    };
    let want = signed.slot(target);
    let sealed = crate::slot_image::seal(&part.dev, 0, part.size, rootfs.size, target, want.salt)
        .with_context(|| {
        format!(
            "writing slot {target}'s hash tree to {}",
            part.dev.display()
        )
    })?;
    ensure!(
        sealed == want,
        "slot {target}'s root hash {} differs from the signed manifest's {}",
        crate::io::hash::hex(&sealed.root_hash),
        crate::io::hash::hex(&want.root_hash)
    );
    Ok(Some(sealed))
}

/// A file or block device: `first` is verified whole, then the source is
/// opened again for writing (each chunk is still checked before it is
/// written; the whole-artifact digests were checked by the first pass and
/// the slot is read back, so the second pass skips them). `Err` is the
/// rejection, its event emitted.
fn verify_then_reopen(
    first: BundleReader<Box<dyn Read>>,
    source: &Source,
    keys: &TrustedKeys,
    digest: &str,
) -> std::result::Result<BundleReader<Box<dyn Read>>, Outcome> {
    let version = first.manifest().version.clone();
    if let Err(e) = verify_all(first, source.is_block_device()) {
        return Err(reject(format!("{source}: {e}"), Some(&version)));
    }
    match open_verified(source, keys) {
        Ok(mut r) if r.manifest_digest().to_string() == digest => {
            r.set_check_whole_digest(false);
            Ok(r)
        }
        Ok(_) => Err(reject(format!("{source} changed while reading it"), None)),
        Err(reason) => Err(reject(reason, None)),
    }
}

/// Installs `source` into the inactive slot, with the update lock held and
/// `state` loaded under it. Returns `Rejected` (after emitting the event)
/// for bundles the device refuses, before anything is written; errors are
/// failures during the install, after which the target slot stays out of
/// the boot order and the running slot is untouched.
pub fn install(
    dev: &Device,
    _lock: &UpdateLock,
    state: &mut DeviceState,
    source: &Source,
) -> Result<Outcome> {
    let esp = dev.mount_esp(true)?;
    let mut flow = SystemdBoot::new(esp.path());
    recover_interrupted(dev, state, &mut flow)?;
    let snapshot = flow.snapshot()?;
    let plan = match plan(dev, state, &snapshot, source, esp.path())? {
        Ok(p) => p,
        Err(rejected) => return Ok(rejected),
    };
    let Plan {
        mut reader,
        manifest,
        manifest_bytes,
        digest,
        target,
        part,
        delta,
    } = plan;
    let slots = SlotManifests::new(&dev.config.state_dir);

    if let Source::Path(p) = source {
        fault::hit_source(FaultPoint::AfterVerify, p);
    } else {
        fault::hit(FaultPoint::AfterVerify);
    }

    // 3. Out of the boot order, then record the attempt.
    flow.disable(target)?;
    fault::hit(FaultPoint::AfterDisable);
    state.begin_install(PendingUpdate {
        target,
        version: manifest.version.clone(),
        digest: digest.clone(),
        security_version: manifest.security_version,
    })?;
    dev.save_state(state)?;
    fault::hit(FaultPoint::AfterInstalling);
    // The slot's content stops matching its stored manifest from here on.
    slots
        .forget(target)
        .context("removing the target slot's manifest from /data")?;
    emit_installing(target, &manifest.version, source, delta.as_ref());

    let trusted_cert = secure_boot_cert(dev)?;
    let signed_verity = manifest
        .artifacts
        .iter()
        .find(|a| a.name == "rootfs")
        .and_then(|a| a.verity.as_ref())
        .map(|v| v.slot(target));
    let device = DeviceIds {
        target,
        root: &part.guid,
        data: dev.params.data.as_deref(),
        esp: dev.params.esp.as_deref(),
        verity: signed_verity.as_ref(),
        ukis: carries_ukis(&manifest),
        secure_boot: trusted_cert.as_ref(),
    };
    let written = write_artifacts(reader.as_mut(), &part, &mut flow, &device).or_else(|e| {
        if delta.is_none() || is_sink_error(&e) {
            return Err(e);
        }
        // A delta download that failed is retried once as a stream.
        emit("delta_fallback", &[("reason", json!(format!("{e:#}")))]);
        let keys = trusted_keys(dev)?;
        let stream = open_verified(source, &keys).map_err(anyhow::Error::msg)?;
        if stream.manifest_digest().to_string() != digest {
            bail!("{source} changed during the install");
        }
        reader = Box::new(stream);
        write_artifacts(reader.as_mut(), &part, &mut flow, &device)
    });
    let sealed = written.and_then(|b| Ok((b, seal_slot(&manifest, &part, target)?)));
    let (Written { bootspec, uki }, verity) = match sealed {
        Ok(b) => b,
        Err(e) => {
            // The slot stays disabled; the running system is untouched. The
            // event comes once the state says so.
            state.abandon()?;
            dev.save_state(state)?;
            emit(
                "install_failed",
                &[
                    ("slot", json!(target.to_string())),
                    ("reason", json!(format!("{e:#}"))),
                ],
            );
            return Err(e);
        }
    };
    fault::hit(FaultPoint::AfterSeal);
    // The reader keeps seed files open, the running slot's boot files on the
    // ESP among them: close them before the ESP is unmounted.
    let counts = reader.delta_counts();
    drop(reader);

    slots
        .store(target, &manifest_bytes)
        .context("storing the new slot's manifest on /data")?;
    fault::hit(FaultPoint::AfterSlotManifest);

    // 6. Bootable only now.
    let data = dev.params.data.clone().unwrap_or_default();
    let esp_guid = dev.params.esp.clone().unwrap_or_default();
    let entry = EntrySpec {
        title: format!("{} {} (slot {target})", bootspec.name, bootspec.version),
        version: bootspec.version.clone(),
        uki: uki.is_some(),
        options: uki.unwrap_or_else(|| {
            cmdline::compose(
                &bootspec.cmdline,
                target,
                &part.guid,
                &data,
                &esp_guid,
                bootspec.watchdog_secs,
                verity.as_ref(),
            )
        }),
    };
    flow.try_next(target, dev.config.tries, &entry)?;
    fault::hit(FaultPoint::AfterTrialEntry);
    state.installed()?;
    dev.save_state(state)?;
    fault::hit(FaultPoint::AfterInstalled);
    esp.unmount()?;
    emit_installed(target, &manifest.version, counts.as_ref());
    Ok(Outcome::Installed {
        slot: target,
        version: manifest.version,
    })
}

/// What the artifacts must agree with on this device.
struct DeviceIds<'a> {
    /// The slot being installed.
    target: SlotId,
    /// Its partition's GUID.
    root: &'a str,
    /// The data partition's and the ESP's GUIDs, as the running slot was told.
    data: Option<&'a str>,
    esp: Option<&'a str>,
    /// The signed dm-verity parameters of the target slot.
    verity: Option<&'a SlotVerity>,
    /// The bundle boots the slot from a unified kernel image.
    ukis: bool,
    /// The Secure Boot certificate its image must be signed with.
    secure_boot: Option<&'a crate::authenticode::TrustedCert>,
}

/// What `write_artifacts` installed besides the slot.
struct Written {
    bootspec: BootSpec,
    /// The unified kernel image's command line, when the slot boots one.
    uki: Option<String>,
}

/// Checks a unified kernel image's embedded command line against the device:
/// it must boot the target slot from this disk's partitions with the signed
/// root hash (the image is signed as a whole, so it cannot be adjusted here).
fn check_uki_cmdline(text: &str, want: &DeviceIds<'_>) -> std::result::Result<(), String> {
    let p = cmdline::parse(text);
    let target = want.target;
    if p.slot != Some(target) {
        return Err(format!("it boots slot {:?}, not slot {target}", p.slot));
    }
    let same = |got: &Option<String>, here: Option<&str>, what: &str| match (got, here) {
        (Some(g), Some(h)) if !g.eq_ignore_ascii_case(h) => Err(format!(
            "its command line names {what} partition {g}, but this device's is {h} \
             (the bundle was built from an image with another name)"
        )),
        (None, _) => Err(format!("its command line names no {what} partition")),
        _ => Ok(()),
    };
    same(&p.root, Some(want.root), &format!("slot {target}'s root"))?;
    same(&p.data, want.data, "data")?;
    same(&p.esp, want.esp, "EFI system")?;
    if p.verity.as_ref() != want.verity {
        return Err("its dm-verity parameters differ from the signed manifest's".into());
    }
    Ok(())
}

/// The Secure Boot certificate the image requires updates to be signed
/// with, if it was built for Secure Boot.
fn secure_boot_cert(dev: &Device) -> Result<Option<crate::authenticode::TrustedCert>> {
    dev.config
        .secure_boot_cert
        .as_deref()
        .map(|p| {
            crate::authenticode::TrustedCert::load(p).with_context(|| {
                format!(
                    "loading the image's Secure Boot certificate {}",
                    p.display()
                )
            })
        })
        .transpose()
}

/// Steps 4 and 5: stream every artifact to its place, verified, and read back.
fn write_artifacts(
    reader: &mut dyn ChunkSource,
    part: &BlockPartition,
    flow: &mut SystemdBoot,
    device: &DeviceIds<'_>,
) -> Result<Written> {
    let target = device.target;
    let spool_dir = PathBuf::from("/run/slate/spool");
    std::fs::create_dir_all(&spool_dir).context("creating /run/slate/spool")?;
    let mut bootspec = None;
    let mut uki = None;
    let mut wrote_rootfs = false;
    let own_uki = crate::uki::artifact_name(target);
    while let Some(a) = reader.next_artifact()? {
        let boot_file = match a.name.as_str() {
            "kernel" | "initrd" if device.ukis => None,
            "kernel" => Some(BootFile::Kernel),
            "initrd" => Some(BootFile::Initrd),
            n if n == own_uki => Some(BootFile::Uki),
            _ => None,
        };
        match a.name.as_str() {
            "rootfs" => {
                write_slot(reader, &a, part, target)?;
                wrote_rootfs = true;
            }
            "boot" => {
                if a.size > MAX_BOOTSPEC {
                    bail!("boot.json of {} bytes is too large", a.size);
                }
                let mut f = spool(reader, &spool_dir, &a.name)?;
                let mut text = String::new();
                f.read_to_string(&mut text)?;
                bootspec = Some(
                    serde_json::from_str::<BootSpec>(&text)
                        .context("parsing the bundle's boot.json")?,
                );
                drop(f);
                let _ = std::fs::remove_file(spool_dir.join(&a.name));
            }
            name if boot_file.is_some() => {
                let kind = boot_file.unwrap_or(BootFile::Kernel);
                let mut f = spool(reader, &spool_dir, name)?;
                if kind == BootFile::Uki {
                    let text = crate::uki::read_section(&mut f, ".cmdline", MAX_UKI_CMDLINE)
                        .with_context(|| format!("reading {name}"))?
                        .with_context(|| format!("{name} has no .cmdline section"))?;
                    let text = String::from_utf8(text)
                        .map_err(|_| anyhow::anyhow!("{name}'s command line is not UTF-8"))?;
                    check_uki_cmdline(text.trim_end_matches(['\0', '\n']), device)
                        .map_err(|e| anyhow::anyhow!("{name} does not fit this device: {e}"))?;
                    uki = Some(text.trim_end_matches(['\0', '\n']).to_string());
                    if let Some(cert) = device.secure_boot {
                        // The firmware would refuse it and stop at its boot
                        // menu: never make such an image a trial.
                        crate::authenticode::verify_file(&spool_dir.join(name), cert).map_err(
                            |e| {
                                anyhow::anyhow!("{name} fails this device's Secure Boot check: {e}")
                            },
                        )?;
                    }
                    f.seek(SeekFrom::Start(0))?;
                }
                flow.install_boot_file(target, kind, &mut f, a.size)?;
                let mut back_file = flow.read_boot_file(target, kind)?;
                let (back, n) = crate::io::hash::sha256_reader((&mut back_file).take(a.size))?;
                if back != a.sha256.0 || n != a.size || !rest_is_zero(&mut back_file)? {
                    bail!(
                        "the {name} of slot {target} reads back differently from what was written"
                    );
                }
                drop(f);
                let _ = std::fs::remove_file(spool_dir.join(name));
            }
            // Artifacts a newer builder adds, and the other slot's boot
            // files, are verified but not used.
            _ => reader.skip_artifact()?,
        }
    }
    fault::hit(FaultPoint::AfterBootFiles);
    if !wrote_rootfs {
        bail!("bundle has no rootfs");
    }
    if device.ukis && uki.is_none() {
        bail!("bundle has no {own_uki}");
    }
    Ok(Written {
        bootspec: bootspec.context("bundle has no boot.json")?,
        uki,
    })
}

/// Streams the rootfs into the slot, verified chunk by chunk, and reads the
/// slot back against the artifact's digest.
fn write_slot(
    reader: &mut dyn ChunkSource,
    a: &ArtifactHeader,
    part: &BlockPartition,
    target: SlotId,
) -> Result<()> {
    let dev = File::options()
        .write(true)
        .open(&part.dev)
        .with_context(|| format!("opening slot {target} ({})", part.dev.display()))?;
    // Each chunk arrives verified; holes are zeroed by the device.
    let mut w = crate::io::blockdev::DeviceWriter::new(&dev);
    reader
        .read_into(&mut SlotSink {
            writer: &mut w,
            half: a.size / 2,
            first: false,
            mid: false,
        })
        .with_context(|| format!("writing slot {target}"))?;
    w.finish()
        .with_context(|| format!("syncing slot {target}"))?;
    drop(dev);
    fault::hit(FaultPoint::AfterSlotSync);
    let back = read_back(&part.dev, a.size)?;
    if back != a.sha256.0 {
        bail!("slot {target} reads back differently from what was written");
    }
    Ok(())
}

/// Receives the current artifact, verified, into `dir/name` and returns the
/// file positioned at its start.
fn spool(reader: &mut dyn ChunkSource, dir: &Path, name: &str) -> Result<File> {
    let path = dir.join(name);
    let mut f = File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    reader.read_into(&mut FileSink::new(&f))?;
    f.seek(SeekFrom::Start(0))?;
    Ok(f)
}

/// The slot's sink: the device writer, with the fault points of a slot write.
struct SlotSink<'w, 'f> {
    writer: &'w mut crate::io::blockdev::DeviceWriter<'f>,
    half: u64,
    first: bool,
    mid: bool,
}

impl ChunkSink for SlotSink<'_, '_> {
    fn put(&mut self, c: VerifiedChunk<'_>) -> std::io::Result<()> {
        DeviceSink {
            writer: self.writer,
        }
        .put(c)?;
        if !self.first && self.writer.written() > 0 {
            self.first = true;
            fault::hit(FaultPoint::AfterFirstWrite);
        }
        if !self.mid && self.writer.written() >= self.half {
            self.mid = true;
            fault::hit(FaultPoint::MidSlot);
        }
        Ok(())
    }

    fn read_written(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<bool> {
        self.writer.read_at(offset, buf)
    }
}

/// The `installing` event; a delta install adds its planned counts.
fn emit_installing(slot: SlotId, version: &str, source: &Source, delta: Option<&Counts>) {
    let mut fields = vec![
        ("slot", json!(slot.to_string())),
        ("version", json!(version)),
        ("source", json!(source.to_string())),
    ];
    if let Some(c) = delta {
        fields.extend([
            ("downloaded", json!(c.downloaded)),
            ("requests", json!(c.requests)),
            ("reused", json!(c.reused)),
            ("holes", json!(c.holes)),
            ("full", json!(c.full)),
        ]);
    }
    emit("installing", &fields);
}

/// The `installed` event; a delta install adds what it received.
fn emit_installed(slot: SlotId, version: &str, delta: Option<&Counts>) {
    let mut fields = vec![
        ("slot", json!(slot.to_string())),
        ("version", json!(version)),
    ];
    if let Some(c) = delta {
        fields.extend([
            ("downloaded", json!(c.downloaded)),
            ("requests", json!(c.requests)),
            ("reused", json!(c.reused)),
            ("holes", json!(c.holes)),
            ("full", json!(c.full)),
        ]);
    }
    emit("installed", &fields);
}

fn is_sink_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<bundle::BundleError>(),
            Some(bundle::BundleError::Sink { .. })
        )
    })
}

/// Whether everything left in `r` is zero bytes (a boot file's padding).
fn rest_is_zero(r: &mut dyn Read) -> Result<bool> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(true);
        }
        if !crate::io::sparse::is_zero(&buf[..n]) {
            return Ok(false);
        }
    }
}

/// Whether a bundle on removable media should be installed automatically.
pub fn wanted_automatically(
    version: &str,
    running: &str,
    digest: &str,
    state: &DeviceState,
) -> bool {
    compare_versions(version, running) == Ordering::Greater && !state.has_failed(digest)
}

/// `slate-agent install SOURCE`: takes the update lock, then loads the state.
pub fn run_cli(config: &Path, source: &str, reboot: bool) -> Result<()> {
    let dev = Device::open(config)?;
    let lock = UpdateLock::try_acquire(Path::new(LOCK_PATH))?;
    let mut state = dev.load_state()?;
    let source = Source::parse(source);
    match install(&dev, &lock, &mut state, &source)? {
        Outcome::Installed { slot, version } => {
            eprintln!("slate-agent: installed {version} into slot {slot}");
            drop(lock);
            if reboot {
                system::reboot()?;
            }
            Ok(())
        }
        Outcome::Rejected(reason) => bail!("bundle rejected: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZERO_BYTE_SHA256: &str =
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d";

    fn manifest(version: &str, compatible: &str, sv: u64, artifacts: &[&str]) -> bundle::Manifest {
        let json = serde_json::json!({
            // One byte each, stored as a hole (a zero byte).
            "artifacts": artifacts.iter().map(|n| serde_json::json!({
                "chunk_size": 65536,
                "chunks": [{"compressed_size": 0, "sha256": ZERO_BYTE_SHA256}],
                "name": n, "sha256": ZERO_BYTE_SHA256, "size": 1
            })).collect::<Vec<_>>(),
            "compatible": compatible, "created": 0, "format": 1, "name": "t",
            "security_version": sv, "version": version
        });
        bundle::Manifest::parse(&serde_json::to_vec(&json).unwrap()).unwrap()
    }

    /// A rootfs of `blocks` 4 KiB blocks, with or without verity parameters.
    fn rootfs_manifest(blocks: u64, verity: bool) -> bundle::Manifest {
        let mut m = manifest("2.0.0", "c", 2, &["rootfs"]);
        let a = &mut m.artifacts[0];
        a.size = blocks * 4096;
        a.chunk_size = 1 << 24;
        a.verity = verity.then(|| crate::bundle::manifest::ArtifactVerity {
            data_blocks: blocks,
            hash_offset: blocks * 4096,
            root_hash_a: Default::default(),
            root_hash_b: Default::default(),
            salt: Default::default(),
        });
        m
    }

    #[test]
    fn slot_must_hold_the_image_and_its_tree() {
        let part = |size| BlockPartition {
            dev: "/dev/vda3".into(),
            disk: "/dev/vda".into(),
            name: "root-b".into(),
            guid: "g".into(),
            size,
            number: 3,
            first_lba: 0,
            last_lba: 0,
        };
        // 256 data blocks need 3 hash blocks (2 for their digests, 1 above).
        let need = (256 + 3) * 4096;
        let m = rootfs_manifest(256, true);
        assert!(check_slot_fit(&m, true, SlotId::B, &part(need)).is_ok());
        let e = check_slot_fit(&m, true, SlotId::B, &part(256 * 4096)).unwrap_err();
        assert!(e.contains("with its hash tree) does not fit slot B"), "{e}");
        // Without verity: only a device that does not verify its root takes it.
        let plain = rootfs_manifest(256, false);
        assert!(check_slot_fit(&plain, false, SlotId::B, &part(256 * 4096)).is_ok());
        let e = check_slot_fit(&plain, true, SlotId::B, &part(need)).unwrap_err();
        assert!(e.contains("boots verified roots only"), "{e}");
    }

    #[test]
    fn device_checks() {
        let ok = manifest("2.0.0", "c", 2, &["rootfs", "boot", "kernel", "initrd"]);
        assert!(check_manifest(&ok, "c", "1.0.0", 2).is_ok());
        let e = check_manifest(&ok, "other", "1.0.0", 0).unwrap_err();
        assert!(e.0.contains("this device is \"other\""), "{e}");
        let e = check_manifest(&ok, "c", "1.0.0", 3).unwrap_err();
        assert!(e.0.contains("below this device's floor 3"), "{e}");
        let e = check_manifest(&ok, "c", "2.0.0", 0).unwrap_err();
        assert!(e.0.contains("already running"), "{e}");
        let e =
            check_manifest(&manifest("2", "c", 2, &["rootfs", "boot"]), "c", "1", 0).unwrap_err();
        assert!(
            e.0.contains("no kernel artifact (nor unified kernel images"),
            "{e}"
        );
        let e = check_manifest(&manifest("2", "c", 2, &["rootfs"]), "c", "1", 0).unwrap_err();
        assert!(e.0.contains("no boot artifact"), "{e}");
        // Unified kernel images replace the kernel and the initrd; both slots' are needed.
        let uki = manifest("2.0.0", "c", 2, &["rootfs", "boot", "uki-a", "uki-b"]);
        assert!(carries_ukis(&uki) && check_manifest(&uki, "c", "1.0.0", 2).is_ok());
        let e = check_manifest(
            &manifest("2", "c", 2, &["rootfs", "boot", "uki-b"]),
            "c",
            "1",
            0,
        )
        .unwrap_err();
        assert!(e.0.contains("no kernel artifact"), "{e}");
    }

    #[test]
    fn a_unified_image_must_name_this_device() {
        let v = SlotVerity {
            data_blocks: 10,
            hash_offset: 40960,
            salt: [1; 32],
            root_hash: [2; 32],
        };
        let want = DeviceIds {
            target: SlotId::B,
            root: "RB",
            data: Some("d"),
            esp: Some("e"),
            verity: Some(&v),
            ukis: true,
            secure_boot: None,
        };
        let line = |slot, root: &str, verity: Option<&SlotVerity>| {
            cmdline::compose("console=ttyS0", slot, root, "D", "e", 60, verity)
        };
        assert_eq!(
            check_uki_cmdline(&line(SlotId::B, "rb", Some(&v)), &want),
            Ok(())
        );
        let e = check_uki_cmdline(&line(SlotId::A, "rb", Some(&v)), &want).unwrap_err();
        assert!(e.contains("not slot B"), "{e}");
        let e = check_uki_cmdline(&line(SlotId::B, "other", Some(&v)), &want).unwrap_err();
        assert!(
            e.contains("names slot B's root partition other, but this device's is RB"),
            "{e}"
        );
        let e = check_uki_cmdline(&line(SlotId::B, "rb", None), &want).unwrap_err();
        assert!(e.contains("dm-verity parameters differ"), "{e}");
        let e = check_uki_cmdline("slate.slot=B slate.root=RB", &want).unwrap_err();
        assert!(e.contains("names no data partition"), "{e}");
    }

    #[test]
    fn automatic_install_policy() {
        let mut s = DeviceState::factory("1.0.0", 0);
        assert!(wanted_automatically("1.1.0", "1.0.0", "d", &s));
        assert!(!wanted_automatically("1.0.0", "1.0.0", "d", &s));
        assert!(!wanted_automatically("0.9.0", "1.0.0", "d", &s));
        s.remember_failure(super::super::state::FailedUpdate {
            digest: "d".into(),
            version: "1.1.0".into(),
            reason: "r".into(),
        });
        assert!(!wanted_automatically("1.1.0", "1.0.0", "d", &s));
        assert_eq!(
            Source::parse("https://x/b"),
            Source::Url("https://x/b".into())
        );
        assert!(Source::parse("/dev/vdb").rereadable());
    }
}
