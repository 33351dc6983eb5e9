//! A write-back block cache between `fatfs` and the image.
//!
//! fatfs reads and writes a FAT entry or a 512-byte cluster at a time, each
//! with its own seek; straight onto a file that is several system calls per
//! cluster. The cache keeps up to [`MAX_BLOCKS`] 64 KiB blocks and writes
//! dirty ones back in offset order, contiguous blocks in one call. The
//! storage starts zero-filled, so a block never written back is known to be
//! zeros and is not read.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};

const BLOCK: u64 = 64 * 1024;
/// 16 MiB of cached blocks at most.
const MAX_BLOCKS: usize = 256;

#[derive(Debug)]
struct Block {
    data: Box<[u8]>,
    dirty: bool,
}

/// Caches `inner`, a storage of `len` bytes. Call [`Write::flush`] before
/// [`BlockCache::into_inner`]; dropping it loses unflushed writes.
#[derive(Debug)]
pub struct BlockCache<S> {
    inner: S,
    len: u64,
    pos: u64,
    blocks: BTreeMap<u64, Block>,
    max_blocks: usize,
    /// One bit per block: set once the block has been written to `inner`.
    written: Vec<u64>,
    /// Buffers of evicted blocks, reused to avoid fresh page faults.
    spare: Vec<Box<[u8]>>,
}

impl<S: Read + Write + Seek> BlockCache<S> {
    /// Caches `inner`, whose size is `len` bytes.
    pub fn new(inner: S, len: u64) -> Self {
        Self::with_limit(inner, len, MAX_BLOCKS)
    }

    fn with_limit(inner: S, len: u64, max_blocks: usize) -> Self {
        Self {
            inner,
            len,
            pos: 0,
            blocks: BTreeMap::new(),
            max_blocks,
            written: vec![0; len.div_ceil(BLOCK).div_ceil(64) as usize],
            spare: Vec::new(),
        }
    }

    /// The storage (flush first).
    #[cfg(test)]
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn block_len(&self, index: u64) -> usize {
        (self.len - index * BLOCK).min(BLOCK) as usize
    }

    /// The cached block `index`, read in unless `overwrite` says every byte
    /// of it is about to be replaced.
    fn block(&mut self, index: u64, overwrite: bool) -> io::Result<&mut Block> {
        if !self.blocks.contains_key(&index) {
            if self.blocks.len() >= self.max_blocks {
                self.write_back()?;
                let evicted = std::mem::take(&mut self.blocks);
                self.spare.extend(evicted.into_values().map(|b| b.data));
            }
            let len = self.block_len(index);
            let mut data = match self.spare.pop() {
                Some(d) if d.len() == len => d,
                _ => vec![0u8; len].into_boxed_slice(),
            };
            let on_storage = self.written[(index / 64) as usize] & (1 << (index % 64)) != 0;
            if !overwrite {
                if on_storage {
                    self.inner.seek(SeekFrom::Start(index * BLOCK))?;
                    self.inner.read_exact(&mut data)?;
                } else {
                    data.fill(0);
                }
            }
            self.blocks.insert(index, Block { data, dirty: false });
        }
        Ok(self.blocks.get_mut(&index).expect("inserted above"))
    }

    /// Writes every dirty block, runs of adjacent blocks in one call.
    fn write_back(&mut self) -> io::Result<()> {
        let mut run: Vec<u8> = Vec::new();
        let mut run_start = 0u64;
        let mut next = None;
        for (&index, b) in self.blocks.iter_mut().filter(|(_, b)| b.dirty) {
            if next != Some(index) {
                if !run.is_empty() {
                    self.inner.seek(SeekFrom::Start(run_start * BLOCK))?;
                    self.inner.write_all(&run)?;
                    run.clear();
                }
                run_start = index;
            }
            run.extend_from_slice(&b.data);
            b.dirty = false;
            self.written[(index / 64) as usize] |= 1 << (index % 64);
            next = Some(index + 1);
        }
        if !run.is_empty() {
            self.inner.seek(SeekFrom::Start(run_start * BLOCK))?;
            self.inner.write_all(&run)?;
        }
        Ok(())
    }
}

impl<S: Read + Write + Seek> Read for BlockCache<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let index = self.pos / BLOCK;
        let off = (self.pos % BLOCK) as usize;
        let block = self.block(index, false)?;
        let n = buf.len().min(block.data.len() - off);
        buf[..n].copy_from_slice(&block.data[off..off + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl<S: Read + Write + Seek> Write for BlockCache<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "write at offset {} past the end of a {}-byte image",
                    self.pos, self.len
                ),
            ));
        }
        let index = self.pos / BLOCK;
        let off = (self.pos % BLOCK) as usize;
        let whole = off == 0 && buf.len() >= self.block_len(index);
        let block = self.block(index, whole)?;
        let n = buf.len().min(block.data.len() - off);
        block.data[off..off + n].copy_from_slice(&buf[..n]);
        block.dirty = true;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_back()?;
        self.inner.flush()
    }
}

impl<S: Read + Write + Seek> Seek for BlockCache<S> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before start"))?;
        self.pos = target;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn behaves_like_the_storage_it_caches() {
        let len = 5 * BLOCK + 1000;
        let mut plain = Cursor::new(vec![0u8; len as usize]);
        // Room for two blocks only, so eviction happens all the time.
        let mut cached = BlockCache::with_limit(Cursor::new(vec![0u8; len as usize]), len, 2);
        // A deterministic mix of small, straddling and whole-block writes.
        let mut x = 12345u64;
        for i in 0..2000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let off = (x >> 20) % len;
            let n = if i % 50 == 0 {
                BLOCK as usize + 7
            } else {
                ((x >> 8) % 700) as usize
            };
            let n = n.min((len - off) as usize);
            let data: Vec<u8> = (0..n).map(|k| (k as u64 ^ i) as u8).collect();
            for s in [&mut plain as &mut dyn WriteSeek, &mut cached] {
                s.seek(SeekFrom::Start(off)).unwrap();
                s.write_all(&data).unwrap();
            }
            if i % 97 == 0 {
                let mut a = vec![0u8; 300.min((len - off) as usize)];
                let mut b = a.clone();
                plain.seek(SeekFrom::Start(off)).unwrap();
                plain.read_exact(&mut a).unwrap();
                cached.seek(SeekFrom::Start(off)).unwrap();
                cached.read_exact(&mut b).unwrap();
                assert_eq!(a, b);
            }
        }
        cached.seek(SeekFrom::End(0)).unwrap();
        assert!(cached.write(b"x").is_err());
        cached.flush().unwrap();
        assert_eq!(cached.into_inner().into_inner(), plain.into_inner());
    }

    trait WriteSeek: Write + Seek {}
    impl<T: Write + Seek> WriteSeek for T {}
}
