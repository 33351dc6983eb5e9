//! The runner's state, fed with console bytes and their arrival times; no
//! I/O, so every decision the runner makes is unit-tested here.
//!
//! When does a run succeed?
//! - Without `--kill-after`: as soon as every expectation has been seen
//!   (the runner then stops QEMU), or, with no expectations at all, when
//!   QEMU exits with status 0 (the guest powered off).
//! - With `--kill-after`: the power cut ends the run, so meeting the
//!   expectations does not stop QEMU early. The run succeeds if the kill
//!   happened and every expectation had been seen before it. QEMU exiting
//!   first, or the timeout, is a failure.
//! - A timeout is always a failure.

use super::boots::BootCounter;
use super::console::{ConsoleLine, LineSplitter, parse_events};
use super::expect::{Expectation, ExpectationMatcher};
use super::typing::{ConsoleInput, Typist};
use super::{ExitReason, ObservedEvent, Observer, QemuOutcome, TAIL_LINES};
use std::collections::VecDeque;
use std::time::Duration;

/// The event whose first appearance starts the kill clock.
pub const INSTALLING: &str = "installing";

/// What the runner knows so far.
#[derive(Debug)]
pub struct Session {
    splitter: LineSplitter,
    boots: BootCounter,
    boot_starts: Vec<f64>,
    matcher: ExpectationMatcher,
    events: Vec<ObservedEvent>,
    tail: VecDeque<String>,
    kill_delay: Option<Duration>,
    installing_at: Option<f64>,
    typist: Typist,
    to_type: Vec<u8>,
}

impl Session {
    /// A session waiting for `expect`, cutting the power `kill_delay` after
    /// the first `installing` event if given.
    pub fn new(expect: Vec<Expectation>, kill_delay: Option<Duration>) -> Self {
        Self {
            splitter: LineSplitter::default(),
            boots: BootCounter::new(),
            boot_starts: vec![0.0],
            matcher: ExpectationMatcher::new(expect),
            events: Vec::new(),
            tail: VecDeque::with_capacity(TAIL_LINES),
            kill_delay,
            installing_at: None,
            typist: Typist::default(),
            to_type: Vec::new(),
        }
    }

    /// Types `inputs` on the console, each once its event was seen.
    pub fn with_input(mut self, inputs: &[ConsoleInput]) -> Self {
        self.typist = Typist::new(inputs);
        self
    }

