//! Front-to-back block allocation over the space the geometry left free.
//!
//! The allocator never skips a free block, so after planning the used data
//! blocks are exactly "every non-reserved block below the cursor": bitmaps
//! and free counts follow from one number.

use super::geometry::Geometry;
use std::ops::Range;

/// Hands out free blocks in ascending order.
#[derive(Debug)]
pub(crate) struct Allocator<'a> {
    reserved: &'a [Range<u64>],
    idx: usize,
    cursor: u64,
    end: u64,
}

impl<'a> Allocator<'a> {
    /// An allocator over `geo`'s free blocks.
    pub fn new(geo: &'a Geometry) -> Self {
        Self {
            reserved: &geo.reserved,
            idx: 0,
            cursor: 0,
            end: geo.blocks_count,
        }
    }

    /// Takes the next `n` free blocks, reporting each contiguous run as
    /// `(start, len)`. Past the end of the filesystem it keeps counting, so
    /// a failed plan can say how many blocks were missing ([`Self::overflow`]).
    pub fn alloc(&mut self, mut n: u64, mut take: impl FnMut(u64, u64)) {
        while n > 0 {
            while self.idx < self.reserved.len() && self.reserved[self.idx].end <= self.cursor {
                self.idx += 1;
            }
            let limit = match self.reserved.get(self.idx) {
                Some(r) if r.start <= self.cursor => {
                    self.cursor = r.end;
                    continue;
                }
                Some(r) => r.start,
                None => u64::MAX,
            };
            let len = n.min(limit - self.cursor);
            take(self.cursor, len);
            self.cursor += len;
            n -= len;
        }
    }

    /// The first block not handed out yet.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Blocks handed out beyond the end of the filesystem.
    pub fn overflow(&self) -> u64 {
        self.cursor.saturating_sub(self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_around_reserved_blocks() {
        let mut geo = Geometry::new(1000, 16).unwrap();
        geo.reserved = vec![0..10, 20..25, 30..31];
        let mut a = Allocator::new(&geo);
        let mut runs = Vec::new();
        a.alloc(12, |s, l| runs.push((s, l)));
        assert_eq!(runs, [(10, 10), (25, 2)]);
        runs.clear();
        a.alloc(5, |s, l| runs.push((s, l)));
        assert_eq!(runs, [(27, 3), (31, 2)]);
        assert_eq!(a.cursor(), 33);
        assert_eq!(a.overflow(), 0);
        a.alloc(1000, |_, _| {});
        assert_eq!(a.overflow(), 33);
    }
}
