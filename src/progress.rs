//! Progress reporting: an indicatif bar when stderr is a terminal, nothing otherwise.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

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
        let bar = if std::io::stderr().is_terminal() {
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
