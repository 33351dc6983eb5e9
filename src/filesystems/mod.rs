//! Writers (and, for GPT, a reader) of the on-disk formats an image is made of.
//!
//! Every filesystem writer consumes a [`crate::tree::Tree`] and streams file
//! contents from their sources; none holds a whole image or file in memory.

pub mod bmap;
mod contents;
pub mod cpio;
pub mod ext4;
pub mod fat;
pub mod gpt;
