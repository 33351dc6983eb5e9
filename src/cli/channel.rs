//! `slate channel`: publish bundles on a TUF repository of static files,
//! and run a device's poll from the host (docs/channel.md).

use crate::channel::client::{PollSpec, poll};
use crate::channel::metadata::Role;
use crate::channel::repo::{Expiry, KeySpec, Published, Repository};
use crate::channel::select::{Device, SlateTarget};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Arguments of `slate channel`.
#[derive(Debug, Args)]
pub struct ChannelArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ChannelCommand,
}

/// The repository and its keys.
#[derive(Debug, Args)]
pub struct RepoArgs {
    /// The repository directory (metadata/ and targets/: upload it as is).
    pub repo: PathBuf,
    /// The directory of the signing keys (outside the repository).
    #[arg(long, value_name = "DIR")]
    pub keys: PathBuf,
    /// Expiry of what is signed, e.g. timestamp=1d (repeatable; defaults
    /// root=365d targets=90d snapshot=30d timestamp=7d).
    #[arg(long, value_name = "ROLE=DURATION", value_parser = parse_expiry)]
    pub expires: Vec<(Role, i64)>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The `slate channel` subcommands.
#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// Create a repository and its root, targets, snapshot, timestamp keys.
    Init {
        /// Repository and keys.
        #[command(flatten)]
        repo: RepoArgs,
        /// Keys and threshold of a role, e.g. root=3/2 (default 1/1 each).
        #[arg(long = "role", value_name = "ROLE=KEYS/THRESHOLD", value_parser = parse_role_spec)]
        roles: Vec<(Role, KeySpec)>,
    },
    /// Add a bundle (and its signed head) to a channel.
    #[command(
        override_usage = "slate channel publish REPO BUNDLE --keys DIR --channel NAME [OPTIONS]"
    )]
    Publish {
        /// Repository and keys.
        #[command(flatten)]
        repo: RepoArgs,
        /// The bundle (`slate bundle` output).
        bundle: PathBuf,
        /// The channel, e.g. stable.
        #[arg(long, value_name = "NAME")]
        channel: String,
        /// Percent of devices it is offered to.
        #[arg(long, value_name = "PERCENT", default_value_t = 100)]
        rollout: u32,
    },
    /// Change the rollout percent of a published version.
    #[command(
        override_usage = "slate channel promote REPO --keys DIR --channel NAME --version V \\\n                             --rollout PERCENT [OPTIONS]"
    )]
    Promote {
        /// Repository and keys.
        #[command(flatten)]
        repo: RepoArgs,
        /// The channel.
        #[arg(long, value_name = "NAME")]
        channel: String,
        /// The bundle version.
        #[arg(long, value_name = "VERSION")]
        version: String,
        /// The new percent.
        #[arg(long, value_name = "PERCENT")]
        rollout: u32,
    },
    /// Remove a published version: devices that lack it will not install it.
    #[command(override_usage = "slate channel withdraw REPO --keys DIR --channel NAME --version V")]
    Withdraw {
        /// Repository and keys.
        #[command(flatten)]
        repo: RepoArgs,
        /// The channel.
        #[arg(long, value_name = "NAME")]
        channel: String,
        /// The bundle version.
        #[arg(long, value_name = "VERSION")]
        version: String,
    },
    /// Re-sign targets, snapshot and timestamp with fresh expiry.
    Refresh {
        /// Repository and keys.
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Replace a role's keys (a new root, signed by old and new root keys).
    #[command(override_usage = "slate channel rotate REPO --keys DIR --role ROLE[=KEYS/THRESHOLD]")]
    Rotate {
        /// Repository and keys.
        #[command(flatten)]
        repo: RepoArgs,
        /// The role and its new keys, e.g. timestamp or root=3/2.
        #[arg(long = "role", value_name = "ROLE[=KEYS/THRESHOLD]", value_parser = parse_rotation)]
        role: (Role, KeySpec),
    },
    /// List the published targets.
    List {
        /// The repository directory.
        repo: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a device's poll from the host: what would it install next, and why.
    #[command(
        override_usage = "slate channel fetch URL --root FILE --compatible C --version V \\\n                           --state DIR [OPTIONS]"
    )]
    Fetch {
        /// The repository's URL.
        url: String,
        /// The trusted root metadata (as shipped in the image).
        #[arg(long, value_name = "FILE")]
        root: PathBuf,
        /// The device's compatible.
        #[arg(long)]
        compatible: String,
        /// The version the device runs.
        #[arg(long)]
        version: String,
        /// The device's trusted-metadata directory (created; kept across polls).
        #[arg(long, value_name = "DIR")]
        state: PathBuf,
        /// The channel it follows.
        #[arg(long, value_name = "NAME", default_value = "stable")]
        channel: String,
        /// Its stable id, which picks its rollout wave.
        #[arg(long, value_name = "ID", default_value = "host")]
        device_id: String,
        /// Its anti-rollback floor.
        #[arg(long, value_name = "N", default_value_t = 0)]
        security_floor: u64,
        /// The device's clock (YYYY-MM-DDTHH:MM:SSZ) [default: this host's]
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        now: Option<i64>,
        /// The earliest time the device can be at (its image's build time).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        not_before: Option<i64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

impl ChannelCommand {
    /// Whether `--json` was given.
    pub fn json(&self) -> bool {
        match self {
            ChannelCommand::Init { repo, .. }
            | ChannelCommand::Publish { repo, .. }
            | ChannelCommand::Promote { repo, .. }
            | ChannelCommand::Withdraw { repo, .. }
            | ChannelCommand::Refresh { repo }
            | ChannelCommand::Rotate { repo, .. } => repo.json,
            ChannelCommand::List { json, .. } | ChannelCommand::Fetch { json, .. } => *json,
        }
    }
}

/// Runs `slate channel`.
pub fn run(a: ChannelArgs) -> anyhow::Result<()> {
    match a.command {
        ChannelCommand::Init { repo, roles } => {
            let specs: BTreeMap<Role, KeySpec> = roles.into_iter().collect();
            let p = Repository::init(&repo.repo, &repo.keys, &specs, expiry(&repo)?, now()?)?;
            report(&repo, "initialised", &p);
            if !repo.json {
                println!(
                    "ship {} in images as the channel's root; keep {} (root keys) offline",
                    repo.repo.join("metadata/1.root.json").display(),
                    repo.keys.display()
                );
            }
            Ok(())
        }
        ChannelCommand::Publish {
            repo,
            bundle,
            channel,
            rollout,
        } => change(&repo, "published", |r| {
            r.publish(&bundle, &channel, rollout)
        }),
        ChannelCommand::Promote {
            repo,
            channel,
            version,
            rollout,
        } => change(&repo, "promoted", |r| {
            r.promote(&channel, &version, rollout)
        }),
        ChannelCommand::Withdraw {
            repo,
            channel,
            version,
        } => change(&repo, "withdrawn", |r| r.withdraw(&channel, &version)),
        ChannelCommand::Refresh { repo } => change(&repo, "refreshed", Repository::refresh),
        ChannelCommand::Rotate { repo, role } => {
            change(&repo, "rotated", |r| r.rotate(role.0, role.1))
        }
        ChannelCommand::List { repo, json } => list(&repo, json),
        ChannelCommand::Fetch {
            url,
            root,
            compatible,
            version,
            state,
            channel,
            device_id,
            security_floor,
            now,
            not_before,
            json,
        } => {
            let image_root =
                std::fs::read(&root).with_context(|| format!("reading {}", root.display()))?;
            let version = version
                .parse()
                .map_err(|e| super::exit::InvalidInput(format!("--version: {e}")))?;
            let spec = PollSpec {
                url: &url,
                image_root: &image_root,
                state: &state,
                device: Device {
                    compatible,
                    version,
                    security_floor,
                    channel,
                    id: device_id,
                },
                clock: now.unwrap_or_else(crate::utc::system_now),
                floor: not_before.unwrap_or(i64::MIN),
            };
            let p = poll(&spec).with_context(|| format!("polling {url}"))?;
            if json {
                let mut v = serde_json::to_value(&p).expect("poll serialise");
                v["schema"] = super::exit::JSON_SCHEMA.into();
                println!("{v}");
            } else {
                match &p.offer {
                    Some(o) => println!("install {} ({})", o.version, o.bundle_url),
                    None => println!("nothing to install"),
                }
                for c in &p.selection.considered {
                    let why = c.skipped.as_deref().unwrap_or("chosen");
                    println!("  {} {}: {why}", c.name, c.version);
                }
            }
            Ok(())
        }
    }
}

fn change(
    repo: &RepoArgs,
    what: &str,
    f: impl FnOnce(&mut Repository) -> Result<Published, crate::channel::TufError>,
) -> anyhow::Result<()> {
    let mut r = Repository::open(&repo.repo, &repo.keys, now()?)
        .with_context(|| format!("opening the repository {}", repo.repo.display()))?;
    r.expiry = expiry(repo)?;
    let p = f(&mut r)?;
    report(repo, what, &p);
    Ok(())
}

fn report(repo: &RepoArgs, what: &str, p: &Published) {
    if repo.json {
        let mut v = serde_json::to_value(p).expect("report serialise");
        v["schema"] = super::exit::JSON_SCHEMA.into();
        println!("{v}");
        return;
    }
    let root = p.root.map(|v| format!("root {v}, ")).unwrap_or_default();
    println!(
        "{what}: {root}targets {}, snapshot {}, timestamp {}{}",
        p.targets,
        p.snapshot,
        p.timestamp,
        if p.changed.is_empty() {
            String::new()
        } else {
            format!(" ({})", p.changed.join(", "))
        }
    );
}

fn list(repo: &std::path::Path, json: bool) -> anyhow::Result<()> {
    // Reading needs no keys.
    let r = Repository::open(repo, repo, 0)
        .with_context(|| format!("opening the repository {}", repo.display()))?;
    let rows: Vec<serde_json::Value> = r
        .targets()
        .targets
        .iter()
        .filter_map(|(name, t)| {
            let s = SlateTarget::of(t)?;
            (s.kind == "bundle").then(|| {
                serde_json::json!({
                    "target": name, "channel": s.channel, "compatible": s.compatible,
                    "version": s.version, "security_version": s.security_version,
                    "rollout": s.rollout, "length": t.length,
                })
            })
        })
        .collect();
    if json {
        let v = serde_json::json!({"schema": super::exit::JSON_SCHEMA, "targets_version": r.targets().version, "bundles": rows});
        println!("{v}");
    } else {
        for row in &rows {
            println!(
                "{} {} {} rollout {}%",
                row["channel"].as_str().unwrap_or(""),
                row["compatible"].as_str().unwrap_or(""),
                row["version"].as_str().unwrap_or(""),
                row["rollout"]
            );
        }
    }
    Ok(())
}

fn now() -> anyhow::Result<i64> {
    Ok(crate::utc::now_or_source_date()?)
}

fn expiry(repo: &RepoArgs) -> anyhow::Result<Expiry> {
    let mut e = Expiry::default();
    for (role, secs) in &repo.expires {
        e.set(*role, *secs);
    }
    Ok(e)
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::from_name(s)
        .ok_or_else(|| format!("{s:?} is not a role (root, targets, snapshot, timestamp)"))
}

fn parse_expiry(s: &str) -> Result<(Role, i64), String> {
    let (role, d) = s
        .split_once('=')
        .ok_or("expected ROLE=DURATION, e.g. timestamp=1d")?;
    let secs = crate::utc::parse_duration(d)
        .ok_or_else(|| format!("{d:?} is not a duration (a number and s, m, h or d)"))?;
    Ok((parse_role(role)?, secs))
}

fn parse_key_spec(s: &str) -> Result<KeySpec, String> {
    let (k, t) = s
        .split_once('/')
        .ok_or("expected KEYS/THRESHOLD, e.g. 3/2")?;
    let keys: u32 = k
        .parse()
        .map_err(|_| format!("{k:?} is not a number of keys"))?;
    let threshold: u32 = t.parse().map_err(|_| format!("{t:?} is not a threshold"))?;
    if threshold == 0 || threshold > keys || keys > 16 {
        return Err(format!("{s}: need 1 <= threshold <= keys <= 16"));
    }
    Ok(KeySpec { keys, threshold })
}

fn parse_role_spec(s: &str) -> Result<(Role, KeySpec), String> {
    let (role, spec) = s
        .split_once('=')
        .ok_or("expected ROLE=KEYS/THRESHOLD, e.g. root=3/2")?;
    Ok((parse_role(role)?, parse_key_spec(spec)?))
}

fn parse_rotation(s: &str) -> Result<(Role, KeySpec), String> {
    match s.split_once('=') {
        Some(_) => parse_role_spec(s),
        None => Ok((
            parse_role(s)?,
            KeySpec {
                keys: 1,
                threshold: 1,
            },
        )),
    }
}

fn parse_time(s: &str) -> Result<i64, String> {
    crate::utc::parse(s).ok_or_else(|| format!("{s:?} is not YYYY-MM-DDTHH:MM:SSZ"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_parsers() {
        assert_eq!(parse_expiry("timestamp=1d"), Ok((Role::Timestamp, 86_400)));
        assert!(parse_expiry("time=1d").is_err());
        assert!(parse_expiry("root=1y").is_err());
        assert_eq!(
            parse_role_spec("root=3/2"),
            Ok((
                Role::Root,
                KeySpec {
                    keys: 3,
                    threshold: 2
                }
            ))
        );
        for bad in ["root=2/3", "root=1/0", "root=x/1", "root"] {
            assert!(parse_role_spec(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_rotation("snapshot"),
            Ok((
                Role::Snapshot,
                KeySpec {
                    keys: 1,
                    threshold: 1
                }
            ))
        );
        assert_eq!(parse_time("2027-01-01T00:00:00Z"), Ok(1_798_761_600));
    }
}
