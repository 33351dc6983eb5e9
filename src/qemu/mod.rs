//! Boot a disk image in QEMU and follow what the guest reports on its serial
//! console (`slate qemu`).
//!
//! The guest prints one `SLATE-EVENT {json}` line per event. [`run`] boots the
//! disk (OVMF, a private copy of its variables, virtio disks, an i6300esb
//! watchdog), follows the guest across reboots, matches the events against
//! ordered [`Expectation`]s and can cut the power (SIGKILL) at a chosen point
//! after the first `installing` event.
//!
//! Pure parts, unit-tested without QEMU: [`command`] (the argv),
//! [`console`] (lines and events), [`boots`] (reset detection),
//! [`expect`] (ordered matching), [`kill`] (the kill point) and [`session`]
//! (the state machine fed with console bytes). [`run()`](run()) is the I/O
//! edge that spawns QEMU and feeds the session.

pub mod accel;
pub mod boots;
pub mod command;
pub mod console;
pub mod expect;
pub mod firmware;
pub mod kill;
pub mod net;
mod run;
pub mod session;
pub mod typing;

use std::path::PathBuf;
use std::time::Duration;

pub use accel::Accel;
pub use console::GuestEvent;
pub use expect::Expectation;
pub use kill::KillAfter;
pub use run::{run, run_with};

/// Number of console lines kept for failure reports.
pub const TAIL_LINES: usize = 40;

/// Environment variable naming the QEMU binary (default `qemu-system-x86_64`).
pub const QEMU_ENV: &str = "SLATE_QEMU";

/// What to boot and what to wait for.
#[derive(Debug, Clone)]
pub struct QemuOptions {
    /// Raw disk image; the first boot device.
    pub disk: PathBuf,
    /// Events that must be seen, in this order.
    pub expect: Vec<Expectation>,
    /// Give up (and fail) after this long from QEMU's start.
    pub timeout: Duration,
    /// Leave `disk` unchanged: guest writes go to a temporary overlay.
    pub snapshot: bool,
    /// A bundle attached as a second, read-only virtio disk.
    pub updates: Vec<PathBuf>,
    /// Cut the power this long after the first `installing` event.
    pub kill_after: Option<KillAfter>,
    /// Copy of the raw console output.
    pub console_log: Option<PathBuf>,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// QEMU binary; `None` means `$SLATE_QEMU` or `qemu-system-x86_64`.
    pub qemu: Option<PathBuf>,
    /// Accelerator; `None` means [`Accel::detect`].
    pub accel: Option<Accel>,
    /// Select a fault point in the guest's agent (test builds only): a
    /// fault disk is attached (see [`crate::agent::fault`]).
    pub fault: Option<crate::agent::fault::FaultSpec>,
    /// Fail writes to the system disk with EIO (QEMU's blkdebug driver).
    pub io_error: Option<IoError>,
    /// A network card on restricted user networking (`None`: no network).
    pub net: Option<net::UserNet>,
    /// Lines typed on the serial console once their event was seen.
    pub type_after: Vec<typing::ConsoleInput>,
    /// Boot with OVMF's Secure Boot firmware (SMM on) and this variable
    /// store as the template of the run's copy: one with the image's db
    /// certificate enrolled and Secure Boot enabled.
    pub secure_boot_vars: Option<PathBuf>,
    /// Keep the firmware's variables (boot options, boot order) in this
    /// file across runs, as a device's flash does; made from the template
    /// when missing. `None`: each run starts from the template.
    pub nvram: Option<PathBuf>,
}

/// Writes the system disk refuses with EIO: every write touching one
/// sector, chosen inside a GPT partition.
#[derive(Debug, Clone, PartialEq)]
pub struct IoError {
    /// GPT partition name (`root-b`).
    pub partition: String,
    /// Where in the partition, as a fraction of its size (0.0 - 1.0).
    pub at: f64,
}

