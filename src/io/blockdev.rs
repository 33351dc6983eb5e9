//! Writing an image onto a block device (a slot) sequentially: data in large
//! positional writes, runs of zeros as `fallocate(ZERO_RANGE)` so the device
//! (or a loop device's backing file) zeroes them without the bytes crossing
//! the page cache; plain zero writes where that is unsupported.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Bytes gathered before one write.
const WRITE_SIZE: usize = 4 << 20;

/// A sequential writer onto a file or block device opened for writing.
#[derive(Debug)]
pub struct DeviceWriter<'a> {
    file: &'a File,
    pos: u64,
    buf: Vec<u8>,
    zero_range: bool,
}

impl<'a> DeviceWriter<'a> {
    /// Writes from offset 0 of `file`.
    pub fn new(file: &'a File) -> Self {
        Self {
            file,
            pos: 0,
            buf: Vec::with_capacity(WRITE_SIZE),
            zero_range: true,
        }
    }

    /// Bytes written (or zeroed) so far.
    pub fn position(&self) -> u64 {
        self.pos + self.buf.len() as u64
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all_at(&self.buf, self.pos)?;
            self.pos += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Appends data.
    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let room = WRITE_SIZE - self.buf.len();
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == WRITE_SIZE {
                self.flush_buf()?;
            }
        }
        Ok(())
    }

    /// Appends `n` zero bytes.
    pub fn write_zeros(&mut self, n: u64) -> io::Result<()> {
        self.flush_buf()?;
        if n == 0 {
            return Ok(());
        }
        if self.zero_range {
            use rustix::fs::{FallocateFlags, fallocate};
            match fallocate(
                self.file,
                FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE,
                self.pos,
                n,
            ) {
                Ok(()) => {
                    self.pos += n;
                    return Ok(());
                }
                // Not every device or filesystem can: write the zeros.
                Err(_) => self.zero_range = false,
            }
        }
        let zeros = vec![0u8; WRITE_SIZE];
        let mut left = n;
        while left > 0 {
            let k = left.min(WRITE_SIZE as u64) as usize;
            self.file.write_all_at(&zeros[..k], self.pos)?;
            self.pos += k as u64;
            left -= k as u64;
        }
        Ok(())
    }

    /// Writes what is buffered and fsyncs.
    pub fn finish(mut self) -> io::Result<u64> {
        self.flush_buf()?;
        self.file.sync_all()?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_and_zeros_land_in_order() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("dev");
        std::fs::write(&p, vec![0xAAu8; 10 << 20]).unwrap();
        let f = File::options().read(true).write(true).open(&p).unwrap();
        let mut w = DeviceWriter::new(&f);
        w.write(b"head").unwrap();
        w.write_zeros(6 << 20).unwrap();
        w.write(&vec![7u8; 5 << 20][..]).unwrap();
        assert_eq!(w.finish().unwrap(), 4 + (6 << 20) + (5 << 20));
        let back = std::fs::read(&p).unwrap();
        assert_eq!(&back[..4], b"head");
        assert!(
            back[4..4 + (6 << 20)].iter().all(|b| *b == 0),
            "old bytes were zeroed"
        );
        assert!(back[4 + (6 << 20)..].iter().all(|b| *b == 7));
    }
}
