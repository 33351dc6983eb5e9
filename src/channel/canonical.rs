//! Canonical JSON as TUF signs it (the OLPC form securesystemslib
//! implements): object keys sorted, no whitespace, only `"` and `\`
//! escaped in strings, integers only.

use serde_json::Value;

/// Why a value has no canonical form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{0} has no canonical JSON form (only integers, strings, booleans, null, arrays and objects)"
)]
pub struct NotCanonical(String);

/// The canonical encoding of `v`.
pub fn encode(v: &Value) -> Result<Vec<u8>, NotCanonical> {
    let mut out = Vec::new();
    write(v, &mut out)?;
    Ok(out)
}

fn write(v: &Value, out: &mut Vec<u8>) -> Result<(), NotCanonical> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            if !(n.is_i64() || n.is_u64()) {
                return Err(NotCanonical(format!("the number {n}")));
            }
            out.extend_from_slice(n.to_string().as_bytes());
        }
        Value::String(s) => string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(k, out);
                out.push(b':');
                write(&map[k], out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in s.bytes() {
        if c == b'"' || c == b'\\' {
            out.push(b'\\');
        }
        out.push(c);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorted_compact_minimal_escapes() {
        let v = json!({"b": [1, -2, true, null], "a": {"z": "q\"\\\n", "é": 0}});
        assert_eq!(
            String::from_utf8(encode(&v).unwrap()).unwrap(),
            "{\"a\":{\"z\":\"q\\\"\\\\\n\",\"é\":0},\"b\":[1,-2,true,null]}"
        );
    }

    #[test]
    fn floats_are_refused() {
        assert!(encode(&json!({"x": 1.5})).is_err());
        assert!(encode(&json!(u64::MAX)).is_ok());
    }
}
