//! The 256-byte on-disk inode: fields, timestamp and device encodings, and
//! its checksum.

use super::checksum;
use super::geometry::INODE_SIZE;
use super::xattr::IN_INODE_LEN;
use crate::tree::{DeviceNumber, Timestamp};

/// `i_extra_isize` for inodes we create: the 32 extra bytes of a modern
/// ext4 inode (nanosecond times, creation time, checksum high half).
pub(crate) const EXTRA_ISIZE: u16 = 32;
/// Inode uses extents.
pub(crate) const FLAG_EXTENTS: u32 = 0x0008_0000;
/// Directory has an htree index.
pub(crate) const FLAG_INDEX: u32 = 0x0000_1000;
/// Earliest and latest seconds the 32-bit time field plus two epoch bits hold.
pub(crate) const TIME_RANGE: std::ops::RangeInclusive<i64> =
    (i32::MIN as i64)..=((i32::MIN as i64) + (1 << 34) - 1);

const CSUM_LO: usize = 0x7C;
const CSUM_HI: usize = 0x82;

/// Everything that goes into an inode.
#[derive(Debug, Clone)]
pub(crate) struct InodeFields {
    /// Full `st_mode` (type and permission bits).
    pub mode: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Used for atime, ctime, mtime and crtime alike.
    pub time: Timestamp,
    /// Hard links.
    pub links: u16,
    /// Blocks charged to the inode, in 512-byte units.
    pub sectors: u64,
    /// `i_flags`.
    pub flags: u32,
    /// The 60-byte block map / extent root / fast symlink / device area.
    pub i_block: [u8; 60],
    /// External attribute block, 0 for none.
    pub file_acl: u64,
    /// In-inode attribute area.
    pub xattrs: Option<[u8; IN_INODE_LEN]>,
    /// `i_extra_isize` (0 for the reserved inodes, as mke2fs writes them).
    pub extra_isize: u16,
}

/// Splits a timestamp into the 32-bit seconds field and the "extra" field
/// (2 epoch bits extending the range, 30 bits of nanoseconds).
pub(crate) fn encode_time(t: Timestamp) -> (u32, u32) {
    let lo = t.secs as i32;
    let epoch = ((t.secs - i64::from(lo)) >> 32) as u32 & 3;
    (lo as u32, epoch | (t.nanos << 2))
}

/// The `i_block` of a device inode: the old 16-bit encoding when both
/// numbers fit in 8 bits, the new 32-bit one in the second word otherwise.
pub(crate) fn device_block(dev: DeviceNumber) -> [u8; 60] {
    let mut b = [0u8; 60];
    if dev.major < 256 && dev.minor < 256 {
        b[0..4].copy_from_slice(&((dev.major << 8) | dev.minor).to_le_bytes());
    } else {
        let new = (dev.minor & 0xff) | (dev.major << 8) | ((dev.minor & !0xff) << 12);
        b[4..8].copy_from_slice(&new.to_le_bytes());
    }
    b
}

