//! The initramfs tree: busybox, slate's `/init`, and the kernel modules the
//! image needs, in load order.

use super::ComposeError;
use super::rootfs::INIT_SH;
use crate::kernel::modules::{ModuleError, ModuleIndex, ModuleInfo};
use crate::tree::{DeviceNumber, FileData, Metadata, Node, NodeKind, Timestamp, Tree};
use std::path::Path;

/// Modules added to every image when the kernel has them: the ESP's
/// filesystem and code pages, so the agent can update boot entries, and
/// efivarfs, so it can keep the firmware's boot options.
pub const ESP_MODULES: &[&str] = &["vfat", "nls_cp437", "nls_ascii", "nls_utf8", "efivarfs"];

/// The modules `/init` needs to open the root through dm-verity (their
/// dependencies, dm-mod, dm-bufio and reed_solomon, come with them); a
/// kernel without dm-verity cannot boot a slate image.
pub const VERITY_MODULES: &[&str] = &["dm_verity"];

/// Where the device-mapper helper lives in the initramfs.
pub const DM_HELPER_PATH: &str = "/bin/slate-dm";

/// Watchdog drivers, preferred first: the hardware watchdog QEMU emulates,
/// then the software one (which catches userspace hangs).
pub const WATCHDOG_MODULES: &[&str] = &["i6300esb", "softdog"];

/// The module plan: ordinary modules in load order, then watchdog drivers.
#[derive(Debug, Clone)]
pub struct ModulePlan<'a> {
    /// Modules loaded unconditionally, dependencies first.
    pub modules: Vec<&'a ModuleInfo>,
    /// Watchdog drivers (each after its own dependencies, which are in `modules`).
    pub watchdogs: Vec<&'a ModuleInfo>,
}

/// Works out which modules the initramfs loads. `requested` are the
/// recipe's modules (errors name them); ESP and watchdog modules are added
/// when the kernel has them.
pub fn plan_modules<'a>(
    index: &'a ModuleIndex,
    requested: &[String],
) -> Result<ModulePlan<'a>, ModuleError> {
    let mut names: Vec<String> = requested.to_vec();
    for m in VERITY_MODULES {
        if !index.is_builtin(m) && !names.iter().any(|n| n.replace('-', "_") == *m) {
            names.push(m.to_string());
        }
    }
    for m in ESP_MODULES {
        if index.load_order(&[m.to_string()]).is_ok() && !names.iter().any(|n| n == m) {
            names.push(m.to_string());
        }
    }
    let mut modules = index.load_order(&names)?;
    let mut watchdogs = Vec::new();
    for w in WATCHDOG_MODULES {
        if index.is_builtin(w) {
            continue;
        }
        if let Ok(order) = index.load_order(&[w.to_string()]) {
            if let Some((last, deps)) = order.split_last() {
                for d in deps {
                    if !modules.iter().any(|m| m.name == d.name) {
                        modules.push(d);
                    }
                }
                watchdogs.push(*last);
            }
        }
    }
    Ok(ModulePlan { modules, watchdogs })
}

/// The `/etc/slate/modules` file `/init` reads.
pub fn modules_list(plan: &ModulePlan<'_>) -> String {
    let mut s = String::new();
    for m in &plan.modules {
        s.push_str(&format!("module {}\n", m.rel_path));
    }
    for m in &plan.watchdogs {
        s.push_str(&format!("watchdog {}\n", m.rel_path));
    }
    s
}

/// Builds the initramfs tree: busybox with a `/bin` link per applet
/// (`applets` as `busybox --list-full` prints them), `/init`, the
/// device-mapper helper `dm_helper` (stripped, with its libraries), the
/// modules.
pub fn initramfs_tree(
    busybox: &Path,
    busybox_size: u64,
    applets: &[String],
    dm_helper: &Path,
    plan: &ModulePlan<'_>,
    mtime: i64,
) -> Result<Tree, ComposeError> {
    let meta = |mode| Metadata {
        mtime: Timestamp::from_secs(mtime),
        ..Metadata::root(mode)
    };
    let mut t = Tree::new(meta(0o755));
    let file = |src: FileData, mode| Node {
        kind: NodeKind::File(src),
        meta: meta(mode),
    };
    t.put(
        b"/bin/busybox",
        file(FileData::host(busybox, busybox_size), 0o755),
        &meta(0o755),
    )?;
    // Links made here, not by `busybox --install` at boot: early boot is
    // slow at creating hundreds of files.
    for applet in applets {
        let name = applet.rsplit('/').next().unwrap_or(applet);
        let path = format!("/bin/{name}");
        if name.is_empty() || name == "busybox" || t.lookup(path.as_bytes()).is_some() {
            continue;
        }
        t.put(
            path.as_bytes(),
            Node {
                kind: NodeKind::Symlink(b"busybox".to_vec()),
                meta: meta(0o777),
            },
            &meta(0o755),
        )?;
    }
    super::binaries::add_binary(
        &mut t,
        dm_helper,
        DM_HELPER_PATH,
        0o755,
        super::binaries::Strip::Executable,
    )
    .map_err(|e| ComposeError::Other(format!("embedding the device-mapper helper: {e}")))?;
    t.put(
        b"/init",
        file(FileData::from_bytes(INIT_SH.as_bytes().to_vec()), 0o755),
        &meta(0o755),
    )?;
    t.put(
        b"/etc/slate/modules",
        file(FileData::from_bytes(modules_list(plan).into_bytes()), 0o644),
        &meta(0o755),
    )?;
    t.put(
        b"/dev/console",
        Node {
            kind: NodeKind::CharDevice(DeviceNumber { major: 5, minor: 1 }),
            meta: meta(0o600),
        },
        &meta(0o755),
    )?;
    for m in plan.modules.iter().chain(plan.watchdogs.iter()) {
        let size = std::fs::metadata(&m.host_path)
            .map_err(|e| ComposeError::io("reading", &m.host_path, e))?
            .len();
        t.put(
            format!("/lib/modules/{}", m.rel_path).as_bytes(),
            file(FileData::host(&m.host_path, size), 0o644),
            &meta(0o755),
        )?;
    }
    Ok(t)
}
