//! `slate agent ...` (also installed as `slate-agent`): the on-device agent.

use crate::agent::config::CONFIG_PATH;
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Arguments of `slate agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The image's agent configuration.
    #[arg(long, default_value = CONFIG_PATH, hide = true)]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: AgentCommand,
}

/// Agent subcommands.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Run after boot: health check, commit or fall back, removable media.
    Boot,
    /// Show slots, versions, boot states and the update phase.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Install a bundle into the inactive slot and reboot into it.
    Install {
        /// A bundle file, a block device holding one, or an http(s) URL.
        source: String,
        /// Do not reboot after installing.
        #[arg(long)]
        no_reboot: bool,
    },
}

/// Runs an agent command.
pub fn run(args: AgentArgs) -> Result<()> {
    match args.command {
        AgentCommand::Boot => crate::agent::boot::run(&args.config),
        AgentCommand::Status { json } => {
            let r = crate::agent::status::gather(&args.config)?;
            if json {
                println!("{}", status_json(&r)?);
            } else {
                print!("{}", crate::agent::status::render(&r));
            }
            Ok(())
        }
        AgentCommand::Install { source, no_reboot } => {
            crate::agent::install::run_cli(&args.config, &source, !no_reboot)
        }
    }
}

/// The `--json` document of `slate-agent status` (docs/json.md).
pub fn status_json(r: &crate::agent::status::StatusReport) -> Result<serde_json::Value> {
    let mut doc = serde_json::Map::new();
    doc.insert("schema".into(), super::exit::JSON_SCHEMA.into());
    if let serde_json::Value::Object(fields) = serde_json::to_value(r)? {
        doc.extend(fields);
    }
    Ok(serde_json::Value::Object(doc))
}
