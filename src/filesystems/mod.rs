//! Writers for the on-disk formats slate's images are made of.

pub mod ext4;
