//! The command-line interface: clap types and one module per command.

use clap::{Parser, Subcommand};

pub mod mkfs;

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
    /// Make a filesystem image from a directory
    #[command(subcommand)]
    Mkfs(mkfs::Mkfs),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Mkfs(cmd) => mkfs::run(cmd),
    }
}
