//! Extended attributes: name prefixes become namespace indexes, POSIX ACLs
//! are converted to ext4's compact on-disk form, and the attributes are
//! split between the space left in the 256-byte inode and one external
//! attribute block (shared by inodes with identical attribute blocks).

use super::geometry::BLOCK_SIZE;
use std::collections::BTreeMap;

/// Bytes after the 128-byte base inode and its 32 extra bytes.
pub(crate) const IN_INODE_LEN: usize = 256 - 128 - 32;
const MAGIC: u32 = 0xEA02_0000;
const ENTRY_HEADER: usize = 16;
const BLOCK_HEADER: usize = 32;
const BS: usize = BLOCK_SIZE as usize;
/// Offset of `h_refcount` in an attribute block.
pub(crate) const BLOCK_REFCOUNT_OFFSET: usize = 4;
/// Offset of `h_checksum` in an attribute block.
pub(crate) const BLOCK_CSUM_OFFSET: usize = 16;

/// Why a set of attributes cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum XattrError {
    /// A prefix ext4 has no namespace for.
    #[error("extended attribute {0:?} has a namespace ext4 cannot store")]
    UnknownNamespace(String),
    /// The part after the prefix is empty or over 255 bytes.
    #[error("extended attribute name {0:?} is empty or longer than 255 bytes after its prefix")]
    BadName(String),
    /// A POSIX ACL value that does not parse.
    #[error("extended attribute {0:?} is not a valid POSIX ACL")]
    BadAcl(String),
    /// More than fits in the inode plus one block.
    #[error("extended attributes need {0} bytes; at most 4064 fit outside the inode")]
    TooLarge(usize),
}

/// One attribute in on-disk form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Attr {
    index: u8,
    name: Vec<u8>,
    value: Vec<u8>,
}

impl Attr {
    fn entry_len(&self) -> usize {
        (ENTRY_HEADER + self.name.len()).next_multiple_of(4)
    }
    fn value_len(&self) -> usize {
        self.value.len().next_multiple_of(4)
    }
    fn cost(&self) -> usize {
        self.entry_len() + self.value_len()
    }
}

/// Where an inode's attributes go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct XattrLayout {
    /// The in-inode area (header magic, entries, values), if any attribute is there.
    pub in_inode: Option<[u8; IN_INODE_LEN]>,
    /// An external block (reference count and checksum still zero), if needed.
    pub block: Option<Vec<u8>>,
}

/// Splits `xattrs` between the inode and an external block.
pub(crate) fn layout(xattrs: &BTreeMap<Vec<u8>, Vec<u8>>) -> Result<XattrLayout, XattrError> {
    if xattrs.is_empty() {
        return Ok(XattrLayout::default());
    }
    let mut attrs = xattrs
        .iter()
        .map(|(k, v)| encode_name(k, v))
        .collect::<Result<Vec<_>, _>>()?;
    // The kernel searches block entries in (index, name length, name) order.
    attrs.sort_by(|a, b| (a.index, a.name.len(), &a.name).cmp(&(b.index, b.name.len(), &b.name)));

    let mut room = IN_INODE_LEN - 4 - 4;
    let (mut inode, mut block) = (Vec::new(), Vec::new());
    for a in attrs {
        if a.cost() <= room {
            room -= a.cost();
            inode.push(a);
        } else {
            block.push(a);
        }
    }
    let in_inode = (!inode.is_empty()).then(|| {
        let mut area = [0u8; IN_INODE_LEN];
        area[..4].copy_from_slice(&MAGIC.to_le_bytes());
        write_entries(&mut area, 4, 4, &inode);
        area
    });
    let block = if block.is_empty() {
        None
    } else {
        let need = BLOCK_HEADER + 4 + block.iter().map(Attr::cost).sum::<usize>();
        if need > BS {
            return Err(XattrError::TooLarge(need - BLOCK_HEADER - 4));
        }
        let mut b = vec![0u8; BS];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[8..12].copy_from_slice(&1u32.to_le_bytes()); // h_blocks
        let hashes = write_entries(&mut b, BLOCK_HEADER, 0, &block);
        b[12..16].copy_from_slice(&block_hash(&hashes).to_le_bytes());
        Some(b)
    };
    Ok(XattrLayout { in_inode, block })
}

