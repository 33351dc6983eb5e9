//! The documented machine interfaces are the real ones (issue 11): every
//! `SLATE-EVENT` the agent emits is in docs/events.md with its fields, the
//! JSON of every `--json` command has the shape docs/json.md shows (also on
//! failure), and docs/cli.md lists the exit codes slate uses.

mod bundle_support;

use bundle_support::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The string literals `("name", ` in `text`: the field names of an event.
fn field_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices('(') {
        let Some(rest) = text[i + 1..].trim_start().strip_prefix('"') else {
            continue;
        };
        let Some(end) = rest.find('"') else { continue };
        let name = &rest[..end];
        let after = rest[end + 1..].trim_start();
        if after.starts_with(',')
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            out.insert(name.to_string());
        }
    }
    out
}

/// Every `emit("event", fields)` call in the agent's source, with the field
/// names it can carry (for fields built in a variable, those named in the
/// enclosing function before the call).
fn emitted_events() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut events: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut from = 0;
        while let Some(i) = text[from..].find("emit(") {
            let start = from + i;
            from = start + 5;
            // Only calls whose first argument is a string literal.
            let args = text[from..].trim_start();
            let Some(args) = args.strip_prefix('"') else {
                continue;
            };
            let name_end = args.find('"').unwrap();
            let name_end_in_call = text[from..].find('"').unwrap() + 1 + name_end + 1;
            let name = args[..name_end].to_string();
            // The call runs to the matching parenthesis.
            let mut depth = 1;
            let mut end = from;
            for (j, c) in text[from..].char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = from + j;
                    break;
                }
            }
            let call = &text[from..end];
            let fields = if call.contains("json!") {
                field_names(call)
            } else {
                let fn_start = text[..start].rfind("fn ").unwrap_or(0);
                field_names(&format!(
                    "{}{}",
                    &text[fn_start..start],
                    &call[name_end_in_call..]
                ))
            };
            events.entry(name).or_default().extend(fields);
        }
    }
    events
}

/// `### \`name\`` sections of docs/events.md with the fields of their tables.
fn documented_events() -> BTreeMap<String, BTreeSet<String>> {
    let doc = read("docs/events.md");
    let mut events: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current = None;
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix("### `") {
            let name = h.trim_end_matches('`').to_string();
            events.insert(name.clone(), BTreeSet::new());
            current = Some(name);
        } else if let (Some(name), Some(row)) = (&current, line.strip_prefix("| `")) {
            let field = row.split('`').next().unwrap().to_string();
            events.get_mut(name).unwrap().insert(field);
        } else if line.starts_with("## ") {
            current = None;
        }
    }
    events
}

#[test]
fn events_doc_lists_every_event_with_its_fields() {
    let emitted = emitted_events();
    let documented = documented_events();
    // The scan itself works: the events every boot prints are found.
    for e in ["booted", "healthy", "committed", "installing", "installed"] {
        assert!(emitted.contains_key(e), "scan missed {e}: {emitted:?}");
    }
    assert_eq!(
        emitted.keys().collect::<Vec<_>>(),
        documented.keys().collect::<Vec<_>>(),
        "events emitted in src/ vs documented in docs/events.md"
    );
    for (name, fields) in &emitted {
        assert_eq!(
            fields, &documented[name],
            "fields of `{name}`: emitted vs docs/events.md"
        );
    }
}

