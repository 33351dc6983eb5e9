//! The guest's serial console: a byte stream cut into lines, cleaned of
//! terminal escapes, and searched for `SLATE-EVENT {json}`.
//!
//! The stream mixes firmware output (cursor movement, colours, `\r\n`),
//! kernel messages and the agent's lines, so parsing is lenient: an event may
//! follow other text on the same line, trailing text after its JSON object is
//! ignored, and a malformed event is reported rather than fatal. One thing it
//! cannot undo: a kernel message printed into the middle of an event line
//! breaks that event (it is reported as malformed).

use serde_json::{Map, Value};

/// What precedes an event's JSON object on the console.
pub const EVENT_MARKER: &str = "SLATE-EVENT";

/// A line longer than this is cut, so a guest that never prints a newline
/// cannot make us buffer without bound.
pub const MAX_LINE: usize = 64 * 1024;

/// Cuts a byte stream into lines at `\n`.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Appends `bytes`, returning the lines they complete (without `\n`).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                lines.push(std::mem::take(&mut self.partial));
            } else {
                self.partial.push(b);
                if self.partial.len() >= MAX_LINE {
                    lines.push(std::mem::take(&mut self.partial));
                }
            }
        }
        lines
    }

    /// The unterminated rest at the end of the stream, if any.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.partial.is_empty()).then(|| std::mem::take(&mut self.partial))
    }
}

/// One console line: the raw bytes and their readable text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleLine {
    /// Exactly what the guest sent (without the `\n`).
    pub raw: Vec<u8>,
    /// `raw` without terminal escapes and control characters, UTF-8 (lossy).
    pub text: String,
}

impl ConsoleLine {
    /// Cleans `raw` into text.
    pub fn new(raw: Vec<u8>) -> Self {
        let text = clean(&raw);
        Self { raw, text }
    }

    /// Whether the line has no visible text.
    pub fn is_blank(&self) -> bool {
        self.text.trim().is_empty()
    }
}

