//! The command-line interface: clap types and one module per command.

use clap::{Parser, Subcommand};

pub mod agent;
pub mod build;
pub mod bundle;
pub mod channel;
pub mod completions;
pub mod diff;
pub mod exit;
pub mod extract;
pub mod inspect;
pub mod keygen;
pub mod mkfs;
pub mod mkfs_cpio;
pub mod mkfs_fat;
pub mod qemu;
pub mod vendor;
pub mod verify;
pub mod verity;

/// `slate --version`: the version, the git commit and the target.
pub const LONG_VERSION: &str = env!("SLATE_LONG_VERSION");

/// slate: compose minimal, immutable A/B OS images and update them safely.
#[derive(Debug, Parser)]
#[command(
    name = "slate",
    version,
    long_version = LONG_VERSION,
    about,
    max_term_width = 80,
    after_help = "Exit codes: 0 ok, 1 failure, 2 usage, 3 invalid input, \
                  4 verification failed, 5 I/O (docs/cli.md)."
)]
pub struct Cli {
    /// Print only results, warnings and errors: no status lines or progress
    /// bars (colour also stays off when NO_COLOR is set).
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a bootable A/B disk image from a recipe.
    Build(build::BuildArgs),
    /// Copy every locked package of a recipe into a directory.
    Vendor(vendor::VendorArgs),
    /// Build a filesystem image from a directory, without root.
    #[command(subcommand)]
    Mkfs(mkfs::Mkfs),
    /// Make an Ed25519 signing key pair (PREFIX.key, PREFIX.pub).
    Keygen(keygen::KeygenArgs),
    /// Pack a build directory into a signed update bundle.
    Bundle(bundle::BundleArgs),
    /// Publish bundles on a TUF update channel, or poll one from the host.
    Channel(channel::ChannelArgs),
    /// Verify a bundle's signatures and its whole payload.
    Verify(verify::VerifyArgs),
    /// Show what a bundle, build directory or disk image holds.
    Inspect(inspect::InspectArgs),
    /// Write one verified artifact of a bundle to a file or block device.
    Extract(extract::ExtractArgs),
    /// Predict what a device running OLD downloads of a new bundle (delta update).
    Diff(diff::DiffArgs),
    /// Compute the dm-verity hash tree of an image (as veritysetup format).
    Verity(verity::VerityArgs),
    /// Boot a disk image in QEMU and check the events the guest prints.
    Qemu(qemu::QemuArgs),
    /// The on-device agent (installed in images as slate-agent).
    Agent(agent::AgentArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Write the man pages into a directory (for packagers).
    #[command(hide = true)]
    Man(completions::ManArgs),
}

impl Cli {
    /// For a command run with `--json`: the fields that identify what the
    /// command worked on, printed with the error object if it fails
    /// (docs/json.md). `None` without `--json`.
    pub fn json_failure_context(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        let mut m = serde_json::Map::new();
        match &self.command {
            Command::Verify(a) if a.json => {
                m.insert("bundle".into(), a.bundle.display().to_string().into());
                m.insert("valid".into(), false.into());
            }
            Command::Inspect(a) if a.json => {
                m.insert("path".into(), a.bundle.display().to_string().into());
            }
            Command::Channel(a) if a.command.json() => {}
            Command::Qemu(a) if a.json => {
                m.insert("disk".into(), a.disk.display().to_string().into());
            }
            Command::Agent(agent::AgentArgs {
                command: agent::AgentCommand::Status { json: true },
                ..
            }) => {}
            _ => return None,
        }
        Some(m)
    }
}

/// Parses the process's command line, runs it and returns its exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse_from(effective_args());
    let json = cli.json_failure_context();
    exit::report(run(cli), json)
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    crate::progress::set_quiet(cli.quiet);
    match cli.command {
        Command::Build(a) => build::run(a),
        Command::Vendor(a) => vendor::run(a),
        Command::Mkfs(cmd) => mkfs::run(cmd),
        Command::Verity(a) => verity::run(a),
        Command::Keygen(a) => keygen::run(a),
        Command::Bundle(a) => bundle::run(a),
        Command::Channel(a) => channel::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Extract(a) => extract::run(a),
        Command::Diff(a) => diff::run(a),
        Command::Qemu(a) => qemu::run(a),
        Command::Agent(a) => agent::run(a),
        Command::Completions(a) => completions::run_completions(a),
        Command::Man(a) => completions::run_man(a),
    }
}

/// The command line to parse: invoked as `slate-agent ARGS`, the binary
/// behaves as `slate agent ARGS`.
pub fn effective_args() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked_as_agent = args
        .first()
        .and_then(|a| {
            std::path::Path::new(a)
                .file_name()
                .map(|n| n == "slate-agent")
        })
        .unwrap_or(false);
    if invoked_as_agent {
        args[0] = "slate".into();
        args.insert(1, "agent".into());
    }
    args
}