/// Writes entries from `start` and values from the end of `buf`; value
/// offsets count from `offs_base`. Returns the entry hashes.
fn write_entries(buf: &mut [u8], start: usize, offs_base: usize, attrs: &[Attr]) -> Vec<u32> {
    let mut at = start;
    let mut value_end = buf.len();
    let mut hashes = Vec::with_capacity(attrs.len());
    for a in attrs {
        let offs = if a.value.is_empty() {
            0
        } else {
            value_end -= a.value_len();
            buf[value_end..value_end + a.value.len()].copy_from_slice(&a.value);
            value_end - offs_base
        };
        let hash = entry_hash(&a.name, &a.value);
        buf[at] = a.name.len() as u8;
        buf[at + 1] = a.index;
        buf[at + 2..at + 4].copy_from_slice(&(offs as u16).to_le_bytes());
        buf[at + 4..at + 8].fill(0); // e_value_inum: value stored here
        buf[at + 8..at + 12].copy_from_slice(&(a.value.len() as u32).to_le_bytes());
        buf[at + 12..at + 16].copy_from_slice(&hash.to_le_bytes());
        buf[at + 16..at + 16 + a.name.len()].copy_from_slice(&a.name);
        at += a.entry_len();
        hashes.push(hash);
    }
    debug_assert!(at + 4 <= value_end);
    hashes
}

/// The kernel's entry hash: name bytes, then the value as 32-bit words.
pub(crate) fn entry_hash(name: &[u8], value: &[u8]) -> u32 {
    let mut h: u32 = 0;
    for &c in name {
        h = (h << 5) ^ (h >> 27) ^ u32::from(c);
    }
    for chunk in value.chunks(4) {
        let mut w = [0u8; 4];
        w[..chunk.len()].copy_from_slice(chunk);
        h = (h << 16) ^ (h >> 16) ^ u32::from_le_bytes(w);
    }
    h
}

/// The block header's hash over its entries' hashes.
fn block_hash(entry_hashes: &[u32]) -> u32 {
    let mut h: u32 = 0;
    for &e in entry_hashes {
        if e == 0 {
            return 0;
        }
        h = (h << 16) ^ (h >> 16) ^ e;
    }
    h
}

fn encode_name(full: &[u8], value: &[u8]) -> Result<Attr, XattrError> {
    let shown = || String::from_utf8_lossy(full).into_owned();
    let (index, name, value) = match full {
        b"system.posix_acl_access" => (
            2,
            &[][..],
            acl_to_disk(value).ok_or_else(|| XattrError::BadAcl(shown()))?,
        ),
        b"system.posix_acl_default" => (
            3,
            &[][..],
            acl_to_disk(value).ok_or_else(|| XattrError::BadAcl(shown()))?,
        ),
        _ => {
            let (index, rest) = [(&b"user."[..], 1u8), (b"trusted.", 4), (b"security.", 6)]
                .iter()
                .find_map(|(p, i)| full.strip_prefix(*p).map(|r| (*i, r)))
                .ok_or_else(|| XattrError::UnknownNamespace(shown()))?;
            if rest.is_empty() || rest.len() > 255 {
                return Err(XattrError::BadName(shown()));
            }
            (index, rest, value.to_vec())
        }
    };
    Ok(Attr {
        index,
        name: name.to_vec(),
        value,
    })
}

