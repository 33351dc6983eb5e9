//! Unified kernel images: systemd-stub (`linuxx64.efi.stub` from Debian's
//! systemd-boot-efi) with the kernel, the initrd, the command line and
//! os-release added as PE sections, as systemd's `ukify` assembles them,
//! without objcopy or ukify (Debian 12 has no ukify). The firmware loads one
//! PE file, so a signature over it covers everything the stub boots.
//!
//! The stub's own bytes are kept up to the end of its last section (its COFF
//! symbol table, which no loader reads, is dropped); new section headers go
//! into the room after the section table, their data after the stub's at
//! the stub's file and section alignment, in the order given. The PE
//! checksum is computed over the result, so the same inputs always give the
//! same bytes.

use crate::boot_env::SlotId;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// File name of a slot's image in a build directory, e.g. `uki-a.efi`.
pub fn file_name(slot: SlotId) -> String {
    format!("uki-{}.efi", slot.lower())
}

/// Name of a slot's image among a build's and a bundle's artifacts, e.g.
/// `uki-a`.
pub fn artifact_name(slot: SlotId) -> String {
    format!("uki-{}", slot.lower())
}

/// Length of a section header.
const SECTION_HEADER_LEN: usize = 40;
/// `IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ`.
const DATA_READ: u32 = 0x4000_0040;

/// Why an image could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum UkiError {
    /// Reading an input or writing the image failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being read or written.
        context: String,
        /// The OS error.
        source: io::Error,
    },
    /// The stub is not a PE32+ image slate can extend.
    #[error("the stub is not a usable PE32+ image: {0}")]
    BadStub(String),
    /// The sections do not fit.
    #[error("{0}")]
    Unsupported(String),
}

/// Where a section's bytes come from.
#[derive(Debug, Clone, Copy)]
pub enum Content<'a> {
    /// Bytes in memory (command line, os-release).
    Bytes(&'a [u8]),
    /// A file, streamed (kernel, initrd).
    File(&'a Path),
}

/// A section to add: its name (at most 8 bytes, e.g. `.linux`) and content.
#[derive(Debug, Clone, Copy)]
pub struct NewSection<'a> {
    /// Section name.
    pub name: &'a str,
    /// Its bytes.
    pub content: Content<'a>,
}

