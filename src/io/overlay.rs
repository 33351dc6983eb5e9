//! A reader that shows a stream with some byte ranges replaced, so a patched
//! image can be hashed without writing the patched copy anywhere.

use std::io::{self, Read};

/// Reads `inner` from its current position (offset 0 of the overlay) with
/// each `(offset, bytes)` patch shown in place of the bytes under it.
#[derive(Debug)]
pub struct Overlay<'a, R> {
    inner: R,
    pos: u64,
    patches: &'a [(u64, Vec<u8>)],
}

impl<'a, R: Read> Overlay<'a, R> {
    /// `inner` seen through `patches`.
    pub fn new(inner: R, patches: &'a [(u64, Vec<u8>)]) -> Self {
        Self {
            inner,
            pos: 0,
            patches,
        }
    }
}

impl<R: Read> Read for Overlay<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let (start, end) = (self.pos, self.pos + n as u64);
        for (at, bytes) in self.patches {
            let (p_start, p_end) = (*at, at + bytes.len() as u64);
            let (lo, hi) = (start.max(p_start), end.min(p_end));
            if lo < hi {
                buf[(lo - start) as usize..(hi - start) as usize]
                    .copy_from_slice(&bytes[(lo - p_start) as usize..(hi - p_start) as usize]);
            }
        }
        self.pos = end;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_show_through_any_read_size() {
        let data: Vec<u8> = (0..100u8).collect();
        let patches = vec![(10u64, vec![0xAA; 5]), (98, vec![0xBB; 2])];
        let mut want = data.clone();
        want[10..15].fill(0xAA);
        want[98..100].fill(0xBB);
        for step in [1usize, 3, 7, 64, 200] {
            let mut r = Overlay::new(&data[..], &patches);
            let mut got = Vec::new();
            let mut buf = vec![0u8; step];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, want, "step {step}");
        }
    }
}