/// Converts a POSIX ACL from the xattr interface format (version 2, 8-byte
/// entries) to ext4's on-disk format (version 1, 4-byte entries for the
/// owner/group/mask/other entries and 8-byte ones for named users and groups).
fn acl_to_disk(value: &[u8]) -> Option<Vec<u8>> {
    const USER_OBJ: u16 = 0x01;
    const USER: u16 = 0x02;
    const GROUP_OBJ: u16 = 0x04;
    const GROUP: u16 = 0x08;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    let body = value.strip_prefix(&2u32.to_le_bytes()[..])?;
    if body.len() % 8 != 0 {
        return None;
    }
    let mut out = 1u32.to_le_bytes().to_vec();
    for e in body.chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        match tag {
            USER_OBJ | GROUP_OBJ | MASK | OTHER => out.extend_from_slice(&e[..4]),
            USER | GROUP => out.extend_from_slice(e),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &[u8])]) -> BTreeMap<Vec<u8>, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
            .collect()
    }

    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }

    #[test]
    fn entry_hash_by_hand() {
        // name "a": h = 0x61; value [1,0,0,0]: h = (0x61 << 16) ^ 0 ^ 1.
        assert_eq!(entry_hash(b"a", &[1, 0, 0, 0]), 0x0061_0001);
        // A short value is zero-padded to a whole word.
        assert_eq!(entry_hash(b"a", &[1]), entry_hash(b"a", &[1, 0, 0, 0]));
        assert_eq!(entry_hash(b"ab", &[]), (0x61 << 5) ^ 0x62);
    }

    #[test]
    fn small_attributes_stay_in_the_inode() {
        let cap = [1u8; 20];
        let l = layout(&map(&[("security.capability", &cap), ("user.a", b"xy")])).unwrap();
        assert!(l.block.is_none());
        let area = l.in_inode.unwrap();
        assert_eq!(u32_at(&area, 0), MAGIC);
        // user (index 1) sorts before security (6).
        assert_eq!(area[4], 1);
        assert_eq!(area[5], 1);
        assert_eq!(&area[4 + 16..4 + 17], b"a");
        let offs = u16::from_le_bytes([area[6], area[7]]) as usize;
        assert_eq!(&area[4 + offs..4 + offs + 2], b"xy");
        assert_eq!(u32_at(&area, 4 + 12), entry_hash(b"a", b"xy"));
        let second = 4 + 20;
        assert_eq!(area[second + 1], 6);
        assert_eq!(&area[second + 16..second + 26], b"capability");
    }

    #[test]
    fn large_attributes_go_to_a_block() {
        let big = vec![7u8; 1000];
        let l = layout(&map(&[("user.big", &big), ("user.s", b"1")])).unwrap();
        assert!(l.in_inode.is_some());
        let b = l.block.unwrap();
        assert_eq!(u32_at(&b, 0), MAGIC);
        assert_eq!(u32_at(&b, 8), 1);
        assert_eq!(b[32], 3); // name_len of "big"
        let offs = u16::from_le_bytes([b[34], b[35]]) as usize;
        assert_eq!(offs, BS - 1000);
        assert_eq!(u32_at(&b, 12), block_hash(&[entry_hash(b"big", &big)]));
    }

    #[test]
    fn refuses_what_ext4_cannot_hold() {
        assert!(matches!(
            layout(&map(&[("os2.x", b"")])),
            Err(XattrError::UnknownNamespace(_))
        ));
        assert!(matches!(
            layout(&map(&[("user.", b"")])),
            Err(XattrError::BadName(_))
        ));
        let huge = vec![0u8; 5000];
        assert!(matches!(
            layout(&map(&[("user.h", &huge)])),
            Err(XattrError::TooLarge(_))
        ));
    }

    #[test]
    fn acl_conversion() {
        // user::rw- user:1000:r-- group::r-- mask::r-- other::---
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 4, 1000),
            (4, 4, u32::MAX),
            (0x10, 4, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        let d = acl_to_disk(&v).unwrap();
        assert_eq!(d.len(), 4 + 4 + 8 + 4 + 4 + 4);
        assert_eq!(&d[..4], &1u32.to_le_bytes());
        assert_eq!(&d[8..16], &[2, 0, 4, 0, 0xe8, 3, 0, 0]);
        assert!(acl_to_disk(&[1, 0, 0, 0]).is_none());
        let l = layout(&map(&[("system.posix_acl_access", &v)])).unwrap();
        let area = l.in_inode.unwrap();
        assert_eq!((area[4], area[5]), (0, 2));
    }
}
