//! Typing on the guest's serial console (`slate qemu --type-after
//! EVENT=TEXT`): each line is sent once its event has been seen, after the
//! previous line was sent, so nothing reaches the firmware or the boot
//! loader (which read the same serial port) early.

use std::collections::VecDeque;

/// One line to type: `text` and Enter once `after` is seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleInput {
    /// The event name that releases the line.
    pub after: String,
    /// What to type (Enter is added).
    pub text: String,
}

impl std::str::FromStr for ConsoleInput {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (after, text) = s
            .split_once('=')
            .filter(|(e, _)| !e.is_empty() && !e.contains(char::is_whitespace))
            .ok_or_else(|| format!("{s:?}: expected EVENT=TEXT, e.g. committed='id -u'"))?;
        if text.contains(['\n', '\r']) {
            return Err(format!("{s:?}: TEXT is one line (Enter is added)"));
        }
        Ok(ConsoleInput {
            after: after.to_string(),
            text: text.to_string(),
        })
    }
}

/// The lines still to type, in order.
#[derive(Debug, Default)]
pub struct Typist {
    pending: VecDeque<ConsoleInput>,
}

impl Typist {
    /// Types `inputs` in order.
    pub fn new(inputs: &[ConsoleInput]) -> Self {
        Self {
            pending: inputs.iter().cloned().collect(),
        }
    }

    /// The bytes to send now that event `name` was seen, if it releases
    /// the next line.
    pub fn observe(&mut self, name: &str) -> Option<Vec<u8>> {
        if self.pending.front()?.after != name {
            return None;
        }
        let next = self.pending.pop_front()?;
        Some(format!("{}\n", next.text).into_bytes())
    }

    /// Whether anything is still to be typed.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wait_for_their_event_in_order() {
        let inputs: Vec<ConsoleInput> = ["committed=id -u", "typed=echo a=b"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(inputs[1].text, "echo a=b");
        let mut t = Typist::new(&inputs);
        assert_eq!(t.observe("typed"), None, "the second waits for the first");
        assert_eq!(t.observe("booted"), None);
        assert_eq!(t.observe("committed"), Some(b"id -u\n".to_vec()));
        assert_eq!(t.observe("committed"), None);
        assert_eq!(t.observe("typed"), Some(b"echo a=b\n".to_vec()));
        assert!(t.is_empty());
        for bad in ["=x", "no-equals", "a b=x"] {
            assert!(bad.parse::<ConsoleInput>().is_err(), "{bad}");
        }
    }
}
