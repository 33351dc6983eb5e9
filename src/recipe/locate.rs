//! Naming the field a TOML parse error points into, so that "invalid type:
//! string \"3\", expected i64" becomes "update.tries: invalid type: ...".

/// The dotted field name (`update.tries`, `service[1].exec`,
/// `rootfs.files[0].mode`) of the key whose value contains byte `offset` of
/// `text`, judged from the text itself: the table header in effect and the
/// nearest `key =` before the offset on its line. `None` when the offset is
/// not inside a `key = value` line.
pub fn field_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = &text[line_start..line_end];
    let col = offset - line_start;
    let header = table_header(&text[..line_start]);

    // The last `key =` that starts before the offset on this line, and the
    // inline array index it sits in (`files = [{...}, {...}]`).
    let before = &line[..col.min(line.len())];
    let mut keys: Vec<&str> = Vec::new();
    let mut first_key = None;
    for (i, _) in before.match_indices('=') {
        let lhs = before[..i].trim_end();
        let start = lhs
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'))
            .map_or(0, |j| j + 1);
        let key = &lhs[start..];
        if !key.is_empty() {
            if first_key.is_none() {
                first_key = Some((key, i));
            }
            keys.push(key);
        }
    }
    let Some((top, eq)) = first_key else {
        // The offset is on a key itself (an unknown field): that key.
        let rest = &line[col.min(line.len())..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(rest.len());
        let key = &rest[..end];
        if key.is_empty() || !rest[end..].trim_start().starts_with('=') {
            return None;
        }
        return Some(match &header {
            Some(h) => format!("{h}.{key}"),
            None => key.to_string(),
        });
    };
    let mut name = match &header {
        Some(h) => format!("{h}.{top}"),
        None => top.to_string(),
    };
    let last = *keys.last()?;
    if keys.len() > 1 {
        // Inside an inline table of an array: count the `{` before it.
        let tail = &before[eq..];
        let index = tail.matches('{').count().saturating_sub(1);
        if tail.contains('[') {
            name.push_str(&format!("[{index}]"));
        }
        name.push('.');
        name.push_str(last);
    }
    Some(name)
}

/// The table in effect after `text`: `image`, `service[2]` (the third
/// `[[service]]`), or `None` at the top level.
fn table_header(text: &str) -> Option<String> {
    let mut current: Option<String> = None;
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for line in text.lines() {
        let l = line.trim();
        if let Some(name) = l.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let name = name.trim().to_string();
            let n = counts.entry(name.clone()).or_insert(0);
            current = Some(format!("{name}[{n}]"));
            *n += 1;
        } else if let Some(name) = l.strip_prefix('[').and_then(|r| r.split(']').next()) {
            current = Some(name.trim().to_string());
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, needle: &str) -> Option<String> {
        field_at(text, text.find(needle).unwrap())
    }

    #[test]
    fn names_fields() {
        let t = "[image]\nname = \"x\"\n[update]\ntries = \"3\"\n";
        assert_eq!(at(t, "\"3\"").as_deref(), Some("update.tries"));
        assert_eq!(at(t, "\"x\"").as_deref(), Some("image.name"));
        let t = "[[service]]\nname = \"a\"\n[[service]]\nname = \"b\"\nwait = 1\n";
        assert_eq!(at(t, "1").as_deref(), Some("service[1].wait"));
        let t = "[rootfs]\nfiles = [{ dst = \"/a\", mode = 644 }, { dst = 7 }]\n";
        assert_eq!(at(t, "644").as_deref(), Some("rootfs.files[0].mode"));
        assert_eq!(at(t, "7").as_deref(), Some("rootfs.files[1].dst"));
        assert_eq!(at("[disk]\n", "disk"), None);
    }
}
