//! Device-mapper ioctls: opening a read-only dm-verity device over a slot
//! (what `veritysetup open` does), for the initramfs, which has no dmsetup;
//! and reading a device's table and status back (what `dmsetup table` and
//! `dmsetup status` print), so the agent can show that its root is verified.
//!
//! The control device is `/dev/mapper/control` (devtmpfs creates it when
//! dm-mod loads); each call passes a `struct dm_ioctl` header followed by
//! its payload, as `include/uapi/linux/dm-ioctl.h` defines them.

use super::SlotVerity;
use crate::io::hash::hex;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// The control device.
pub const CONTROL: &str = "/dev/mapper/control";
/// `sizeof(struct dm_ioctl)`.
const HEADER_LEN: usize = 312;
/// `sizeof(struct dm_target_spec)`.
const SPEC_LEN: usize = 40;
/// Name field length (`DM_NAME_LEN`).
const NAME_LEN: usize = 128;
/// Buffer handed to the kernel: header, payload and room for its answer.
const BUF_LEN: usize = 16 * 1024;

/// Ioctl numbers (`_IOWR(0xfd, nr, struct dm_ioctl)`).
mod cmd {
    pub const DEV_CREATE: u8 = 3;
    pub const DEV_REMOVE: u8 = 4;
    pub const DEV_SUSPEND: u8 = 6;
    pub const TABLE_LOAD: u8 = 9;
    pub const TABLE_STATUS: u8 = 12;
}

/// Header flags.
mod flag {
    /// The device is read-only.
    pub const READONLY: u32 = 1 << 0;
    /// `TABLE_STATUS` returns the table rather than the status.
    pub const STATUS_TABLE: u32 = 1 << 4;
    /// The answer did not fit the buffer.
    pub const BUFFER_FULL: u32 = 1 << 8;
}

/// The one place that calls `ioctl(2)`: safe wrappers stop here.
#[allow(unsafe_code)]
mod sys {
    use rustix::ioctl::{Ioctl, IoctlOutput, Opcode, opcode};
    use std::ffi::c_void;
    use std::fs::File;

    /// One device-mapper call over a buffer that starts with a `dm_ioctl`.
    struct Call<'a> {
        nr: u8,
        buf: &'a mut [u8],
    }

    // SAFETY: the opcode says the kernel reads and writes a `struct
    // dm_ioctl` at the pointer; the buffer is larger than that struct and its
    // `data_size` field (set by the caller) tells the kernel how much of it
    // the kernel may use, which is never more than the buffer's length.
    unsafe impl Ioctl for Call<'_> {
        type Output = ();
        const IS_MUTATING: bool = true;
        fn opcode(&self) -> Opcode {
            opcode::read_write::<[u8; super::HEADER_LEN]>(0xfd, self.nr)
        }
        fn as_ptr(&mut self) -> *mut c_void {
            self.buf.as_mut_ptr().cast()
        }
        unsafe fn output_from_ptr(_: IoctlOutput, _: *mut c_void) -> rustix::io::Result<()> {
            Ok(())
        }
    }

    /// Runs device-mapper call `nr` on the control device with `buf`.
    pub fn dm_ioctl(control: &File, nr: u8, buf: &mut [u8]) -> std::io::Result<()> {
        assert!(buf.len() >= super::HEADER_LEN);
        let data_size = u32::from_le_bytes(buf[12..16].try_into().unwrap_or_default()) as usize;
        assert!(data_size <= buf.len());
        // SAFETY: see the `Ioctl` impl; the buffer lives across the call.
        unsafe { rustix::ioctl::ioctl(control, Call { nr, buf }) }.map_err(std::io::Error::from)
    }
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

fn get64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

/// A header for a call on device `name`, with `payload` after it.
fn request(name: &str, flags: u32, targets: u32, payload: &[u8]) -> io::Result<Vec<u8>> {
    if name.is_empty() || name.len() >= NAME_LEN || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid device-mapper name {name:?}"),
        ));
    }
    let mut b = vec![0u8; BUF_LEN];
    put32(&mut b, 0, 4); // interface version 4.0.0
    put32(&mut b, 12, BUF_LEN as u32);
    put32(&mut b, 16, HEADER_LEN as u32);
    put32(&mut b, 20, targets);
    put32(&mut b, 28, flags);
    b[48..48 + name.len()].copy_from_slice(name.as_bytes());
    b[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
    Ok(b)
}

fn call(control: &File, nr: u8, mut b: Vec<u8>, what: &str) -> io::Result<Vec<u8>> {
    sys::dm_ioctl(control, nr, &mut b)
        .map_err(|e| io::Error::new(e.kind(), format!("device-mapper {what}: {e}")))?;
    Ok(b)
}

/// The `verity` target's table line for `v` over the slot at block device
/// `dev` (`major:minor`): format version 1, 4 KiB blocks, SHA-256, the tree
/// in the same device after the data, and a restart on the first corrupted
/// block so the boot loader's attempt counter takes over.
pub fn verity_table(dev: (u32, u32), v: &SlotVerity) -> String {
    let d = format!("{}:{}", dev.0, dev.1);
    format!(
        "1 {d} {d} 4096 4096 {} {} sha256 {} {} 1 restart_on_corruption",
        v.data_blocks,
        v.hash_offset / super::BLOCK_SIZE,
        hex(&v.root_hash),
        hex(&v.salt)
    )
}

/// A device-mapper device that was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Its block device node, `/dev/dm-N` (made by devtmpfs).
    pub node: PathBuf,
    /// Major and minor number.
    pub dev: (u32, u32),
}

