//! `slate qemu`: boot a disk image and check the events its guest reports.

use crate::qemu::{self, ExitReason, Expectation, KillAfter, ObservedEvent, Observer, QemuOptions};
use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

const AFTER_HELP: &str = "\
Events are the guest's `SLATE-EVENT {json}` console lines. --expect lists
events that must appear in this order (each after the previous match).

Exit status:
  0  every --expect was seen (QEMU is then stopped with SIGTERM); with no
     --expect, QEMU exited with status 0 (the guest powered off)
  1  the timeout passed, QEMU exited first, or QEMU could not be started;
     the last 40 console lines are printed
  2  invalid command line
  5  the disk image, a bundle or the console log could not be read/written

Power cuts: --kill-after SECS sends SIGKILL to QEMU SECS after the first
`installing` event; with --seed N the delay is drawn from N, uniformly in
[0, SECS), and printed. The kill then ends the run: it succeeds if the kill
happened and every --expect was seen before it, e.g.
  slate qemu disk.img --expect installing --kill-after 3 --seed 7

Network: --net gives the guest a virtio NIC on QEMU user networking with
restrict=on: DHCP hands it 10.0.2.15 (DNS server 10.0.2.3) and it reaches
nothing outside QEMU. --hostfwd tcp:127.0.0.1:2222-:22 (repeatable) makes
the host's 127.0.0.1:2222 reach the guest's port 22; forwards listen on
127.0.0.1 only, any other address is refused. --guestfwd
tcp:10.0.2.100:80-127.0.0.1:8080 (repeatable, TCP only; shorthand 80-8080)
makes the guest's connections to 10.0.2.100:80 reach the host's
127.0.0.1:8080; the guest address is in 10.0.2.0/24 but not .2, .3 or .15,
and the host side is 127.0.0.1 only.

Console input: --type-after EVENT=TEXT types TEXT and Enter on the serial
console once EVENT was seen (each line after the previous one), e.g. with
[debug] console = true in the recipe:
  slate qemu disk.img --type-after committed='id -u' --expect committed

--json prints each event as a JSON line on stdout with \"t\" (seconds since
QEMU started), \"boot\" (1, +1 on each firmware restart) and \"schema\": 1
added; a failed run ends with an error object (docs/json.md).
Environment: SLATE_OVMF_DIR, SLATE_QEMU, SLATE_QEMU_ACCEL=kvm|tcg.";

/// Boot a disk image in QEMU and check the events its guest reports.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct QemuArgs {
    /// Raw disk image to boot.
    pub disk: PathBuf,

    /// Wait for EVENT (in SLOT, if given); repeat to expect events in order.
    #[arg(long, value_name = "EVENT[:SLOT]")]
    pub expect: Vec<Expectation>,

    /// Fail if the expectations are not met within SECS.
    #[arg(long, value_name = "SECS", default_value = "120", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Print every event as a JSON line on stdout.
    #[arg(long)]
    pub json: bool,

    /// Leave the disk image unchanged (writes go to a temporary overlay).
    #[arg(long)]
    pub snapshot: bool,

    /// Attach BUNDLE as a read-only update disk (repeatable).
    #[arg(long, value_name = "BUNDLE")]
    pub update: Vec<PathBuf>,

    /// SIGKILL QEMU SECS after the first `installing` event (a power cut).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub kill_after: Option<Duration>,

    /// Draw the kill point from seed N, uniformly in [0, SECS).
    #[arg(long, value_name = "N", requires = "kill_after")]
    pub seed: Option<u64>,

    /// Write the raw console output to FILE.
    #[arg(long, value_name = "FILE")]
    pub console_log: Option<PathBuf>,

    /// Guest memory in MiB.
    #[arg(long, value_name = "MiB", default_value_t = QemuOptions::DEFAULT_MEMORY_MIB)]
    pub memory: u32,

    /// Stop the agent once at POINT (test builds; docs/updates.md)
    #[arg(long, value_name = "POINT[:ACTION]")]
    pub fault: Option<crate::agent::fault::FaultSpec>,

    /// Fail writes to partition PART with EIO (at FRAC, default 0.5)
    #[arg(long, value_name = "PART[@FRAC]")]
    pub io_error: Option<crate::qemu::IoError>,

    /// Add a NIC on user networking with restrict=on (see below)
    #[arg(long)]
    pub net: bool,

    /// Forward host 127.0.0.1:PORT to the guest (implies --net)
    #[arg(long, value_name = "[tcp:]127.0.0.1:PORT-:GUESTPORT")]
    pub hostfwd: Vec<crate::qemu::net::HostFwd>,

    /// Connect guest 10.0.2.X:PORT to host 127.0.0.1:PORT (implies --net)
    #[arg(long, value_name = "[tcp:]10.0.2.X:PORT-127.0.0.1:PORT")]
    pub guestfwd: Vec<crate::qemu::net::GuestFwd>,

    /// Type TEXT and Enter on the console once EVENT is seen (repeatable)
    #[arg(long, value_name = "EVENT=TEXT")]
    pub type_after: Vec<crate::qemu::typing::ConsoleInput>,

    /// Keep firmware variables in FILE across runs (made if missing)
    #[arg(long, value_name = "FILE")]
    pub nvram: Option<PathBuf>,

    /// Secure Boot: OVMF secboot firmware, SMM, VARS as store (read-only)
    #[arg(long, value_name = "VARS")]
    pub secure_boot: Option<PathBuf>,
}