/// One section of the finished image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionInfo {
    /// Name.
    pub name: String,
    /// Virtual address (relative to the image base).
    pub virtual_address: u32,
    /// Bytes of content.
    pub size: u32,
    /// Where its content starts in the file.
    pub file_offset: u32,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn align(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// The parts of the stub's headers the assembly needs.
struct Stub {
    /// Offset of the COFF header (after `PE\0\0`).
    coff: usize,
    /// Offset of the optional header.
    opt: usize,
    /// Offset of the section table.
    table: usize,
    sections: usize,
    section_alignment: u64,
    file_alignment: u64,
    size_of_headers: usize,
    /// End of the last section's raw data.
    raw_end: u64,
    /// End of the last section in memory.
    va_end: u64,
}

fn parse_stub(b: &[u8]) -> Result<Stub, UkiError> {
    let bad = |m: &str| UkiError::BadStub(m.to_string());
    if b.len() < 0x40 || &b[..2] != b"MZ" {
        return Err(bad("no MZ header"));
    }
    let pe = le32(b, 0x3C) as usize;
    if pe.checked_add(24).is_none_or(|e| e > b.len()) || &b[pe..pe + 4] != b"PE\0\0" {
        return Err(bad("no PE signature"));
    }
    let coff = pe + 4;
    let sections = le16(b, coff + 2) as usize;
    let opt_len = le16(b, coff + 16) as usize;
    let opt = coff + 20;
    let table = opt + opt_len;
    if opt_len < 112 || table + sections * SECTION_HEADER_LEN > b.len() {
        return Err(bad("truncated headers"));
    }
    if le16(b, opt) != 0x20B {
        return Err(bad("not PE32+"));
    }
    let section_alignment = u64::from(le32(b, opt + 32));
    let file_alignment = u64::from(le32(b, opt + 36));
    if !section_alignment.is_power_of_two() || !file_alignment.is_power_of_two() {
        return Err(bad("alignments are not powers of two"));
    }
    let size_of_headers = le32(b, opt + 60) as usize;
    let (mut raw_end, mut va_end, mut first_raw) = (0u64, 0u64, u64::MAX);
    for i in 0..sections {
        let s = table + i * SECTION_HEADER_LEN;
        let (vsize, va) = (u64::from(le32(b, s + 8)), u64::from(le32(b, s + 12)));
        let (raw_size, raw) = (u64::from(le32(b, s + 16)), u64::from(le32(b, s + 20)));
        if raw + raw_size > b.len() as u64 {
            return Err(bad("a section lies beyond the end of the file"));
        }
        raw_end = raw_end.max(raw + raw_size);
        va_end = va_end.max(va + vsize.max(raw_size));
        if raw_size > 0 {
            first_raw = first_raw.min(raw);
        }
    }
    if u64::from(le32(b, opt + 112 + 4 * 8)) != 0 {
        return Err(bad(
            "it is signed already (sign the assembled image instead)",
        ));
    }
    Ok(Stub {
        coff,
        opt,
        table,
        sections,
        section_alignment,
        file_alignment,
        size_of_headers: size_of_headers.min(first_raw as usize),
        raw_end,
        va_end,
    })
}

/// The PE checksum (as `ImageHlp`'s `CheckSumMappedFile` computes it):
/// 16-bit one's-complement-style sum of the file with the checksum field
/// read as zero, folded, plus the file length.
pub(crate) struct Checksum {
    sum: u64,
    len: u64,
    odd: Option<u8>,
    field: u64,
}

impl Checksum {
    pub(crate) fn new(field: u64) -> Self {
        Checksum {
            sum: 0,
            len: 0,
            odd: None,
            field,
        }
    }

    fn add_word(&mut self, at: u64, w: u16) {
        // The checksum field itself counts as zero.
        if at == self.field || at == self.field + 2 {
            return;
        }
        self.sum += u64::from(w);
        self.sum = (self.sum & 0xFFFF) + (self.sum >> 16);
    }

    pub(crate) fn update(&mut self, mut data: &[u8]) {
        if let Some(lo) = self.odd.take() {
            if let Some((&hi, rest)) = data.split_first() {
                self.add_word(self.len - 1, u16::from_le_bytes([lo, hi]));
                self.len += 1;
                data = rest;
            } else {
                self.odd = Some(lo);
                return;
            }
        }
        let mut chunks = data.chunks_exact(2);
        for c in &mut chunks {
            self.add_word(self.len, u16::from_le_bytes([c[0], c[1]]));
            self.len += 2;
        }
        if let [b] = chunks.remainder() {
            self.odd = Some(*b);
            self.len += 1;
        }
    }

    pub(crate) fn finish(mut self) -> u32 {
        if let Some(lo) = self.odd.take() {
            self.add_word(self.len - 1, u16::from(lo));
        }
        let folded = (self.sum & 0xFFFF) + (self.sum >> 16);
        ((folded & 0xFFFF) + self.len) as u32
    }
}

/// A writer that feeds the checksum as it goes.
struct Summed<'a, W> {
    out: &'a mut W,
    sum: Checksum,
}

impl<W: Write> Summed<'_, W> {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.sum.update(b);
        self.out.write_all(b)
    }

    fn zeros(&mut self, n: u64) -> io::Result<()> {
        for z in crate::io::sparse::zero_slices(n) {
            self.put(z)?;
        }
        Ok(())
    }
}

fn content_len(c: &Content<'_>) -> Result<u64, UkiError> {
    match c {
        Content::Bytes(b) => Ok(b.len() as u64),
        Content::File(p) => std::fs::metadata(p)
            .map(|m| m.len())
            .map_err(|source| UkiError::Io {
                context: format!("reading {}", p.display()),
                source,
            }),
    }
}

