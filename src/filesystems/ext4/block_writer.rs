//! Buffered, sparse output: blocks are collected into large contiguous
//! writes, and all-zero blocks are skipped (the caller provides a
//! zero-filled region, so skipping them leaves holes).

use super::geometry::BLOCK_SIZE;
use std::io::{self, Seek, SeekFrom, Write};

const BS: usize = BLOCK_SIZE as usize;
/// Bytes collected before a write.
const BUFFER: usize = 1 << 20;

/// Writes blocks at block-number addresses through a large buffer.
#[derive(Debug)]
pub(crate) struct BlockWriter<W> {
    out: W,
    buf: Vec<u8>,
    /// Block number of `buf[0]`.
    start: u64,
    /// Where `out` is positioned, if known.
    pos: Option<u64>,
    /// Bytes actually written (non-zero blocks).
    written: u64,
}

impl<W: Write + Seek> BlockWriter<W> {
    /// Wraps `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            buf: Vec::with_capacity(BUFFER),
            start: 0,
            pos: None,
            written: 0,
        }
    }

    /// A zeroed slice for `n` blocks starting at block `block`, to be filled
    /// by the caller; contiguous requests are batched into one write.
    pub fn slot(&mut self, block: u64, n: usize) -> io::Result<&mut [u8]> {
        let len = n * BS;
        let contiguous = self.start + (self.buf.len() / BS) as u64 == block;
        if !self.buf.is_empty() && (!contiguous || self.buf.len() + len > BUFFER) {
            self.flush_buf()?;
        }
        if self.buf.is_empty() {
            self.start = block;
        }
        let old = self.buf.len();
        self.buf.resize(old + len, 0);
        Ok(&mut self.buf[old..])
    }

    /// Writes whole blocks `data` at block `block`.
    pub fn put(&mut self, block: u64, data: &[u8]) -> io::Result<()> {
        debug_assert_eq!(data.len() % BS, 0);
        self.slot(block, data.len() / BS)?.copy_from_slice(data);
        Ok(())
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        let blocks = self.buf.len() / BS;
        let mut i = 0;
        while i < blocks {
            if crate::io::sparse::is_zero(&self.buf[i * BS..(i + 1) * BS]) {
                i += 1;
                continue;
            }
            let run_start = i;
            while i < blocks && !crate::io::sparse::is_zero(&self.buf[i * BS..(i + 1) * BS]) {
                i += 1;
            }
            let offset = (self.start + run_start as u64) * BLOCK_SIZE;
            if self.pos != Some(offset) {
                self.out.seek(SeekFrom::Start(offset))?;
            }
            let bytes = &self.buf[run_start * BS..i * BS];
            self.out.write_all(bytes)?;
            self.written += bytes.len() as u64;
            self.pos = Some(offset + bytes.len() as u64);
        }
        self.buf.clear();
        Ok(())
    }

    /// Writes out everything buffered and flushes the output.
    pub fn finish(mut self) -> io::Result<u64> {
        self.flush_buf()?;
        self.out.flush()?;
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn zero_blocks_are_skipped_and_runs_batched() {
        let mut w = BlockWriter::new(Cursor::new(vec![0xAAu8; 8 * BS]));
        w.put(1, &[1u8; BS]).unwrap();
        w.put(2, &[0u8; BS]).unwrap(); // skipped: stays 0xAA
        w.put(3, &[3u8; BS]).unwrap();
        w.slot(6, 1).unwrap()[0] = 6;
        let written = w.finish().unwrap();
        assert_eq!(written, 3 * BLOCK_SIZE);
    }

    #[test]
    fn output_lands_at_block_addresses() {
        let mut cur = Cursor::new(vec![0u8; 8 * BS]);
        {
            let mut w = BlockWriter::new(&mut cur);
            w.put(5, &[5u8; BS]).unwrap();
            w.put(0, &[7u8; BS]).unwrap();
            w.finish().unwrap();
        }
        let v = cur.into_inner();
        assert_eq!(v[0], 7);
        assert_eq!(v[BS], 0);
        assert_eq!(v[5 * BS + 100], 5);
    }
}