/// The example in docs/json.md after "```json LABEL".
pub fn example(label: &str) -> Value {
    let doc = read("docs/json.md");
    let start = doc
        .find(&format!("```json {label}\n"))
        .unwrap_or_else(|| panic!("docs/json.md has no `{label}` example"));
    let body = &doc[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    let body = &body[..body.find("```").unwrap()];
    serde_json::from_str(body).unwrap_or_else(|e| panic!("docs/json.md `{label}`: {e}"))
}

/// Same fields and JSON types, recursively; `null` on either side stands for
/// an optional value, and every array element has the shape of the
/// example's first element.
fn same_shape(doc: &Value, live: &Value, path: &str) -> Result<(), String> {
    match (doc, live) {
        (Value::Null, _) | (_, Value::Null) => Ok(()),
        (Value::Object(d), Value::Object(l)) => {
            let dk: BTreeSet<_> = d.keys().collect();
            let lk: BTreeSet<_> = l.keys().collect();
            if dk != lk {
                return Err(format!("{path}: documented {dk:?}, printed {lk:?}"));
            }
            for (k, v) in d {
                same_shape(v, &l[k], &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(d), Value::Array(l)) => match d.first() {
            None => Ok(()),
            Some(first) => l
                .iter()
                .enumerate()
                .try_for_each(|(i, v)| same_shape(first, v, &format!("{path}[{i}]"))),
        },
        (Value::String(_), Value::String(_))
        | (Value::Number(_), Value::Number(_))
        | (Value::Bool(_), Value::Bool(_)) => Ok(()),
        _ => Err(format!("{path}: documented {doc}, printed {live}")),
    }
}

fn assert_documented(label: &str, live: &Value) {
    if let Err(e) = same_shape(&example(label), live, label) {
        panic!("docs/json.md `{label}` does not match the output: {e}\noutput: {live:#}");
    }
    assert_eq!(live["schema"], 1, "{label}: {live}");
}

fn json_out(c: &mut std::process::Command, want_code: i32) -> Value {
    let (code, out, err) = run(c);
    assert_eq!(code, want_code, "{err}");
    assert_eq!(out.lines().count(), 1, "not one JSON line: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn verify_and_inspect_json_match_the_docs() {
    let t = tempfile::tempdir().unwrap();
    let (key, public) = keygen(&t.path().join("k"));
    let build = small_build(&t.path().join("build"));
    let b = t.path().join("b.slate");
    bundle(&build, &[&key], &b, &[]);

    let v = json_out(
        slate()
            .arg("verify")
            .arg(&b)
            .arg("--pubkey")
            .arg(&public)
            .arg("--json"),
        0,
    );
    assert_documented("verify", &v);
    let v = json_out(slate().arg("inspect").arg(&b).arg("--json"), 0);
    assert_documented("inspect", &v);

    // Failures print the error object: a missing file (I/O) ...
    let missing = t.path().join("missing.slate");
    let v = json_out(
        slate()
            .arg("verify")
            .arg(&missing)
            .arg("--pubkey")
            .arg(&public)
            .arg("--json"),
        IO,
    );
    assert_documented("verify-error", &v);
    assert_eq!(v["error"]["class"], "io");
    // ... a corrupt bundle (verification) ...
    let mut bytes = std::fs::read(&b).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0xff;
    let bad = t.path().join("bad.slate");
    std::fs::write(&bad, &bytes).unwrap();
    let v = json_out(
        slate()
            .arg("verify")
            .arg(&bad)
            .arg("--pubkey")
            .arg(&public)
            .arg("--json"),
        VERIFICATION,
    );
    assert_documented("verify-error", &v);
    assert_eq!(v["error"]["class"], "verification");
    assert_eq!(v["error"]["code"], "corrupt");
    assert!(v["error"]["kind"].is_string(), "{v}");
    // ... and a private key given as trusted key (invalid input).
    let v = json_out(
        slate()
            .arg("verify")
            .arg(&b)
            .arg("--pubkey")
            .arg(&key)
            .arg("--json"),
        INVALID_INPUT,
    );
    assert_eq!(v["error"]["class"], "invalid_input", "{v}");
    let v = json_out(slate().arg("inspect").arg(&missing).arg("--json"), IO);
    assert!(
        v["path"].is_string() && v["error"]["message"].is_string(),
        "{v}"
    );
}

#[test]
fn agent_status_json_matches_the_docs() {
    use slate::agent::state::FailedUpdate;
    use slate::agent::status::{SlotStatus, StatusReport};
    use slate::boot_env::SlotId;
    let slot = |version: &str, booted: bool, digest: Option<&str>| SlotStatus {
        version: version.into(),
        boot_state: "good".into(),
        booted,
        digest: digest.map(Into::into),
    };
    let r = StatusReport {
        image: "minimal".into(),
        version: "1.0.0".into(),
        compatible: "slate-qemu-x86_64".into(),
        booted: SlotId::A,
        committed: Some(SlotId::A),
        next_boot: Some(SlotId::A),
        boot_loader: "systemd-boot".into(),
        security_floor: 0,
        slots: [
            (SlotId::A, slot("1.0.0", true, None)),
            (SlotId::B, slot("1.1.0", false, Some("ab12"))),
        ]
        .into_iter()
        .collect(),
        update: "idle".into(),
        failed: vec![FailedUpdate {
            digest: "ab12".into(),
            version: "1.1.0".into(),
            reason: "health check failed".into(),
        }],
        root_verity: Some(slate::agent::verity::RootVerity {
            root_hash: "5d0f".into(),
            table:
                "0 8 verity 1 254:2 254:2 4096 4096 1 1 sha256 5d0f 9a41 1 restart_on_corruption"
                    .into(),
            status: "V".into(),
        }),
        lockdown: Some("none".into()),
    };
    let v = slate::cli::agent::status_json(&r).unwrap();
    assert_documented("agent-status", &v);
    assert_eq!(v["slots"]["B"]["digest"], "ab12");
}

#[test]
fn qemu_json_matches_the_docs() {
    let line = r#"SLATE-EVENT {"event":"committed","slot":"A","version":"1.0.0"}"#;
    let event = slate::qemu::console::parse_events(line).remove(0).unwrap();
    let observed = slate::qemu::ObservedEvent {
        t: 9.5123,
        boot: 1,
        event,
    };
    let v = slate::cli::qemu::event_json(&observed);
    assert_documented("qemu-event", &v);
    assert_eq!(v["t"], 9.512);

    // A disk that does not exist: the error object, exit code 5.
    let t = tempfile::tempdir().unwrap();
    let v = json_out(
        slate()
            .arg("qemu")
            .arg(t.path().join("none.img"))
            .arg("--json"),
        IO,
    );
    assert_documented("qemu-error", &v);
    assert!(v["disk"].as_str().unwrap().ends_with("none.img"), "{v}");
}

#[test]
fn cli_doc_lists_the_exit_codes() {
    let doc = read("docs/cli.md");
    let mut rows = Vec::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() >= 4 {
            if let (Ok(code), Some(name)) = (cells[1].parse::<u8>(), cells[2].strip_prefix('`')) {
                rows.push((code, name.trim_end_matches('`').to_string()));
            }
        }
    }
    let want: Vec<(u8, String)> = slate::cli::exit::ErrorClass::ALL
        .iter()
        .map(|c| (c.exit_code(), c.name().to_string()))
        .collect();
    assert_eq!(rows, want, "exit code table in docs/cli.md");
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, err) = run(slate().arg("verify").arg("--no-such-flag"));
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(slate().arg("frobnicate"));
    assert_eq!(code, 2, "{err}");
}