impl QemuArgs {
    /// The library options these arguments stand for.
    pub fn options(&self) -> QemuOptions {
        QemuOptions {
            expect: self.expect.clone(),
            timeout: self.timeout,
            snapshot: self.snapshot,
            updates: self.update.clone(),
            kill_after: self.kill_after.map(|window| KillAfter {
                window,
                seed: self.seed,
            }),
            console_log: self.console_log.clone(),
            memory_mib: self.memory,
            fault: self.fault,
            io_error: self.io_error.clone(),
            net: (self.net || !self.hostfwd.is_empty() || !self.guestfwd.is_empty()).then(|| {
                crate::qemu::net::UserNet {
                    hostfwd: self.hostfwd.clone(),
                    guestfwd: self.guestfwd.clone(),
                }
            }),
            type_after: self.type_after.clone(),
            secure_boot_vars: self.secure_boot.clone(),
            nvram: self.nvram.clone(),
            ..QemuOptions::new(&self.disk)
        }
    }
}

/// Runs `slate qemu`.
pub fn run(args: QemuArgs) -> anyhow::Result<()> {
    let opts = args.options();
    let mut printer = Printer {
        json: args.json,
        stdout_error: None,
    };
    // Library errors already name the file or program involved.
    let outcome = qemu::run_with(&opts, &mut printer)?;
    if let Some(e) = printer.stdout_error {
        return Err(e).context("writing events to stdout");
    }
    if outcome.success {
        eprintln!("slate qemu: {}", outcome.summary());
        return Ok(());
    }
    eprintln!(
        "slate qemu: last {} console lines:",
        outcome.last_lines.len()
    );
    for line in &outcome.last_lines {
        eprintln!("  | {line}");
    }
    let quiet_stop = matches!(
        outcome.exit_reason,
        ExitReason::Timeout | ExitReason::Killed { .. }
    );
    if !quiet_stop {
        eprintln!(
            "slate qemu: QEMU ran as: {}",
            outcome.qemu_command.join(" ")
        );
        if !outcome.qemu_stderr.is_empty() {
            eprintln!("slate qemu: QEMU's stderr:");
            for line in &outcome.qemu_stderr {
                eprintln!("  | {line}");
            }
        }
    }
    anyhow::bail!("{}", outcome.summary())
}

/// Prints events as they arrive: JSON lines on stdout, or readable lines on
/// stderr; runner notices always go to stderr.
struct Printer {
    json: bool,
    stdout_error: Option<std::io::Error>,
}

impl Observer for Printer {
    fn event(&mut self, event: &ObservedEvent) {
        if self.json {
            if self.stdout_error.is_none() {
                let line = event_json(event);
                let mut out = std::io::stdout().lock();
                if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                    self.stdout_error = Some(e);
                }
            }
        } else {
            eprintln!(
                "slate qemu: {:8.3} s boot {}: {}",
                event.t,
                event.boot,
                describe(event)
            );
        }
    }

    fn notice(&mut self, t: f64, message: &str) {
        eprintln!("slate qemu: {t:8.3} s {message}");
    }
}

/// The `--json` line of one event (docs/json.md).
pub fn event_json(event: &ObservedEvent) -> serde_json::Value {
    let mut line = event.to_json();
    if let Some(fields) = line.as_object_mut() {
        fields.insert("schema".into(), super::exit::JSON_SCHEMA.into());
    }
    line
}

/// `booted slot=A version=1.0.0`: the event name, then its other fields.
fn describe(event: &ObservedEvent) -> String {
    let mut text = event.event.event.clone();
    for (key, value) in &event.event.fields {
        if key == "event" {
            continue;
        }
        let value = match value {
            serde_json::Value::String(s) if !s.is_empty() && !s.contains(char::is_whitespace) => {
                s.clone()
            }
            other => other.to_string(),
        };
        text.push_str(&format!(" {key}={value}"));
    }
    text
}

