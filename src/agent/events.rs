//! Events on the console, one line each: `SLATE-EVENT {"event":...}`.
//! Tests (and fleet tooling reading serial logs) parse exactly this form.

use serde_json::{Map, Value};
use std::io::Write;

/// Prefix of every event line.
pub const PREFIX: &str = "SLATE-EVENT ";

/// Formats an event line (without newline): `event` first, then the fields
/// in the given order.
pub fn format_event(event: &str, fields: &[(&str, Value)]) -> String {
    let mut m = Map::new();
    m.insert("event".into(), Value::String(event.into()));
    for (k, v) in fields {
        m.insert((*k).into(), v.clone());
    }
    format!("{PREFIX}{}", Value::Object(m))
}

/// Prints an event to stdout (the console under init) in one write, so lines
/// from concurrent processes do not interleave.
pub fn emit(event: &str, fields: &[(&str, Value)]) {
    let mut line = format_event(event, fields);
    line.push('\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exact_form() {
        assert_eq!(
            format_event(
                "booted",
                &[("slot", json!("A")), ("version", json!("1.0.0"))]
            ),
            r#"SLATE-EVENT {"event":"booted","slot":"A","version":"1.0.0"}"#
        );
    }
}
