//! Whether the running root is verified: the device-mapper device the
//! initramfs opened (`/dev/mapper/slate-root`) holds `/`, and its live
//! table is the verity target with the root hash the boot entry named.

use super::cmdline::BootParams;
use crate::verity::dm;
use std::path::Path;

/// The device-mapper name `/init` gives the root.
pub const ROOT_NAME: &str = "slate-root";

/// What the kernel says about the root's verification.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RootVerity {
    /// The root hash in the live table.
    pub root_hash: String,
    /// The live table, as `dmsetup table` prints it.
    pub table: String,
    /// The target's status: `V` (every block read so far verified) or `C`
    /// (a corrupted block was found).
    pub status: String,
}

/// The running root's verity, when `/` is on [`ROOT_NAME`], that device's
/// table is a verity target, and its root hash is the one on the command
/// line; `None` otherwise (a root mounted without verity, or not the one
/// the boot entry meant).
pub fn running_root(params: &BootParams) -> Option<RootVerity> {
    let want = params.verity.as_ref()?;
    let node = Path::new("/dev/mapper").join(ROOT_NAME);
    let root = rustix::fs::stat("/").ok()?;
    if dm::device_number(&node).ok()?
        != (
            rustix::fs::major(root.st_dev),
            rustix::fs::minor(root.st_dev),
        )
    {
        return None;
    }
    let table = dm::targets(ROOT_NAME, true).ok()?;
    let status = dm::targets(ROOT_NAME, false).ok()?;
    let [t] = table.as_slice() else { return None };
    let [s] = status.as_slice() else { return None };
    let root_hash = t.params.split_whitespace().nth(8)?.to_string();
    if t.target != "verity" || root_hash != crate::io::hash::hex(&want.root_hash) {
        return None;
    }
    Some(RootVerity {
        root_hash,
        table: format!("{} {} {} {}", t.start, t.length, t.target, t.params),
        status: s.params.clone(),
    })
}