impl std::str::FromStr for IoError {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (partition, at) = match s.split_once('@') {
            Some((p, f)) => (
                p,
                f.parse::<f64>()
                    .ok()
                    .filter(|f| (0.0..=1.0).contains(f))
                    .ok_or_else(|| format!("{f:?} is not a fraction between 0 and 1"))?,
            ),
            None => (s, 0.5),
        };
        if partition.is_empty() {
            return Err("expected PARTITION[@FRACTION], e.g. root-b@0.5".into());
        }
        Ok(IoError {
            partition: partition.to_string(),
            at,
        })
    }
}

impl QemuOptions {
    /// Default timeout: generous for TCG boots with a reboot or two.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
    /// Default guest memory in MiB.
    pub const DEFAULT_MEMORY_MIB: u32 = 512;

    /// Options that boot `disk` with defaults and expect nothing (run until
    /// the guest powers off).
    pub fn new(disk: impl Into<PathBuf>) -> Self {
        Self {
            disk: disk.into(),
            expect: Vec::new(),
            timeout: Self::DEFAULT_TIMEOUT,
            snapshot: false,
            updates: Vec::new(),
            kill_after: None,
            console_log: None,
            memory_mib: Self::DEFAULT_MEMORY_MIB,
            qemu: None,
            accel: None,
            fault: None,
            io_error: None,
            net: None,
            type_after: Vec::new(),
            secure_boot_vars: None,
            nvram: None,
        }
    }
}

/// One event as observed on the console.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedEvent {
    /// Seconds since QEMU was started (monotonic clock).
    pub t: f64,
    /// Which boot printed it: 1 for the first, +1 on every firmware restart.
    pub boot: u32,
    /// The event as the guest printed it.
    pub event: GuestEvent,
}

impl ObservedEvent {
    /// The guest's JSON object with `t` (rounded to milliseconds) and `boot`
    /// added; these two overwrite same-named fields from the guest.
    pub fn to_json(&self) -> serde_json::Value {
        let mut fields = self.event.fields.clone();
        let t = (self.t * 1000.0).round() / 1000.0;
        fields.insert("t".into(), serde_json::json!(t));
        fields.insert("boot".into(), serde_json::json!(self.boot));
        serde_json::Value::Object(fields)
    }
}

/// Why the run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ExitReason {
    /// Every expectation was seen; QEMU was stopped with SIGTERM.
    ExpectationsMet,
    /// The planned power cut happened: QEMU got SIGKILL.
    Killed {
        /// When, in seconds since QEMU's start.
        t: f64,
        /// How long after the first `installing` event.
        after_installing: f64,
    },
    /// QEMU exited on its own (e.g. the guest powered off).
    QemuExited {
        /// Its exit code, `None` if a signal ended it.
        code: Option<i32>,
    },
    /// The timeout passed first; QEMU was stopped with SIGTERM.
    Timeout,
}

/// What happened during a run.
#[derive(Debug, Clone)]
pub struct QemuOutcome {
    /// Whether the run met its goal; see [`session::Session::success`].
    pub success: bool,
    /// Why the run ended.
    pub exit_reason: ExitReason,
    /// Every event in console order.
    pub events: Vec<ObservedEvent>,
    /// How many of the expectations were seen (in order).
    pub expectations_met: usize,
    /// The expectations that were asked for.
    pub expectations: Vec<Expectation>,
    /// Start of each boot in seconds since QEMU's start; index 0 is boot 1.
    pub boot_starts: Vec<f64>,
    /// The last [`TAIL_LINES`] non-blank console lines, escapes removed.
    pub last_lines: Vec<String>,
    /// The kill delay that was drawn, if `--kill-after` was given.
    pub kill_delay: Option<Duration>,
    /// The last lines QEMU itself wrote on stderr.
    pub qemu_stderr: Vec<String>,
    /// The QEMU command line that ran (program first).
    pub qemu_command: Vec<String>,
    /// Seconds from QEMU's start to the end of the run.
    pub elapsed: f64,
}

