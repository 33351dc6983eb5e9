//! `--expect EVENT[:SLOT]`: events that must appear, in order.

use super::console::GuestEvent;
use std::fmt;
use std::str::FromStr;

/// One expected event, optionally in a given slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// The `event` field to wait for, e.g. `committed`.
    pub event: String,
    /// The `slot` field it must carry, if given.
    pub slot: Option<String>,
}

impl Expectation {
    /// Whether `event` satisfies this expectation.
    pub fn matches(&self, event: &GuestEvent) -> bool {
        event.event == self.event
            && self
                .slot
                .as_ref()
                .is_none_or(|slot| event.slot.as_ref() == Some(slot))
    }
}

/// `--expect` text that is not `EVENT` or `EVENT:SLOT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected EVENT or EVENT:SLOT (e.g. committed:A), got '{0}'")]
pub struct BadExpectation(pub String);

impl FromStr for Expectation {
    type Err = BadExpectation;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadExpectation(s.to_string());
        let (event, slot) = match s.split_once(':') {
            Some((event, slot)) => (event, Some(slot)),
            None => (s, None),
        };
        let valid = |part: &str| {
            !part.is_empty() && part.chars().all(|c| !c.is_whitespace() && !c.is_control())
        };
        if !valid(event) || slot.is_some_and(|slot| !valid(slot) || slot.contains(':')) {
            return Err(bad());
        }
        Ok(Self {
            event: event.to_string(),
            slot: slot.map(str::to_string),
        })
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.slot {
            Some(slot) => write!(f, "{}:{slot}", self.event),
            None => f.write_str(&self.event),
        }
    }
}

/// Walks through the expectations in order: an event can only satisfy the
/// next unmet one, and each event satisfies at most one.
#[derive(Debug, Clone)]
pub struct ExpectationMatcher {
    expectations: Vec<Expectation>,
    met: usize,
}

impl ExpectationMatcher {
    /// Starts with nothing met.
    pub fn new(expectations: Vec<Expectation>) -> Self {
        Self {
            expectations,
            met: 0,
        }
    }

    /// Feeds an event; returns the expectation it satisfied, if any.
    pub fn observe(&mut self, event: &GuestEvent) -> Option<&Expectation> {
        let next = self.expectations.get(self.met)?;
        if next.matches(event) {
            self.met += 1;
            Some(next)
        } else {
            None
        }
    }

    /// How many are met.
    pub fn met(&self) -> usize {
        self.met
    }

    /// Whether all are met (true when there are none).
    pub fn all_met(&self) -> bool {
        self.met == self.expectations.len()
    }

    /// The one waited for next.
    pub fn pending(&self) -> Option<&Expectation> {
        self.expectations.get(self.met)
    }

    /// All of them.
    pub fn expectations(&self) -> &[Expectation] {
        &self.expectations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, slot: Option<&str>) -> GuestEvent {
        GuestEvent {
            event: event.into(),
            slot: slot.map(Into::into),
            fields: Default::default(),
        }
    }

    fn exp(s: &str) -> Expectation {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_displays() {
        assert_eq!(
            exp("booted"),
            Expectation {
                event: "booted".into(),
                slot: None
            }
        );
        assert_eq!(
            exp("committed:A"),
            Expectation {
                event: "committed".into(),
                slot: Some("A".into())
            }
        );
        assert_eq!(exp("committed:A").to_string(), "committed:A");
        assert_eq!(exp("booted").to_string(), "booted");
        for bad in ["", ":A", "booted:", "a:b:c", "boot ed", "x:\t"] {
            assert!(bad.parse::<Expectation>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn slot_is_checked_only_when_given() {
        assert!(exp("booted").matches(&ev("booted", Some("B"))));
        assert!(exp("booted").matches(&ev("booted", None)));
        assert!(exp("booted:A").matches(&ev("booted", Some("A"))));
        assert!(!exp("booted:A").matches(&ev("booted", Some("B"))));
        assert!(!exp("booted:A").matches(&ev("booted", None)));
        assert!(!exp("booted:A").matches(&ev("healthy", Some("A"))));
    }

    #[test]
    fn matches_in_order_only() {
        let mut m = ExpectationMatcher::new(vec![exp("healthy:A"), exp("committed:A")]);
        // `committed` before `healthy` does not count, even later.
        assert!(m.observe(&ev("committed", Some("A"))).is_none());
        assert!(m.observe(&ev("healthy", Some("A"))).is_some());
        assert_eq!(m.met(), 1);
        assert_eq!(m.pending(), Some(&exp("committed:A")));
        assert!(!m.all_met());
        assert!(m.observe(&ev("committed", Some("A"))).is_some());
        assert!(m.all_met());
        assert!(m.observe(&ev("committed", Some("A"))).is_none());
    }

    #[test]
    fn one_event_meets_one_expectation() {
        let mut m = ExpectationMatcher::new(vec![exp("booted"), exp("booted")]);
        m.observe(&ev("booted", Some("A")));
        assert_eq!(m.met(), 1);
        m.observe(&ev("booted", Some("B")));
        assert!(m.all_met());
    }

    #[test]
    fn nothing_expected_is_met() {
        assert!(ExpectationMatcher::new(vec![]).all_met());
    }
}