impl InodeFields {
    /// Serializes the inode and fills in its checksum.
    pub fn encode(&self, fs_seed: u32, ino: u32, out: &mut [u8]) {
        debug_assert_eq!(out.len(), INODE_SIZE as usize);
        out.fill(0);
        let put16 =
            |o: &mut [u8], at: usize, v: u16| o[at..at + 2].copy_from_slice(&v.to_le_bytes());
        let put32 =
            |o: &mut [u8], at: usize, v: u32| o[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let (secs, extra) = encode_time(self.time);
        put16(out, 0x00, self.mode);
        put16(out, 0x02, self.uid as u16);
        put32(out, 0x04, self.size as u32);
        put32(out, 0x08, secs);
        put32(out, 0x0C, secs);
        put32(out, 0x10, secs);
        put16(out, 0x18, self.gid as u16);
        put16(out, 0x1A, self.links);
        put32(out, 0x1C, self.sectors as u32);
        put32(out, 0x20, self.flags);
        out[0x28..0x64].copy_from_slice(&self.i_block);
        put32(out, 0x68, self.file_acl as u32);
        put32(out, 0x6C, (self.size >> 32) as u32);
        put16(out, 0x74, (self.sectors >> 32) as u16);
        put16(out, 0x76, (self.file_acl >> 32) as u16);
        put16(out, 0x78, (self.uid >> 16) as u16);
        put16(out, 0x7A, (self.gid >> 16) as u16);
        if self.extra_isize >= EXTRA_ISIZE {
            put16(out, 0x80, self.extra_isize);
            put32(out, 0x84, extra);
            put32(out, 0x88, extra);
            put32(out, 0x8C, extra);
            put32(out, 0x90, secs);
            put32(out, 0x94, extra);
            if let Some(x) = &self.xattrs {
                out[0x80 + EXTRA_ISIZE as usize..].copy_from_slice(x);
            }
        }
        let csum = checksum::inode(fs_seed, ino, 0, out);
        put16(out, CSUM_LO, csum as u16);
        if self.extra_isize >= 4 {
            put16(out, CSUM_HI, (csum >> 16) as u16);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_encoding_covers_pre_1970_and_post_2038() {
        assert_eq!(encode_time(Timestamp { secs: 0, nanos: 5 }), (0, 5 << 2));
        // 1969-12-31T23:59:59: negative seconds, epoch bits 0.
        assert_eq!(encode_time(Timestamp::from_secs(-1)), (u32::MAX, 0));
        // 2038-01-19T03:14:08, one past i32::MAX: epoch 1.
        let t = Timestamp {
            secs: 1 << 31,
            nanos: 999_999_999,
        };
        let (lo, extra) = encode_time(t);
        assert_eq!(lo, 0x8000_0000);
        assert_eq!(extra & 3, 1);
        assert_eq!(extra >> 2, 999_999_999);
        // Decoding per the kernel: sign-extend lo, add epoch << 32.
        let decode = |lo: u32, extra: u32| i64::from(lo as i32) + (i64::from(extra & 3) << 32);
        for s in [
            i64::from(i32::MIN),
            -86400 * 365 * 50,
            0,
            4_102_444_800,
            *TIME_RANGE.end(),
        ] {
            let (lo, ex) = encode_time(Timestamp::from_secs(s));
            assert_eq!(decode(lo, ex), s, "{s}");
        }
    }

    #[test]
    fn device_numbers() {
        let b = device_block(DeviceNumber { major: 8, minor: 1 });
        assert_eq!(&b[..4], &[1, 8, 0, 0]);
        let b = device_block(DeviceNumber {
            major: 4660,
            minor: 70000,
        });
        assert_eq!(&b[..4], &[0; 4]);
        let v = u32::from_le_bytes(b[4..8].try_into().unwrap());
        assert_eq!(v, (70000 & 0xff) | (4660 << 8) | ((70000 & !0xff) << 12));
    }

    #[test]
    fn checksum_covers_everything_but_itself() {
        let f = InodeFields {
            mode: 0o100644,
            uid: 70000,
            gid: 5,
            size: 5 << 30,
            time: Timestamp::from_secs(1),
            links: 1,
            sectors: 8,
            flags: FLAG_EXTENTS,
            i_block: [0; 60],
            file_acl: 0,
            xattrs: None,
            extra_isize: EXTRA_ISIZE,
        };
        let mut a = vec![0u8; 256];
        f.encode(42, 12, &mut a);
        let stored = u32::from(u16::from_le_bytes([a[CSUM_LO], a[CSUM_LO + 1]]))
            | u32::from(u16::from_le_bytes([a[CSUM_HI], a[CSUM_HI + 1]])) << 16;
        let mut zeroed = a.clone();
        zeroed[CSUM_LO..CSUM_LO + 2].fill(0);
        zeroed[CSUM_HI..CSUM_HI + 2].fill(0);
        assert_eq!(stored, checksum::inode(42, 12, 0, &zeroed));
        assert_eq!(u16::from_le_bytes([a[0x78], a[0x79]]), 1); // uid high half
        assert_eq!(u32::from_le_bytes(a[0x6C..0x70].try_into().unwrap()), 1); // size high
    }
}