/// Seconds as a non-negative decimal (`2`, `0.5`).
fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("'{s}' is not a duration in seconds"))
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_seconds(s)?;
    if d.is_zero() {
        return Err("the timeout must be more than 0 seconds".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<QemuArgs, clap::Error> {
        let mut argv = vec!["slate", "qemu"];
        argv.extend_from_slice(args);
        // Other commands exist beside this one.
        #[allow(irrefutable_let_patterns)]
        if let Command::Qemu(a) = Cli::try_parse_from(argv)?.command {
            Ok(a)
        } else {
            panic!("not parsed as `slate qemu`")
        }
    }

    #[test]
    fn defaults() {
        let a = parse(&["disk.img"]).unwrap();
        let o = a.options();
        assert_eq!(o.disk, PathBuf::from("disk.img"));
        assert!(o.expect.is_empty());
        assert_eq!(o.timeout, Duration::from_secs(120));
        assert_eq!(o.memory_mib, 512);
        assert!(!o.snapshot && !a.json);
        assert!(o.kill_after.is_none() && o.updates.is_empty() && o.console_log.is_none());
        assert!(o.nvram.is_none() && o.secure_boot_vars.is_none());
    }

    #[test]
    fn all_options() {
        let a = parse(&[
            "d.img",
            "--expect",
            "healthy:A",
            "--expect",
            "committed",
            "--timeout",
            "30.5",
            "--json",
            "--snapshot",
            "--update",
            "v2.bundle",
            "--kill-after",
            "2.5",
            "--seed",
            "7",
            "--console-log",
            "c.log",
            "--memory",
            "1024",
            "--nvram",
            "vars.fd",
        ])
        .unwrap();
        let o = a.options();
        let expect: Vec<String> = o.expect.iter().map(ToString::to_string).collect();
        assert_eq!(expect, ["healthy:A", "committed"]);
        assert_eq!(o.timeout, Duration::from_millis(30500));
        assert!(a.json && o.snapshot);
        assert_eq!(o.updates, [PathBuf::from("v2.bundle")]);
        assert_eq!(
            o.kill_after,
            Some(KillAfter {
                window: Duration::from_millis(2500),
                seed: Some(7)
            })
        );
        assert_eq!(o.console_log, Some(PathBuf::from("c.log")));
        assert_eq!(o.memory_mib, 1024);
        assert_eq!(o.nvram, Some(PathBuf::from("vars.fd")));
    }

    #[test]
    fn rejects_bad_values() {
        for args in [
            &["d.img", "--expect", "a:b:c"][..],
            &["d.img", "--timeout", "0"],
            &["d.img", "--timeout", "-1"],
            &["d.img", "--kill-after", "soon"],
            &["d.img", "--kill-after", "-0.5"],
            &["d.img", "--kill-after", "inf"],
            &["d.img", "--seed", "3"],
        ] {
            assert!(parse(args).is_err(), "{args:?} accepted");
        }
    }

    #[test]
    fn guest_forwards_imply_a_nic() {
        let o = parse(&["d.img", "--guestfwd", "80-8080"])
            .unwrap()
            .options();
        let net = o.net.expect("--guestfwd adds a NIC");
        assert_eq!(
            net.guestfwd[0].to_string(),
            "tcp:10.0.2.100:80-tcp:127.0.0.1:8080"
        );
        assert!(net.hostfwd.is_empty());
        let e = parse(&["d.img", "--guestfwd", "tcp:10.0.2.100:80-0.0.0.0:8080"])
            .unwrap_err()
            .to_string();
        let first = e.lines().next().unwrap_or_default();
        assert!(
            first.contains("--guestfwd") && first.contains("127.0.0.1 only"),
            "{e}"
        );
    }

    #[test]
    fn help_fits_in_80_columns() {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        let sub = cmd.find_subcommand_mut("qemu").unwrap();
        let help = sub.render_long_help().to_string();
        for line in help.lines() {
            assert!(line.chars().count() <= 80, "too wide: {line}");
        }
        assert!(help.contains("--kill-after") && help.contains("Exit status"));
    }

    #[test]
    fn describes_events() {
        let ev: crate::qemu::GuestEvent = crate::qemu::console::parse_events(
            r#"SLATE-EVENT {"event":"rollback","from":"B","to":"A","reason":"health check failed","n":2}"#,
        )
        .remove(0)
        .unwrap();
        let ev = ObservedEvent {
            t: 1.0,
            boot: 1,
            event: ev,
        };
        assert_eq!(
            describe(&ev),
            r#"rollback from=B n=2 reason="health check failed" to=A"#
        );
    }
}