    /// Console input released by the events seen so far (taken once).
    pub fn take_input(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.to_type)
    }

    /// Feeds console bytes that arrived `t` seconds after QEMU's start.
    pub fn feed(&mut self, bytes: &[u8], t: f64, observer: &mut dyn Observer) {
        for raw in self.splitter.push(bytes) {
            self.line(ConsoleLine::new(raw), t, observer);
        }
    }

    /// The console closed: handles an unterminated last line.
    pub fn end_of_console(&mut self, t: f64, observer: &mut dyn Observer) {
        if let Some(raw) = self.splitter.finish() {
            self.line(ConsoleLine::new(raw), t, observer);
        }
    }

    fn line(&mut self, line: ConsoleLine, t: f64, observer: &mut dyn Observer) {
        // Events first: if a reset shares the line, the event was printed before it.
        for parsed in parse_events(&line.text) {
            match parsed {
                Ok(event) => self.event(event, t, observer),
                Err(malformed) => observer.notice(t, &malformed.to_string()),
            }
        }
        if let Some(boot) = self.boots.observe(&line) {
            self.boot_starts.push(t);
            observer.notice(t, &format!("boot {boot}: firmware restarted"));
        }
        if !line.is_blank() {
            if self.tail.len() == TAIL_LINES {
                self.tail.pop_front();
            }
            self.tail.push_back(line.text.clone());
            observer.console_line(t, &line.text);
        }
    }

    fn event(&mut self, event: super::GuestEvent, t: f64, observer: &mut dyn Observer) {
        let observed = ObservedEvent {
            t,
            boot: self.boots.current(),
            event,
        };
        observer.event(&observed);
        if let Some(bytes) = self.typist.observe(&observed.event.event) {
            observer.notice(
                t,
                &format!("typing {:?}", String::from_utf8_lossy(&bytes).trim_end()),
            );
            self.to_type.extend(bytes);
        }
        if let Some(met) = self.matcher.observe(&observed.event) {
            let met = met.to_string();
            observer.notice(
                t,
                &format!(
                    "expectation {}/{} met: {met}",
                    self.matcher.met(),
                    self.matcher.expectations().len()
                ),
            );
        }
        if observed.event.event == INSTALLING && self.installing_at.is_none() {
            self.installing_at = Some(t);
            if let Some(delay) = self.kill_delay {
                observer.notice(
                    t,
                    &format!(
                        "first `installing`: power cut (SIGKILL) planned at {:.3} s, {:.3} s later",
                        t + delay.as_secs_f64(),
                        delay.as_secs_f64()
                    ),
                );
            }
        }
        self.events.push(observed);
    }

    /// When to SIGKILL QEMU, in seconds since its start, once known.
    pub fn kill_at(&self) -> Option<f64> {
        Some(self.installing_at? + self.kill_delay?.as_secs_f64())
    }

    /// When the first `installing` event arrived.
    pub fn installing_at(&self) -> Option<f64> {
        self.installing_at
    }

    /// Whether every expectation has been seen.
    pub fn all_met(&self) -> bool {
        self.matcher.all_met()
    }

    /// Whether the runner should stop QEMU now: expectations exist, all are
    /// met, and no power cut is planned (a planned cut ends the run itself).
    pub fn finished(&self) -> bool {
        !self.matcher.expectations().is_empty() && self.all_met() && self.kill_delay.is_none()
    }

    /// Whether a run that ended for `reason` succeeded (see the module docs).
    pub fn success(&self, reason: &ExitReason) -> bool {
        match reason {
            ExitReason::ExpectationsMet => self.all_met(),
            ExitReason::Killed { .. } => self.all_met(),
            ExitReason::QemuExited { code } => {
                self.matcher.expectations().is_empty()
                    && self.kill_delay.is_none()
                    && *code == Some(0)
            }
            ExitReason::Timeout => false,
        }
    }

    /// The result of the run.
    pub fn into_outcome(
        self,
        exit_reason: ExitReason,
        elapsed: f64,
        qemu_stderr: Vec<String>,
    ) -> QemuOutcome {
        QemuOutcome {
            success: self.success(&exit_reason),
            exit_reason,
            expectations_met: self.matcher.met(),
            expectations: self.matcher.expectations().to_vec(),
            events: self.events,
            boot_starts: self.boot_starts,
            last_lines: self.tail.into(),
            kill_delay: self.kill_delay,
            qemu_stderr,
            qemu_command: Vec::new(),
            elapsed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::Quiet;

    const OVMF: &[u8] = b"\x1b[2J\x1b[01;01H\x1b[=3h\x1b[2J\x1b[01;01HBdsDxe: loading Boot0001\r\nBdsDxe: starting Boot0001\r\n";

    fn exps(list: &[&str]) -> Vec<Expectation> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn event_line(json: &str) -> Vec<u8> {
        format!("SLATE-EVENT {json}\r\n").into_bytes()
    }

    /// Records what an observer is told.
    #[derive(Default)]
    struct Log {
        events: Vec<String>,
        notices: Vec<String>,
        lines: Vec<String>,
    }

    impl Observer for Log {
        fn event(&mut self, e: &ObservedEvent) {
            self.events.push(format!("{}@{}", e.event.event, e.boot));
        }
        fn console_line(&mut self, _t: f64, line: &str) {
            self.lines.push(line.to_string());
        }
        fn notice(&mut self, _t: f64, message: &str) {
            self.notices.push(message.to_string());
        }
    }

    #[test]
    fn follows_events_across_a_reboot() {
        let mut s = Session::new(exps(&["booted:A", "booted:B"]), None);
        let mut log = Log::default();
        s.feed(OVMF, 3.0, &mut log);
        s.feed(
            &event_line(r#"{"event":"booted","slot":"A"}"#),
            7.0,
            &mut log,
        );
        assert!(!s.finished());
        s.feed(b"[    2.6] reboot: Restarting system\r\n", 7.5, &mut log);
        s.feed(OVMF, 10.0, &mut log);
        // A chunk boundary in the middle of the event line.
        s.feed(b"SLATE-EVENT {\"event\":\"boo", 14.0, &mut log);
        assert!(!s.finished());
        s.feed(b"ted\",\"slot\":\"B\"}\r\n", 14.1, &mut log);
        assert!(s.finished());
        assert_eq!(log.events, ["booted@1", "booted@2"]);
        assert!(
            log.notices
                .iter()
                .any(|n| n == "boot 2: firmware restarted")
        );
        assert!(log.lines.contains(&"BdsDxe: loading Boot0001".to_string()));

        let out = s.into_outcome(ExitReason::ExpectationsMet, 14.2, vec![]);
        assert!(out.success);
        assert_eq!(out.boot_starts, [0.0, 10.0]);
        assert_eq!(out.boots(), 2);
        assert_eq!(out.events[1].t, 14.1);
        assert_eq!(out.events[1].to_json()["boot"], 2);
    }

    #[test]
    fn unmet_expectations_fail_on_exit_or_timeout() {
        let mut s = Session::new(exps(&["booted", "committed"]), None);
        s.feed(&event_line(r#"{"event":"booted"}"#), 1.0, &mut Quiet);
        assert!(!s.finished());
        assert!(!s.success(&ExitReason::QemuExited { code: Some(0) }));
        assert!(!s.success(&ExitReason::Timeout));
        let out = s.into_outcome(ExitReason::Timeout, 30.0, vec![]);
        assert!(!out.success);
        assert_eq!(out.expectations_met, 1);
        assert_eq!(
            out.pending().map(ToString::to_string),
            Some("committed".into())
        );
    }

    #[test]
    fn without_expectations_a_clean_exit_succeeds() {
        let s = Session::new(vec![], None);
        assert!(!s.finished(), "nothing to wait for: run until QEMU exits");
        assert!(s.success(&ExitReason::QemuExited { code: Some(0) }));
        assert!(!s.success(&ExitReason::QemuExited { code: Some(1) }));
        assert!(!s.success(&ExitReason::QemuExited { code: None }));
        assert!(!s.success(&ExitReason::Timeout));
    }

    #[test]
    fn a_planned_kill_ends_the_run_instead_of_the_expectations() {
        let delay = Duration::from_millis(1500);
        let mut s = Session::new(exps(&["installing"]), Some(delay));
        assert_eq!(s.kill_at(), None);
        s.feed(
            &event_line(r#"{"event":"booted","slot":"A"}"#),
            6.0,
            &mut Quiet,
        );
        s.feed(
            &event_line(r#"{"event":"installing","slot":"B"}"#),
            8.0,
            &mut Quiet,
        );
        assert!(s.all_met());
        assert!(!s.finished(), "keep running until the kill");
        assert_eq!(s.kill_at(), Some(9.5));
        // A second `installing` (e.g. after the restart) does not move the kill.
        s.feed(
            &event_line(r#"{"event":"installing","slot":"B"}"#),
            9.0,
            &mut Quiet,
        );
        assert_eq!(s.kill_at(), Some(9.5));
        let killed = ExitReason::Killed {
            t: 9.5,
            after_installing: 1.5,
        };
        assert!(s.success(&killed));
        assert!(!s.success(&ExitReason::QemuExited { code: Some(0) }));
        assert!(!s.success(&ExitReason::Timeout));
    }

    #[test]
    fn a_kill_before_the_expectations_fails() {
        let mut s = Session::new(exps(&["installing", "installed"]), Some(Duration::ZERO));
        s.feed(&event_line(r#"{"event":"installing"}"#), 8.0, &mut Quiet);
        assert_eq!(s.kill_at(), Some(8.0));
        assert!(!s.success(&ExitReason::Killed {
            t: 8.0,
            after_installing: 0.0
        }));
    }

    #[test]
    fn without_a_kill_installing_plans_nothing() {
        let mut s = Session::new(vec![], None);
        s.feed(&event_line(r#"{"event":"installing"}"#), 8.0, &mut Quiet);
        assert_eq!(s.installing_at(), Some(8.0));
        assert_eq!(s.kill_at(), None);
    }

    #[test]
    fn keeps_the_last_lines_and_reports_malformed_events() {
        let mut s = Session::new(exps(&["never"]), None);
        let mut log = Log::default();
        for i in 0..100 {
            s.feed(format!("line {i}\r\n\x1b[2J\r\n").as_bytes(), 1.0, &mut log);
        }
        s.feed(b"SLATE-EVENT {broken\r\n", 2.0, &mut log);
        s.feed(b"no newline at the end", 3.0, &mut log);
        s.end_of_console(3.0, &mut log);
        assert!(log.notices.iter().any(|n| n.starts_with("malformed event")));
        let out = s.into_outcome(ExitReason::QemuExited { code: Some(0) }, 3.0, vec![]);
        assert_eq!(out.last_lines.len(), TAIL_LINES);
        assert_eq!(out.last_lines[TAIL_LINES - 1], "no newline at the end");
        assert_eq!(out.last_lines[TAIL_LINES - 2], "SLATE-EVENT {broken");
        assert_eq!(out.last_lines[0], "line 62");
        assert!(!out.success);
    }

    #[test]
    fn summaries_say_what_was_missing() {
        let outcome = |expect: &[&str], kill, feed: &[&str], reason| {
            let mut s = Session::new(exps(expect), kill);
            for json in feed {
                s.feed(&event_line(json), 5.0, &mut Quiet);
            }
            s.into_outcome(reason, 9.0, vec![]).summary()
        };
        let booted = r#"{"event":"booted"}"#;
        let installing = r#"{"event":"installing"}"#;
        assert_eq!(
            outcome(
                &["booted", "booted"],
                None,
                &[booted, booted],
                ExitReason::ExpectationsMet
            ),
            "all 2 expectations met after 9.000 s (1 boot)"
        );
        assert_eq!(
            outcome(
                &["booted", "committed"],
                None,
                &[booted],
                ExitReason::Timeout
            ),
            "timed out after 9.000 s (1 boot) before `committed` was seen \
             (1 of 2 expectations met)"
        );
        assert_eq!(
            outcome(&[], None, &[], ExitReason::Timeout),
            "timed out after 9.000 s (1 boot) before QEMU exited"
        );
        assert_eq!(
            outcome(
                &["committed"],
                None,
                &[],
                ExitReason::QemuExited { code: None }
            ),
            "QEMU exited on a signal after 9.000 s (1 boot) before `committed` was seen \
             (0 of 1 expectations met)"
        );
        let kill = Some(Duration::from_secs(1));
        assert_eq!(
            outcome(
                &["installing"],
                kill,
                &[installing],
                ExitReason::QemuExited { code: Some(0) }
            ),
            "QEMU exited with status 0 after 9.000 s (1 boot) before the planned power cut"
        );
        let killed = ExitReason::Killed {
            t: 6.0,
            after_installing: 1.0,
        };
        assert_eq!(
            outcome(&["installing"], kill, &[installing], killed.clone()),
            "power cut at 6.000 s, 1.000 s after `installing`, the 1 expectation met (1 boot)"
        );
        assert_eq!(
            outcome(&["installing", "installed"], kill, &[installing], killed),
            "power cut at 6.000 s, 1.000 s after `installing` before `installed` was seen \
             (1 of 2 expectations met)"
        );
    }

    #[test]
    fn typing_is_released_by_its_event() {
        let input: ConsoleInput = "committed=id -u".parse().unwrap();
        let mut s = Session::new(exps(&["typed"]), None).with_input(&[input]);
        let mut log = Log::default();
        s.feed(
            &event_line(r#"{"event":"booted","slot":"A"}"#),
            1.0,
            &mut log,
        );
        assert!(s.take_input().is_empty(), "nothing before `committed`");
        s.feed(
            &event_line(r#"{"event":"committed","slot":"A"}"#),
            2.0,
            &mut log,
        );
        assert_eq!(s.take_input(), b"id -u\n");
        assert!(s.take_input().is_empty(), "typed once");
        assert!(
            log.notices.iter().any(|n| n.contains("typing \"id -u\"")),
            "{:?}",
            log.notices
        );
    }
}