/// Major and minor number of block device `path`.
pub fn device_number(path: &Path) -> io::Result<(u32, u32)> {
    let st = rustix::fs::stat(path).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("stat {}: {e}", path.display()),
        )
    })?;
    Ok((rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev)))
}

/// Opens `name` as a read-only dm-verity device over `data` (a slot
/// partition holding the image and, at `v.hash_offset`, its tree), with
/// `v`'s root hash and salt. The device exists only if every step worked.
pub fn open_verity(name: &str, data: &Path, v: &SlotVerity) -> io::Result<Opened> {
    let control = File::options().read(true).write(true).open(CONTROL)?;
    let dev = device_number(data)?;
    let created = call(
        &control,
        cmd::DEV_CREATE,
        request(name, 0, 0, &[])?,
        "creating the device",
    )?;
    let encoded = get64(&created, 40);
    let major = ((encoded >> 8) & 0xfff) as u32;
    let minor = ((encoded & 0xff) | ((encoded >> 12) & 0xfff00)) as u32;
    let loaded = (|| {
        let params = verity_table(dev, v);
        let mut spec = vec![0u8; SPEC_LEN];
        spec[8..16].copy_from_slice(&(v.data_blocks * (super::BLOCK_SIZE / 512)).to_le_bytes());
        spec[24..30].copy_from_slice(b"verity");
        spec.extend_from_slice(params.as_bytes());
        spec.push(0);
        spec.resize(spec.len().next_multiple_of(8), 0);
        call(
            &control,
            cmd::TABLE_LOAD,
            request(name, flag::READONLY, 1, &spec)?,
            "loading the verity table",
        )?;
        call(
            &control,
            cmd::DEV_SUSPEND,
            request(name, 0, 0, &[])?,
            "activating the device",
        )
    })();
    if let Err(e) = loaded {
        let _ = call(&control, cmd::DEV_REMOVE, request(name, 0, 0, &[])?, "");
        return Err(e);
    }
    Ok(Opened {
        node: PathBuf::from(format!("/dev/dm-{minor}")),
        dev: (major, minor),
    })
}

/// One target of a device's table or status, as `dmsetup` prints it:
/// start and length in sectors, the target type, its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetLine {
    /// First sector.
    pub start: u64,
    /// Sectors.
    pub length: u64,
    /// Target type (`verity`).
    pub target: String,
    /// The table's parameters, or the status line.
    pub params: String,
}

/// The targets of device `name`: its table (`table`) or its status line
/// (for verity, `V` while every block read so far verified, `C` after a
/// corruption).
pub fn targets(name: &str, table: bool) -> io::Result<Vec<TargetLine>> {
    let control = File::options().read(true).write(true).open(CONTROL)?;
    let flags = if table { flag::STATUS_TABLE } else { 0 };
    let b = call(
        &control,
        cmd::TABLE_STATUS,
        request(name, flags, 0, &[])?,
        "reading the table",
    )?;
    if get32(&b, 28) & flag::BUFFER_FULL != 0 {
        return Err(io::Error::other("device-mapper table larger than 16 KiB"));
    }
    parse_targets(&b)
}

fn parse_targets(b: &[u8]) -> io::Result<Vec<TargetLine>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed device-mapper answer");
    let count = get32(b, 20);
    let mut at = get32(b, 16) as usize;
    let end = (get32(b, 12) as usize).min(b.len());
    let mut out = Vec::new();
    for _ in 0..count {
        if at + SPEC_LEN > end {
            return Err(bad());
        }
        let spec = &b[at..at + SPEC_LEN];
        let target = String::from_utf8_lossy(&spec[24..40])
            .trim_end_matches('\0')
            .to_string();
        let rest = &b[at + SPEC_LEN..end];
        let len = rest.iter().position(|&c| c == 0).ok_or_else(bad)?;
        out.push(TargetLine {
            start: get64(spec, 0),
            length: get64(spec, 8),
            target,
            params: String::from_utf8_lossy(&rest[..len]).into_owned(),
        });
        let next = get32(spec, 20) as usize;
        if next == 0 {
            break;
        }
        at = at.checked_add(next).ok_or_else(bad)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_line_names_device_tree_and_restart() {
        let v = SlotVerity {
            data_blocks: 4352,
            hash_offset: 4352 * 4096,
            salt: [0x11; 32],
            root_hash: [0xab; 32],
        };
        assert_eq!(
            verity_table((254, 2), &v),
            format!(
                "1 254:2 254:2 4096 4096 4352 4352 sha256 {} {} 1 restart_on_corruption",
                "ab".repeat(32),
                "11".repeat(32)
            )
        );
    }

    #[test]
    fn parses_a_table_answer() {
        let mut b = request("root", 0, 0, &[]).unwrap();
        put32(&mut b, 20, 1);
        let mut spec = vec![0u8; SPEC_LEN];
        spec[8..16].copy_from_slice(&64u64.to_le_bytes());
        spec[24..30].copy_from_slice(b"verity");
        b[HEADER_LEN..HEADER_LEN + SPEC_LEN].copy_from_slice(&spec);
        b[HEADER_LEN + SPEC_LEN..HEADER_LEN + SPEC_LEN + 2].copy_from_slice(b"V\0");
        let t = parse_targets(&b).unwrap();
        assert_eq!(
            t,
            [TargetLine {
                start: 0,
                length: 64,
                target: "verity".into(),
                params: "V".into()
            }]
        );
        assert!(request("a/b", 0, 0, &[]).is_err());
    }
}
