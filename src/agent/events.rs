//! Events on the console, one line each: `SLATE-EVENT {"event":...}`.
//! Tests (and fleet tooling reading serial logs) parse exactly this form.

use serde_json::Value;
use std::io::Write;

/// Prefix of every event line.
pub const PREFIX: &str = "SLATE-EVENT ";

/// Formats an event line (without newline): `event` first, then the fields
/// in the given order.
pub fn format_event(event: &str, fields: &[(&str, Value)]) -> String {
    let mut out = format!("{PREFIX}{{\"event\":{}", Value::String(event.into()));
    for (k, v) in fields {
        if *k == "event" {
            continue;
        }
        out.push(',');
        out.push_str(&Value::String((*k).into()).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    }
    out.push('}');
    out
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
        // Fields keep the caller's order; `event` always comes first.
        assert_eq!(
            format_event(
                "rollback",
                &[
                    ("from", json!("B")),
                    ("to", json!("A")),
                    ("reason", json!("x \"y\""))
                ]
            ),
            r#"SLATE-EVENT {"event":"rollback","from":"B","to":"A","reason":"x \"y\""}"#
        );
    }
}
