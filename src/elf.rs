//! Just enough of ELF64 (little-endian) to read a kernel module's `.modinfo`
//! and an executable's interpreter and needed libraries. Every offset read
//! from the file is bounds-checked.

/// Why a file could not be read as ELF.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    /// Not ELF, not 64-bit little-endian, or truncated.
    #[error("not a 64-bit little-endian ELF file: {0}")]
    Corrupt(&'static str),
}

/// A parsed view over ELF bytes.
#[derive(Debug)]
pub struct Elf<'a> {
    data: &'a [u8],
    sections: Vec<Section>,
    segments: Vec<Segment>,
    /// End of the program header table.
    phdrs_end: u64,
}

#[derive(Debug, Clone)]
struct Section {
    name: String,
    kind: u32,
    offset: u64,
    size: u64,
}

#[derive(Debug, Clone)]
struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;

fn u16_at(d: &[u8], o: u64) -> Result<u16, ElfError> {
    let o = usize::try_from(o).map_err(|_| ElfError::Corrupt("offset"))?;
    d.get(o..o + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(ElfError::Corrupt("truncated"))
}

fn u32_at(d: &[u8], o: u64) -> Result<u32, ElfError> {
    let o = usize::try_from(o).map_err(|_| ElfError::Corrupt("offset"))?;
    d.get(o..o + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(ElfError::Corrupt("truncated"))
}

fn u64_at(d: &[u8], o: u64) -> Result<u64, ElfError> {
    let o = usize::try_from(o).map_err(|_| ElfError::Corrupt("offset"))?;
    d.get(o..o + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or(ElfError::Corrupt("truncated"))
}

fn slice(d: &[u8], offset: u64, size: u64) -> Result<&[u8], ElfError> {
    let end = offset
        .checked_add(size)
        .ok_or(ElfError::Corrupt("overflow"))?;
    let (s, e) = (
        usize::try_from(offset).map_err(|_| ElfError::Corrupt("offset"))?,
        usize::try_from(end).map_err(|_| ElfError::Corrupt("offset"))?,
    );
    d.get(s..e).ok_or(ElfError::Corrupt("truncated"))
}

fn cstr(d: &[u8], offset: u64) -> Result<String, ElfError> {
    let s = usize::try_from(offset).map_err(|_| ElfError::Corrupt("offset"))?;
    let rest = d.get(s..).ok_or(ElfError::Corrupt("string offset"))?;
    let end = rest
        .iter()
        .position(|b| *b == 0)
        .ok_or(ElfError::Corrupt("unterminated string"))?;
    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
}

impl<'a> Elf<'a> {
    /// Parses the headers.
    pub fn parse(data: &'a [u8]) -> Result<Self, ElfError> {
        if data.len() < 64 || &data[..4] != b"\x7fELF" {
            return Err(ElfError::Corrupt("bad magic"));
        }
        if data[4] != 2 || data[5] != 1 {
            return Err(ElfError::Corrupt("not ELF64 little-endian"));
        }
        let phoff = u64_at(data, 0x20)?;
        let shoff = u64_at(data, 0x28)?;
        let phentsize = u64::from(u16_at(data, 0x36)?);
        let phnum = u64::from(u16_at(data, 0x38)?);
        let shentsize = u64::from(u16_at(data, 0x3a)?);
        let shnum = u64::from(u16_at(data, 0x3c)?);
        let shstrndx = u64::from(u16_at(data, 0x3e)?);

        let mut segments = Vec::new();
        for i in 0..phnum {
            let b = phoff + i * phentsize;
            segments.push(Segment {
                kind: u32_at(data, b)?,
                offset: u64_at(data, b + 8)?,
                vaddr: u64_at(data, b + 16)?,
                filesz: u64_at(data, b + 32)?,
            });
        }
        let mut raw = Vec::new();
        for i in 0..shnum {
            let b = shoff + i * shentsize;
            raw.push((
                u32_at(data, b)?,
                u32_at(data, b + 4)?,
                u64_at(data, b + 24)?,
                u64_at(data, b + 32)?,
            ));
        }
        let names_off = raw
            .get(usize::try_from(shstrndx).map_err(|_| ElfError::Corrupt("shstrndx"))?)
            .map(|s| s.2);
        let mut sections = Vec::new();
        for (name_idx, kind, offset, size) in raw {
            let name = match names_off {
                Some(base) => cstr(data, base + u64::from(name_idx))?,
                None => String::new(),
            };
            sections.push(Section {
                name,
                kind,
                offset,
                size,
            });
        }
        Ok(Self {
            data,
            sections,
            segments,
            phdrs_end: phoff.saturating_add(phnum.saturating_mul(phentsize)),
        })
    }

    /// The file without what only debuggers and linkers read: cut after the
    /// last byte any program header covers (the section headers, symbol
    /// tables and debug sections come after it), with the section header
    /// table dropped. The kernel and the dynamic loader read program headers
    /// only, so the result runs exactly as the original.
    pub fn stripped(&self) -> Vec<u8> {
        let end = self
            .segments
            .iter()
            .map(|s| s.offset.saturating_add(s.filesz))
            .chain(std::iter::once(self.phdrs_end))
            .max()
            .unwrap_or(0)
            .min(self.data.len() as u64) as usize;
        let mut out = self.data[..end].to_vec();
        out[0x28..0x30].fill(0); // e_shoff
        out[0x3c..0x40].fill(0); // e_shnum, e_shstrndx
        out
    }

    /// Whether [`Elf::stripped`] would drop anything.
    pub fn strippable(&self) -> bool {
        !self.sections.is_empty()
    }

    /// The bytes of the section called `name` (NOBITS sections are empty).
    pub fn section(&self, name: &str) -> Result<Option<&'a [u8]>, ElfError> {
        match self.sections.iter().find(|s| s.name == name) {
            Some(s) if s.kind == 8 => Ok(Some(&[])),
            Some(s) => slice(self.data, s.offset, s.size).map(Some),
            None => Ok(None),
        }
    }

    /// The program interpreter (`PT_INTERP`), for dynamically linked executables.
    pub fn interpreter(&self) -> Result<Option<String>, ElfError> {
        match self.segments.iter().find(|s| s.kind == PT_INTERP) {
            Some(s) => Ok(Some(cstr(self.data, s.offset)?)),
            None => Ok(None),
        }
    }

    fn vaddr_to_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments
            .iter()
            .filter(|s| s.kind == PT_LOAD)
            .find(|s| vaddr >= s.vaddr && vaddr < s.vaddr + s.filesz)
            .map(|s| vaddr - s.vaddr + s.offset)
    }

    /// `DT_NEEDED` libraries and the `DT_RUNPATH`/`DT_RPATH` search path.
    pub fn dynamic(&self) -> Result<(Vec<String>, Vec<String>), ElfError> {
        let Some(dynseg) = self.segments.iter().find(|s| s.kind == PT_DYNAMIC) else {
            return Ok((Vec::new(), Vec::new()));
        };
        let mut entries = Vec::new();
        let mut off = dynseg.offset;
        let end = dynseg.offset + dynseg.filesz;
        while off + 16 <= end {
            let tag = u64_at(self.data, off)?;
            let val = u64_at(self.data, off + 8)?;
            if tag == DT_NULL {
                break;
            }
            entries.push((tag, val));
            off += 16;
        }
        let strtab = entries
            .iter()
            .find(|(t, _)| *t == DT_STRTAB)
            .and_then(|(_, v)| self.vaddr_to_offset(*v))
            // Fall back to the section table's .dynstr.
            .or_else(|| {
                self.sections
                    .iter()
                    .find(|s| s.name == ".dynstr")
                    .map(|s| s.offset)
            })
            .ok_or(ElfError::Corrupt("no dynamic string table"))?;
        let mut needed = Vec::new();
        let mut paths = Vec::new();
        for (tag, val) in entries {
            match tag {
                DT_NEEDED => needed.push(cstr(self.data, strtab + val)?),
                DT_RUNPATH | DT_RPATH => paths.extend(
                    cstr(self.data, strtab + val)?
                        .split(':')
                        .filter(|p| !p.is_empty())
                        .map(String::from),
                ),
                _ => {}
            }
        }
        Ok((needed, paths))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_test_binary() {
        let exe = std::env::current_exe().unwrap();
        let data = std::fs::read(exe).unwrap();
        let elf = Elf::parse(&data).unwrap();
        if let Some(interp) = elf.interpreter().unwrap() {
            assert!(interp.contains("ld-linux"), "{interp}");
            let (needed, _) = elf.dynamic().unwrap();
            assert!(
                needed.iter().any(|n| n.starts_with("libc.so")),
                "{needed:?}"
            );
        }
        assert!(elf.section(".text").unwrap().is_some());
    }

    #[test]
    fn rejects_garbage() {
        assert!(Elf::parse(b"nope").is_err());
        let mut fake = vec![0u8; 64];
        fake[..4].copy_from_slice(b"\x7fELF");
        fake[4] = 2;
        fake[5] = 1;
        fake[0x20] = 0xff; // program headers far beyond the end
        fake[0x38] = 1;
        assert!(Elf::parse(&fake).is_err());
    }
}
