//! Progress reporting: an indicatif bar when stderr is a terminal, nothing
//! otherwise or under `--quiet`; whether status output may use colour.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

static QUIET: AtomicBool = AtomicBool::new(false);

/// `--quiet`: no progress bars or status lines for the rest of the process.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether `--quiet` was given.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Whether stderr output may use colour and bold: a terminal, and `NO_COLOR`
/// unset or empty (<https://no-color.org>).
pub fn color() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Prints a status line on stderr (`==> msg` on a terminal, `slate: msg`
/// otherwise), unless `--quiet`.
pub fn status(msg: &str) {
    if quiet() {
        return;
    }
    if color() {
        eprintln!("\x1b[1m==>\x1b[0m {msg}");
    } else if std::io::stderr().is_terminal() {
        eprintln!("==> {msg}");
    } else {
        eprintln!("slate: {msg}");
    }
}

/// A progress bar that is hidden when stderr is not a terminal.
#[derive(Debug, Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar over `total` bytes, labelled `label`.
    pub fn bytes(total: u64, label: &str) -> Self {
        Self::with_template(
            total,
            label,
            "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
    }

    /// A bar over `total` items, labelled `label`.
    pub fn items(total: u64, label: &str) -> Self {
        Self::with_template(total, label, "{msg:>12} [{bar:30}] {pos}/{len}")
    }

    /// A spinner for work of unknown length, labelled `label`.
    pub fn spinner(label: &str) -> Self {
        let bar = if std::io::stderr().is_terminal() {
            let b = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
                b.set_style(style);
            }
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b
        } else {
            ProgressBar::hidden()
        };
        bar.set_message(label.to_string());
        Self { bar }
    }

    fn with_template(total: u64, label: &str, template: &str) -> Self {
        let bar = if std::io::stderr().is_terminal() && !quiet() {
            let b = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(template) {
                b.set_style(style.progress_chars("=> "));
            }
            b
        } else {
            ProgressBar::hidden()
        };
        bar.set_message(label.to_string());
        Self { bar }
    }

    /// A bar that never shows (for work too small or too unknown to report).
    pub fn hidden() -> Self {
        Self {
            bar: ProgressBar::hidden(),
        }
    }

    /// Whether anything is shown.
    pub fn is_visible(&self) -> bool {
        !self.bar.is_hidden()
    }

    /// Advances by `n`.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