/// Writes the stub `stub` with `sections` added to `out` (from its start)
/// and returns the sections of the result, the stub's first.
pub fn assemble<W: Write + Seek>(
    stub: &[u8],
    sections: &[NewSection<'_>],
    out: &mut W,
) -> Result<Vec<SectionInfo>, UkiError> {
    let s = parse_stub(stub)?;
    let table_end = s.table + (s.sections + sections.len()) * SECTION_HEADER_LEN;
    if table_end > s.size_of_headers {
        return Err(UkiError::Unsupported(format!(
            "the stub's headers have room for {} more sections, not {}",
            (s.size_of_headers - s.table) / SECTION_HEADER_LEN - s.sections,
            sections.len()
        )));
    }
    let mut head = stub[..s.raw_end as usize].to_vec();
    let (mut va, mut raw) = (s.va_end, s.raw_end);
    let mut added = Vec::new();
    let mut initialized = 0u64;
    for (i, n) in sections.iter().enumerate() {
        if n.name.is_empty() || n.name.len() > 8 {
            return Err(UkiError::Unsupported(format!(
                "section name {:?} is not 1 to 8 bytes",
                n.name
            )));
        }
        let len = content_len(&n.content)?;
        va = align(va, s.section_alignment);
        raw = align(raw, s.file_alignment);
        let raw_size = align(len, s.file_alignment);
        let end = va + len.max(1);
        if end > u64::from(u32::MAX) || raw + raw_size > u64::from(u32::MAX) {
            return Err(UkiError::Unsupported(format!(
                "section {} does not fit a PE image (4 GiB)",
                n.name
            )));
        }
        let h = s.table + (s.sections + i) * SECTION_HEADER_LEN;
        head[h..h + SECTION_HEADER_LEN].fill(0);
        head[h..h + n.name.len()].copy_from_slice(n.name.as_bytes());
        put32(&mut head, h + 8, len as u32);
        put32(&mut head, h + 12, va as u32);
        put32(&mut head, h + 16, raw_size as u32);
        put32(&mut head, h + 20, raw as u32);
        put32(&mut head, h + 36, DATA_READ);
        added.push((n, len, raw_size));
        initialized += raw_size;
        va = end;
        raw += raw_size;
    }
    put16(&mut head, s.coff + 2, (s.sections + sections.len()) as u16);
    put32(&mut head, s.coff + 8, 0); // PointerToSymbolTable: dropped
    put32(&mut head, s.coff + 12, 0); // NumberOfSymbols
    let init = u64::from(le32(&head, s.opt + 8)) + initialized;
    put32(&mut head, s.opt + 8, init.min(u64::from(u32::MAX)) as u32);
    put32(&mut head, s.opt + 56, align(va, s.section_alignment) as u32);
    let checksum_at = s.opt + 64;
    put32(&mut head, checksum_at, 0);

    let io = |what: &str| {
        let what = what.to_string();
        move |source| UkiError::Io {
            context: what,
            source,
        }
    };
    let start = out.stream_position().map_err(io("writing the image"))?;
    let mut w = Summed {
        out,
        sum: Checksum::new(checksum_at as u64),
    };
    w.put(&head).map_err(io("writing the image"))?;
    let mut pos = head.len() as u64;
    for (n, len, raw_size) in &added {
        let at = align(pos, s.file_alignment);
        w.zeros(at - pos).map_err(io("writing the image"))?;
        match n.content {
            Content::Bytes(b) => w.put(b).map_err(io("writing the image"))?,
            Content::File(p) => {
                let ctx = format!("reading {}", p.display());
                let mut f = File::open(p).map_err(io(&ctx))?;
                let mut buf = vec![0u8; 1 << 20];
                let mut left = *len;
                while left > 0 {
                    let n = f.read(&mut buf).map_err(io(&ctx))?;
                    if n == 0 {
                        return Err(UkiError::Unsupported(format!(
                            "{} shrank while it was read",
                            p.display()
                        )));
                    }
                    let n = (n as u64).min(left) as usize;
                    w.put(&buf[..n]).map_err(io("writing the image"))?;
                    left -= n as u64;
                }
            }
        }
        w.zeros(raw_size - len).map_err(io("writing the image"))?;
        pos = at + raw_size;
    }
    let sum = w.sum.finish();
    out.seek(SeekFrom::Start(start + checksum_at as u64))
        .and_then(|_| out.write_all(&sum.to_le_bytes()))
        .and_then(|()| out.seek(SeekFrom::Start(start + pos)).map(|_| ()))
        .and_then(|()| out.flush())
        .map_err(io("writing the image"))?;
    Ok(section_infos(&head, &s, sections.len()))
}

/// Reads the content of section `name` of the PE image `r` (at most `max`
/// bytes; a longer one is an error). `Ok(None)` when it has no such section.
pub fn read_section<R: Read + Seek>(
    r: &mut R,
    name: &str,
    max: usize,
) -> Result<Option<Vec<u8>>, UkiError> {
    let io = |source| UkiError::Io {
        context: "reading the image".into(),
        source,
    };
    let bad = |m: &str| UkiError::BadStub(m.to_string());
    // Headers are small: the DOS header, the PE headers and the section
    // table sit in the first pages.
    let mut head = Vec::new();
    r.seek(SeekFrom::Start(0)).map_err(io)?;
    r.by_ref()
        .take(64 << 10)
        .read_to_end(&mut head)
        .map_err(io)?;
    if head.len() < 0x40 || &head[..2] != b"MZ" {
        return Err(bad("no MZ header"));
    }
    let pe = le32(&head, 0x3C) as usize;
    if pe.checked_add(24).is_none_or(|e| e > head.len()) || &head[pe..pe + 4] != b"PE\0\0" {
        return Err(bad("no PE signature"));
    }
    let coff = pe + 4;
    let sections = le16(&head, coff + 2) as usize;
    let table = coff + 20 + le16(&head, coff + 16) as usize;
    if table + sections * SECTION_HEADER_LEN > head.len() {
        return Err(bad("truncated headers"));
    }
    let infos = section_infos(
        &head,
        &Stub {
            coff,
            opt: coff + 20,
            table,
            sections,
            section_alignment: 1,
            file_alignment: 1,
            size_of_headers: 0,
            raw_end: 0,
            va_end: 0,
        },
        0,
    );
    let Some(i) = infos.iter().position(|s| s.name == name) else {
        return Ok(None);
    };
    let h = table + i * SECTION_HEADER_LEN;
    let len = (le32(&head, h + 8) as usize).min(le32(&head, h + 16) as usize);
    if len > max {
        return Err(UkiError::Unsupported(format!(
            "section {name} has {len} bytes, more than {max}"
        )));
    }
    let mut data = vec![0u8; len];
    r.seek(SeekFrom::Start(u64::from(infos[i].file_offset)))
        .and_then(|_| r.read_exact(&mut data))
        .map_err(io)?;
    Ok(Some(data))
}

fn section_infos(head: &[u8], s: &Stub, added: usize) -> Vec<SectionInfo> {
    (0..s.sections + added)
        .map(|i| {
            let h = s.table + i * SECTION_HEADER_LEN;
            let name = &head[h..h + 8];
            let end = name.iter().position(|&c| c == 0).unwrap_or(8);
            SectionInfo {
                name: String::from_utf8_lossy(&name[..end]).into_owned(),
                virtual_address: le32(head, h + 12),
                size: le32(head, h + 8),
                file_offset: le32(head, h + 20),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_buffer() {
        // 4 words 0x0001 0x0002 0xFFFF 0x0003 with the second as the field.
        let mut c = Checksum::new(2);
        c.update(&[1, 0]);
        c.update(&[2]);
        c.update(&[0, 0xFF, 0xFF, 3, 0]);
        // 1 + 0xFFFF + 3 = 0x10003 -> 0x0004; plus length 8.
        assert_eq!(c.finish(), 4 + 8);
    }

    #[test]
    fn refuses_what_is_no_stub() {
        let mut out = io::Cursor::new(Vec::new());
        let e = assemble(b"not a PE file at all, far too short", &[], &mut out).unwrap_err();
        assert!(e.to_string().contains("no MZ header"), "{e}");
    }
}
