//! The kernel side of an image: finding the kernel image in a package and
//! choosing the modules the initramfs loads.

pub mod modules;
