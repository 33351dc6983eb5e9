//! Small I/O building blocks shared by the writers, the bundle code and the agent.

pub mod atomic;
pub mod blockdev;
pub mod hash;
pub mod offset;
pub mod overlay;
pub mod ranges;
pub mod source;
pub mod sparse;

pub use atomic::{AtomicFile, sync_dir, write_atomic};
pub use offset::OffsetWriter;
