//! Sparse files: finding their data segments and copying only those.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;

/// 64 KiB of zeros, for writing or hashing runs of zeros piecewise.
static ZEROS: [u8; 1 << 16] = [0; 1 << 16];

/// `n` zero bytes as slices of at most 64 KiB, without allocating.
pub fn zero_slices(n: u64) -> impl Iterator<Item = &'static [u8]> {
    let size = ZEROS.len() as u64;
    (0..n.div_ceil(size)).map(move |i| &ZEROS[..(n - i * size).min(size) as usize])
}

/// Whether `b` is all zero bytes (a hole when written).
pub fn is_zero(b: &[u8]) -> bool {
    // Wide OR-folds vectorise; `iter().all` with its early exit does not.
    let mut chunks = b.chunks_exact(64);
    chunks.all(|c| c.iter().fold(0u8, |acc, x| acc | x) == 0)
        && chunks.remainder().iter().all(|x| *x == 0)
}

/// The data segments of the first `size` bytes of a file, per
/// SEEK_DATA/SEEK_HOLE (filesystems without hole support report one segment).
pub fn data_ranges(file: &File, size: u64) -> io::Result<Vec<Range<u64>>> {
    use rustix::fs::{SeekFrom, seek};
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match seek(file, SeekFrom::Data(pos)) {
            Ok(p) => p,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        if start >= size {
            break;
        }
        let end = seek(file, SeekFrom::Hole(start))?.min(size);
        out.push(start..end);
        pos = end;
    }
    Ok(out)
}

/// Copies the data segments of `src[0..len]` to `dst` at `dst_offset`,
/// leaving holes as holes (the destination must already read as zeros
/// there) and skipping all-zero blocks inside segments too.
pub fn copy_sparse(src: &File, len: u64, dst: &File, dst_offset: u64) -> io::Result<u64> {
    const BUF: usize = 1 << 20;
    const BLOCK: usize = 4096;
    let mut buf = vec![0u8; BUF];
    let mut copied = 0u64;
    for r in data_ranges(src, len)? {
        let mut pos = r.start;
        while pos < r.end {
            let n = ((r.end - pos) as usize).min(BUF);
            src.read_exact_at(&mut buf[..n], pos)?;
            // Write runs of non-zero blocks.
            let mut i = 0;
            while i < n {
                let end = (i + BLOCK).min(n);
                if buf[i..end].iter().all(|b| *b == 0) {
                    i = end;
                    continue;
                }
                let mut j = end;
                while j < n {
                    let e = (j + BLOCK).min(n);
                    if buf[j..e].iter().all(|b| *b == 0) {
                        break;
                    }
                    j = e;
                }
                dst.write_all_at(&buf[i..j], dst_offset + pos + i as u64)?;
                copied += (j - i) as u64;
                i = j;
            }
            pos += n as u64;
        }
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn zero_slices_cover_exactly_n_bytes() {
        for n in [0u64, 1, 65535, 65536, 65537, 3 << 16, (5 << 20) + 7] {
            let lens: Vec<usize> = zero_slices(n).map(<[u8]>::len).collect();
            assert_eq!(lens.iter().sum::<usize>() as u64, n, "{n}");
            assert!(lens.iter().all(|&l| l > 0 && l <= 1 << 16), "{n}: {lens:?}");
            assert!(zero_slices(n).all(is_zero));
        }
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 1000]));
        for i in [0, 63, 64, 999] {
            let mut v = vec![0u8; 1000];
            v[i] = 1;
            assert!(!is_zero(&v), "{i}");
        }
        assert!(is_zero(&[]));
    }

    #[test]
    fn copies_only_data() {
        let d = tempfile::tempdir().unwrap();
        let mut src = File::create(d.path().join("src")).unwrap();
        src.write_all(b"head").unwrap();
        src.seek(SeekFrom::Start(32 << 20)).unwrap();
        src.write_all(b"tail").unwrap();
        let src = File::open(d.path().join("src")).unwrap();
        let len = src.metadata().unwrap().len();
        let dst = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(d.path().join("dst"))
            .unwrap();
        dst.set_len(len + 8192).unwrap();
        let copied = copy_sparse(&src, len, &dst, 8192).unwrap();
        assert_eq!(copied, 4096 + 4, "only the blocks holding data are written");
        let mut b = [0u8; 4];
        dst.read_exact_at(&mut b, 8192).unwrap();
        assert_eq!(&b, b"head");
        dst.read_exact_at(&mut b, 8192 + (32 << 20)).unwrap();
        assert_eq!(&b, b"tail");
        use std::os::unix::fs::MetadataExt;
        assert!(
            dst.metadata().unwrap().blocks() * 512 < 1 << 20,
            "destination stays sparse"
        );
    }
}