impl QemuOutcome {
    /// Whether every expectation was seen.
    pub fn all_expectations_met(&self) -> bool {
        self.expectations_met == self.expectations.len()
    }

    /// The first expectation not seen, if any.
    pub fn pending(&self) -> Option<&Expectation> {
        self.expectations.get(self.expectations_met)
    }

    /// Number of boots seen (1 + firmware restarts).
    pub fn boots(&self) -> u32 {
        u32::try_from(self.boot_starts.len()).unwrap_or(u32::MAX)
    }

    /// One line saying how the run ended and, on failure, what was missing.
    pub fn summary(&self) -> String {
        let n = self.expectations.len();
        let progress = match self.pending() {
            Some(p) => format!(
                " before `{p}` was seen ({} of {n} expectations met)",
                self.expectations_met
            ),
            None if self.kill_delay.is_some() => " before the planned power cut".to_string(),
            None => String::new(),
        };
        let boots = match self.boots() {
            1 => "1 boot".to_string(),
            b => format!("{b} boots"),
        };
        let elapsed = self.elapsed;
        match &self.exit_reason {
            ExitReason::ExpectationsMet => {
                format!("{} after {elapsed:.3} s ({boots})", met_phrase(n))
            }
            ExitReason::Killed {
                t,
                after_installing,
            } if self.success => format!(
                "power cut at {t:.3} s, {after_installing:.3} s after `installing`, \
                 {} ({boots})",
                met_phrase(n)
            ),
            ExitReason::Killed {
                t,
                after_installing,
            } => format!(
                "power cut at {t:.3} s, {after_installing:.3} s after `installing`{progress}"
            ),
            ExitReason::QemuExited { code } => {
                let how = match code {
                    Some(c) => format!("with status {c}"),
                    None => "on a signal".to_string(),
                };
                format!("QEMU exited {how} after {elapsed:.3} s ({boots}){progress}")
            }
            ExitReason::Timeout => {
                let what = if progress.is_empty() {
                    " before QEMU exited".to_string()
                } else {
                    progress
                };
                format!("timed out after {elapsed:.3} s ({boots}){what}")
            }
        }
    }
}

fn met_phrase(n: usize) -> String {
    match n {
        0 => "nothing expected".to_string(),
        1 => "the 1 expectation met".to_string(),
        n => format!("all {n} expectations met"),
    }
}

/// Receives what happens while QEMU runs (the CLI prints it live).
pub trait Observer {
    /// A SLATE-EVENT line was parsed.
    fn event(&mut self, _event: &ObservedEvent) {}
    /// A complete console line, escapes removed.
    fn console_line(&mut self, _t: f64, _line: &str) {}
    /// Something the runner wants a human to know (boot started, kill planned,
    /// malformed event line).
    fn notice(&mut self, _t: f64, _message: &str) {}
    /// A line QEMU printed on its stderr.
    fn qemu_stderr(&mut self, _line: &str) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl Observer for Quiet {}

/// Why QEMU could not be run at all (a failed expectation is not an error:
/// it is a [`QemuOutcome`] with `success == false`).
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// Reading or writing a file, or talking to the QEMU process, failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The QEMU binary is not installed.
    #[error("{program} not found (install the Debian package qemu-system-x86, or set {QEMU_ENV})")]
    QemuMissing {
        /// The program that was looked for.
        program: PathBuf,
    },
    /// The OVMF firmware is not installed.
    #[error(
        "OVMF firmware file {} not found (install the Debian package ovmf, or set {} to a directory holding {} and {})",
        path.display(),
        firmware::DIR_ENV,
        firmware::CODE_FILE,
        firmware::VARS_FILE
    )]
    FirmwareMissing {
        /// The missing file.
        path: PathBuf,
    },
    /// An option or environment variable has a value we cannot use.
    #[error("{0}")]
    Unsupported(String),
}

impl QemuError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