/// Removes ANSI escape sequences (CSI `ESC [ ... final`, OSC `ESC ] ... BEL`
/// or `ESC \`, two-byte `ESC x`) and control characters other than tab,
/// including `\r`.
pub fn clean(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        i += 1;
        if b == 0x1b {
            match raw.get(i) {
                Some(b'[') => {
                    // Parameters and intermediates are 0x20..=0x3f; the final byte ends it.
                    i += 1;
                    while i < raw.len() && !(0x40..=0x7e).contains(&raw[i]) {
                        i += 1;
                    }
                    i += 1;
                }
                Some(b']') => {
                    i += 1;
                    while i < raw.len() {
                        if raw[i] == 0x07 {
                            i += 1;
                            break;
                        }
                        if raw[i] == 0x1b && raw.get(i + 1) == Some(&b'\\') {
                            i += 2;
                            break;
                        }
                        i += 1;
                    }
                }
                Some(_) => i += 1,
                None => {}
            }
        } else if b == b'\t' || (b >= 0x20 && b != 0x7f) {
            out.push(b);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An event the guest reported: a JSON object with at least a string `event`.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestEvent {
    /// The `event` field, e.g. `booted`.
    pub event: String,
    /// The `slot` field, when present, e.g. `A`.
    pub slot: Option<String>,
    /// The whole object as printed.
    pub fields: Map<String, Value>,
}

/// Text after [`EVENT_MARKER`] that is not an event object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed event ({reason}): {text}")]
pub struct MalformedEvent {
    /// What is wrong.
    pub reason: String,
    /// The text after the marker (shortened).
    pub text: String,
}

/// Every event on a line, in order; a line usually has none or one.
pub fn parse_events(text: &str) -> Vec<Result<GuestEvent, MalformedEvent>> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find(EVENT_MARKER) {
        let after = &rest[pos + EVENT_MARKER.len()..];
        rest = after;
        // The marker must stand alone: `SLATE-EVENTS` or `SLATE-EVENT{` are not it.
        if !after.starts_with(char::is_whitespace) {
            continue;
        }
        found.push(parse_one(after.trim_start()));
    }
    found
}

fn parse_one(json: &str) -> Result<GuestEvent, MalformedEvent> {
    let malformed = |reason: &str| MalformedEvent {
        reason: reason.to_string(),
        text: json.chars().take(200).collect(),
    };
    // Only the first JSON value counts; whatever follows it on the line is noise.
    let value = serde_json::Deserializer::from_str(json)
        .into_iter::<Value>()
        .next()
        .ok_or_else(|| malformed("no JSON after the marker"))?
        .map_err(|e| malformed(&format!("invalid JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(malformed("not a JSON object"));
    };
    let event = match fields.get("event") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(malformed("\"event\" is not a non-empty string")),
        None => return Err(malformed("no \"event\" field")),
    };
    let slot = match fields.get("slot") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(malformed("\"slot\" is not a string")),
    };
    Ok(GuestEvent {
        event,
        slot,
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_across_chunks() {
        let mut s = LineSplitter::default();
        assert!(s.push(b"SLATE-EV").is_empty());
        assert_eq!(
            s.push(b"ENT x\r\nnext\npart"),
            vec![b"SLATE-EVENT x\r".to_vec(), b"next".to_vec()]
        );
        assert_eq!(s.finish(), Some(b"part".to_vec()));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn cuts_overlong_lines() {
        let mut s = LineSplitter::default();
        let lines = s.push(&vec![b'x'; MAX_LINE + 10]);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(s.finish().map(|r| r.len()), Some(10));
    }

    #[test]
    fn cleans_firmware_escapes() {
        // The start of an OVMF boot as QEMU's serial port delivers it.
        let raw = b"\x1b[2J\x1b[01;01H\x1b[=3h\x1b[2J\x1b[01;01HBdsDxe: loading Boot0001\r";
        assert_eq!(clean(raw), "BdsDxe: loading Boot0001");
        assert_eq!(
            clean(b"\x1b[1m\x1b[33m\x1b[40mMapping\x1b[0m table"),
            "Mapping table"
        );
        assert_eq!(clean(b"a\x1b]0;title\x07b\x1b]2;x\x1b\\c"), "abc");
        assert_eq!(clean(b"a\x1bcb\x00\x7f\tc"), "ab\tc");
        // An escape cut off at the end of a line must not panic or leak.
        assert_eq!(clean(b"abc\x1b["), "abc");
        assert_eq!(clean(b"abc\x1b"), "abc");
        assert_eq!(clean(b"caf\xc3\xa9 \xff"), "caf\u{e9} \u{fffd}");
    }

    #[test]
    fn parses_an_event() {
        let ev = parse_events(r#"SLATE-EVENT {"event":"booted","slot":"A","version":"1.0.0"}"#);
        assert_eq!(ev.len(), 1);
        let ev = ev[0].as_ref().unwrap();
        assert_eq!(ev.event, "booted");
        assert_eq!(ev.slot.as_deref(), Some("A"));
        assert_eq!(ev.fields["version"], "1.0.0");
    }

    #[test]
    fn finds_events_after_noise_and_ignores_trailing_text() {
        let line = clean(
            b"\x1b[0m[    3.1] random: crng init done SLATE-EVENT {\"event\":\"healthy\"}  \r",
        );
        let ev = parse_events(&line);
        assert_eq!(ev.len(), 1);
        let ev = ev[0].as_ref().unwrap();
        assert_eq!(ev.event, "healthy");
        assert_eq!(ev.slot, None);

        let two =
            parse_events(r#"SLATE-EVENT {"event":"a"} junk SLATE-EVENT {"event":"b","slot":null}"#);
        let names: Vec<_> = two
            .iter()
            .map(|e| e.as_ref().unwrap().event.clone())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn no_marker_no_event() {
        assert!(parse_events("[    1.0] Run /init as init process").is_empty());
        assert!(parse_events("SLATE-EVENTS {\"event\":\"x\"}").is_empty());
        assert!(parse_events("SLATE-EVENT{\"event\":\"x\"}").is_empty());
    }

    #[test]
    fn reports_malformed_events() {
        let cases = [
            ("SLATE-EVENT ", "no JSON"),
            (
                "SLATE-EVENT {\"event\":\"boo[    3.2] random",
                "invalid JSON",
            ),
            ("SLATE-EVENT [1,2]", "not a JSON object"),
            ("SLATE-EVENT {\"slot\":\"A\"}", "no \"event\""),
            ("SLATE-EVENT {\"event\":3}", "\"event\" is not"),
            ("SLATE-EVENT {\"event\":\"\"}", "\"event\" is not"),
            (
                "SLATE-EVENT {\"event\":\"x\",\"slot\":1}",
                "\"slot\" is not",
            ),
        ];
        for (line, reason) in cases {
            let ev = parse_events(line);
            assert_eq!(ev.len(), 1, "{line}");
            let err = ev[0].as_ref().unwrap_err();
            assert!(err.reason.contains(reason), "{line}: {err}");
        }
    }

    proptest::proptest! {
        #[test]
        fn chunking_does_not_change_the_lines(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000),
            cuts in proptest::collection::vec(0usize..2000, 0..20),
        ) {
            let mut whole = LineSplitter::default();
            let mut expected = whole.push(&bytes);
            expected.extend(whole.finish());

            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut split = LineSplitter::default();
            let mut got = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                got.extend(split.push(&bytes[from..cut]));
                from = cut;
            }
            got.extend(split.finish());
            proptest::prop_assert_eq!(got, expected);
        }

        #[test]
        fn noise_never_panics_and_events_survive_escapes(
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            slot in "[A-Z]",
        ) {
            let text = clean(&noise);
            let _ = parse_events(&text);
            // An event after arbitrary escape-laden firmware noise, ended by
            // a newline, still parses once the noise has no marker of its own.
            let mut line: Vec<u8> = noise.iter().copied().filter(|&b| b != b'\n' && b != 0x1b).collect();
            line.extend_from_slice(b"\x1b[0m\x1b[=3h ");
            line.extend_from_slice(format!("SLATE-EVENT {{\"event\":\"booted\",\"slot\":\"{slot}\"}}\r").as_bytes());
            let text = clean(&line);
            if !clean(&noise).contains(EVENT_MARKER) {
                let events = parse_events(&text);
                proptest::prop_assert_eq!(events.len(), 1);
                let event = events[0].as_ref().unwrap();
                proptest::prop_assert_eq!(event.slot.as_deref(), Some(slot.as_str()));
            }
        }
    }
}
