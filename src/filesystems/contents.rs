//! Streaming a regular file's contents out of a [`FileData`], for formats
//! that have no holes (FAT, cpio): holes are written as zeros.

use crate::tree::{DataSource, FileData};
use std::io::{self, Read, Seek, SeekFrom, Write};

/// Why a file's contents could not be copied.
#[derive(Debug)]
pub enum CopyError {
    /// Reading the source failed (its description, the error).
    Read(String, io::Error),
    /// Writing the output failed.
    Write(io::Error),
}

/// Writes all `data.size` bytes of the file to `out`, reading its source in
/// `buf`-sized pieces.
pub fn copy_contents(
    data: &FileData,
    out: &mut impl Write,
    buf: &mut [u8],
) -> Result<(), CopyError> {
    match &data.source {
        DataSource::Bytes(b) => {
            let end = usize::try_from(data.size)
                .ok()
                .filter(|e| *e <= b.len())
                .ok_or_else(|| {
                    CopyError::Read(
                        "generated file".into(),
                        io::Error::new(io::ErrorKind::InvalidData, "size exceeds its bytes"),
                    )
                })?;
            out.write_all(&b[..end]).map_err(CopyError::Write)
        }
        DataSource::Host(src) => {
            let shown = || src.display().to_string();
            let mut file = std::fs::File::open(src).map_err(|e| CopyError::Read(shown(), e))?;
            let mut pos = 0u64;
            for r in &data.data {
                write_zeros(out, r.start.saturating_sub(pos), buf).map_err(CopyError::Write)?;
                file.seek(SeekFrom::Start(r.start))
                    .map_err(|e| CopyError::Read(shown(), e))?;
                let mut left = r.end - r.start;
                while left > 0 {
                    let want = left.min(buf.len() as u64) as usize;
                    let n = file
                        .read(&mut buf[..want])
                        .map_err(|e| CopyError::Read(shown(), e))?;
                    if n == 0 {
                        return Err(CopyError::Read(
                            shown(),
                            io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the file shrank while the image was written",
                            ),
                        ));
                    }
                    out.write_all(&buf[..n]).map_err(CopyError::Write)?;
                    left -= n as u64;
                }
                pos = r.end;
            }
            write_zeros(out, data.size.saturating_sub(pos), buf).map_err(CopyError::Write)
        }
    }
}

fn write_zeros(out: &mut impl Write, mut n: u64, buf: &mut [u8]) -> io::Result<()> {
    if n == 0 {
        return Ok(());
    }
    buf.fill(0);
    while n > 0 {
        let k = n.min(buf.len() as u64) as usize;
        out.write_all(&buf[..k])?;
        n -= k as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_become_zeros() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"abcdefghij").unwrap();
        let data = FileData {
            size: 12,
            source: DataSource::Host(p),
            data: vec![1..3, 6..8],
        };
        let mut out = Vec::new();
        copy_contents(&data, &mut out, &mut [0u8; 3]).unwrap();
        assert_eq!(out, b"\0bc\0\0\0gh\0\0\0\0");
    }

    #[test]
    fn shrunken_source_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let data = FileData::host(&p, 10);
        let e = copy_contents(&data, &mut Vec::new(), &mut [0u8; 64]).unwrap_err();
        assert!(
            matches!(e, CopyError::Read(ref s, _) if s.contains('f')),
            "{e:?}"
        );
    }
}
