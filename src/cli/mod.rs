//! The command-line interface: clap types and one module per command.

use clap::{Parser, Subcommand};

pub mod qemu;

/// slate: compose minimal, immutable A/B OS images and update them safely.
#[derive(Debug, Parser)]
#[command(name = "slate", version, about, max_term_width = 80)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a disk image in QEMU and check the events its guest reports.
    Qemu(qemu::QemuArgs),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Qemu(args) => qemu::run(args),
    }
}
