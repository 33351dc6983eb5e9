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

    /// Bytes handed to the device so far (not counting what is buffered).
    pub fn written(&self) -> u64 {
        self.pos
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

    /// Reads back `buf.len()` bytes already written at `offset`, from the
    /// buffer or the device. `Ok(false)` when they are not all written yet.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
        let end = offset + buf.len() as u64;
        if end > self.position() {
            return Ok(false);
        }
        if end > self.pos {
            // Part of it is still buffered: hand the buffer to the device first.
            self.flush_buf()?;
        }
        self.file.read_exact_at(buf, offset)?;
        Ok(true)
    }

    /// Writes what is buffered and fsyncs.
    pub fn finish(mut self) -> io::Result<u64> {
        self.flush_buf()?;
        self.file.sync_all()?;
        Ok(self.pos)
    }
}

/// Alignment of direct I/O buffers and offsets.
const DIRECT_ALIGN: usize = 4096;

/// SHA-256 of the first `len` bytes of `path` as stored on the device, not
/// as cached: read with `O_DIRECT`, or, where the file cannot be opened so
/// (a regular file on tmpfs), after dropping its cached pages. Returns the
/// digest and how many bytes could be read (less than `len` when the device
/// is shorter).
pub fn sha256_uncached(path: &std::path::Path, len: u64) -> io::Result<([u8; 32], u64)> {
    use rustix::fs::{Mode, OFlags};
    use sha2::{Digest, Sha256};
    let direct = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECT | OFlags::CLOEXEC,
        Mode::empty(),
    );
    let (file, direct) = match direct {
        Ok(fd) => (File::from(fd), true),
        Err(_) => {
            let f = File::open(path)?;
            f.sync_all().ok();
            let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
            (f, false)
        }
    };
    // One thread reads while this one hashes: a few aligned buffers go
    // round between them.
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<io::Result<(AlignedBuf, usize)>>(2);
    let (empty_tx, empty_rx) = std::sync::mpsc::channel::<AlignedBuf>();
    for _ in 0..3 {
        let _ = empty_tx.send(AlignedBuf::new(WRITE_SIZE));
    }
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut pos = 0u64;
            while pos < len {
                let Ok(mut buf) = empty_rx.recv() else { return };
                let want = (len - pos).min(WRITE_SIZE as u64) as usize;
                // Direct reads are whole sectors: read up to the next
                // boundary and hash only what was asked for.
                let ask = if direct {
                    want.next_multiple_of(512)
                } else {
                    want
                };
                let n = loop {
                    match file.read_at(&mut buf.as_mut()[..ask], pos) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        r => break r,
                    }
                };
                let stop = !matches!(n, Ok(n) if n > 0);
                let sent = n.map(|n| {
                    let used = n.min(want);
                    pos += used as u64;
                    (buf, used)
                });
                if full_tx.send(sent).is_err() || stop {
                    return;
                }
            }
        });
        let mut hasher = Sha256::new();
        let mut pos = 0u64;
        for item in full_rx {
            let (buf, used) = item?;
            if used == 0 {
                break;
            }
            hasher.update(&buf.as_ref()[..used]);
            pos += used as u64;
            let _ = empty_tx.send(buf);
        }
        Ok((hasher.finalize().into(), pos))
    })
}

/// A zeroed buffer whose start is aligned for direct I/O.
struct AlignedBuf {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        let mem = vec![0u8; len + DIRECT_ALIGN];
        let start = mem.as_ptr().align_offset(DIRECT_ALIGN);
        Self { mem, start, len }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }
}

impl AsMut<[u8]> for AlignedBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + self.len]
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

    #[test]
    fn uncached_hash_of_a_regular_file() {
        use sha2::{Digest, Sha256};
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let data: Vec<u8> = (0..(5u32 << 20) + 77).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let (h, n) = sha256_uncached(&p, data.len() as u64).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(h, <[u8; 32]>::from(Sha256::digest(&data)));
        let (_, n) = sha256_uncached(&p, data.len() as u64 + 10).unwrap();
        assert_eq!(n, data.len() as u64, "short device");
    }
}
