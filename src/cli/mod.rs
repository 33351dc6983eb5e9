//! The command-line interface: clap types and one module per command.

use clap::{Parser, Subcommand};

pub mod bundle;
pub mod inspect;
pub mod keygen;
pub mod verify;

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
    /// Make an Ed25519 signing key pair (PREFIX.key, PREFIX.pub).
    Keygen(keygen::KeygenArgs),
    /// Pack a build directory into a signed update bundle.
    Bundle(bundle::BundleArgs),
    /// Verify a bundle's signatures and its whole payload.
    Verify(verify::VerifyArgs),
    /// Show a bundle's manifest and signatures.
    Inspect(inspect::InspectArgs),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen(a) => keygen::run(a),
        Command::Bundle(a) => bundle::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Inspect(a) => inspect::run(a),
    }
}
