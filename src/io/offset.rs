//! A window onto part of a larger file, so a filesystem writer can stream
//! straight into its partition of a disk image.

use std::io::{self, Read, Seek, SeekFrom, Write};

/// Writes into `inner` at `[base, base + len)`; positions are relative to `base`
/// and writes past `len` fail instead of spilling into the next partition.
/// When `inner` is readable the window is too (reads stop at `len`), which
/// writers that read back their own metadata, such as FAT, need.
#[derive(Debug)]
pub struct OffsetWriter<W> {
    inner: W,
    base: u64,
    len: u64,
    pos: u64,
}

impl<W: Seek> OffsetWriter<W> {
    /// A window of `len` bytes starting at `base`.
    pub fn new(mut inner: W, base: u64, len: u64) -> io::Result<Self> {
        inner.seek(SeekFrom::Start(base))?;
        Ok(Self {
            inner,
            base,
            len,
            pos: 0,
        })
    }

    /// Gives back the underlying writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write + Seek> Write for OffsetWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.len.saturating_sub(self.pos);
        if room < buf.len() as u64 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "write of {} bytes at offset {} overflows a region of {} bytes",
                    buf.len(),
                    self.pos,
                    self.len
                ),
            ));
        }
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Read + Write + Seek> Read for OffsetWriter<W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = self.len.saturating_sub(self.pos);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<W: Seek> Seek for OffsetWriter<W> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before start"))?;
        self.inner.seek(SeekFrom::Start(self.base + target))?;
        self.pos = target;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn writes_land_inside_window() {
        let mut w = OffsetWriter::new(Cursor::new(vec![0u8; 16]), 4, 8).unwrap();
        w.write_all(b"ab").unwrap();
        w.seek(SeekFrom::Start(6)).unwrap();
        w.write_all(b"cd").unwrap();
        assert!(w.write_all(b"x").is_err());
        let v = w.into_inner().into_inner();
        assert_eq!(&v[4..12], b"ab\0\0\0\0cd");
        assert_eq!(v[12], 0);
    }

    #[test]
    fn reads_stop_at_window_end() {
        let data: Vec<u8> = (0..16).collect();
        let mut w = OffsetWriter::new(Cursor::new(data), 4, 8).unwrap();
        let mut all = Vec::new();
        w.read_to_end(&mut all).unwrap();
        assert_eq!(all, (4..12).collect::<Vec<u8>>());
        w.seek(SeekFrom::End(-2)).unwrap();
        let mut two = [0u8; 4];
        assert_eq!(w.read(&mut two).unwrap(), 2);
        assert_eq!(&two[..2], &[10, 11]);
    }
}
