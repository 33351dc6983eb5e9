//! The fleet update channel (issue 14), host side: repositories written by
//! `slate channel`, served by nginx on 127.0.0.1, polled by `slate channel
//! fetch` (the device's selection logic); every attack the TUF client must
//! refuse, each refused with a clear line and nothing offered; rollout
//! waves over 1,000 device ids; and interoperability with python-tuf, the
//! reference implementation, in both directions.

mod bundle_support;
#[path = "common/mod.rs"]
mod common;

use bundle_support::{INVALID_INPUT, VERIFICATION, ok, run, slate, small_build};
use common::nginx::Nginx;
use serde_json::{Value, json};
use slate::bundle::signing::SecretKey;
use slate::channel::metadata::{Envelope, Role};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A small signed bundle of `version` (compatible slate-qemu-x86_64).
fn make_bundle(dir: &Path, version: &str, seed_text: &str) -> PathBuf {
    let build = small_build(&dir.join(format!("build-{version}")));
    std::fs::write(
        build.join("initrd.img"),
        format!("initrd {version} {seed_text}"),
    )
    .unwrap();
    let mut m: Value =
        serde_json::from_slice(&std::fs::read(build.join("manifest.json")).unwrap()).unwrap();
    m["version"] = json!(version);
    for a in m["artifacts"].as_array_mut().unwrap() {
        let f = build.join(a["file"].as_str().unwrap());
        a["size"] = json!(std::fs::metadata(&f).unwrap().len());
        a["sha256"] = json!(bundle_support::sha256_file(&f));
    }
    std::fs::write(
        build.join("manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
    let key = dir.join("bundle-key");
    if !key.with_extension("key").exists() {
        bundle_support::keygen(&key);
    }
    let out = dir.join(format!("v{version}.slate"));
    bundle_support::bundle(&build, &[&key.with_extension("key")], &out, &[]);
    out
}

struct Channel {
    dir: tempfile::TempDir,
    repo: PathBuf,
    keys: PathBuf,
}

impl Channel {
    fn init(extra: &[&str]) -> Channel {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let keys = dir.path().join("keys");
        ok(slate()
            .args(["channel", "init"])
            .arg(&repo)
            .arg("--keys")
            .arg(&keys)
            .args(extra));
        Channel { dir, repo, keys }
    }

    fn root(&self) -> PathBuf {
        self.repo.join("metadata/1.root.json")
    }

    fn cmd(&self, sub: &str) -> Command {
        let mut c = slate();
        c.args(["channel", sub])
            .arg(&self.repo)
            .arg("--keys")
            .arg(&self.keys);
        c
    }

    fn publish(&self, bundle: &Path, rollout: u32) {
        ok(self.cmd("publish").arg(bundle).args([
            "--channel",
            "stable",
            "--rollout",
            &rollout.to_string(),
        ]));
    }

    fn state(&self, name: &str) -> PathBuf {
        self.dir.path().join("state").join(name)
    }

    /// `slate channel fetch --json` as device `id` running `version`.
    fn fetch(&self, nginx: &Nginx, state: &str, version: &str, id: &str) -> (i32, Value, String) {
        let (code, out, err) = run(slate()
            .args(["channel", "fetch"])
            .arg(nginx.url("repo"))
            .arg("--root")
            .arg(self.root())
            .args([
                "--compatible",
                "slate-qemu-x86_64",
                "--version",
                version,
                "--device-id",
                id,
            ])
            .arg("--state")
            .arg(self.state(state))
            .arg("--json"));
        let v = if code == 0 {
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
        } else {
            Value::Null
        };
        (code, v, err)
    }

    /// A refused poll: exit code `code`, one error line containing every
    /// needle; returns the line.
    fn refused(&self, nginx: &Nginx, state: &str, code: i32, needles: &[&str]) -> String {
        let (got, out, err) = self.fetch(nginx, state, "1.0.0", "device-1");
        assert_eq!(got, code, "{out} {err}");
        let line = err
            .lines()
            .find(|l| l.starts_with("slate: error:"))
            .unwrap_or("")
            .to_string();
        for n in needles {
            assert!(line.contains(n), "{n:?} not in {err}");
        }
        line
    }

    fn key(&self, role: &str) -> SecretKey {
        SecretKey::read_pem_file(&self.keys.join(format!("{role}.1-1.key"))).unwrap()
    }

    fn metadata(&self, name: &str) -> PathBuf {
        self.repo.join("metadata").join(name)
    }

    fn read_envelope(&self, name: &str) -> Envelope {
        Envelope::parse(name, &std::fs::read(self.metadata(name)).unwrap()).unwrap()
    }
}

/// Re-signs `signed` with `keys` into `path`.
fn write_signed(path: &Path, signed: Value, keys: &[&SecretKey]) {
    std::fs::write(path, Envelope::sign(signed, keys).unwrap().to_bytes()).unwrap();
}

/// A web root holding the repository at /repo (nginx serves its parent).
fn serve(c: &Channel) -> Nginx {
    Nginx::start(c.dir.path())
}

fn skip(test: &str) -> bool {
    !Nginx::available(test)
}

#[test]
fn publish_fetch_promote_withdraw() {
    if skip("channel_publish_fetch") {
        return;
    }
    let c = Channel::init(&[]);
    let v2 = make_bundle(c.dir.path(), "2.0.0", "a");
    c.publish(&v2, 100);
    let nginx = serve(&c);

    let (code, p, err) = c.fetch(&nginx, "d1", "1.0.0", "device-1");
    assert_eq!(code, 0, "{err}");
    assert_eq!(p["offer"]["version"], "2.0.0", "{p}");
    assert_eq!(p["offer"]["target"], "stable/slate-qemu-x86_64-2.0.0.slate");
    assert_eq!(p["offer"]["length"], std::fs::metadata(&v2).unwrap().len());
    assert_eq!(p["offer"]["sha256"], bundle_support::sha256_file(&v2));
    // The offered URL serves the very bundle.
    let url = p["offer"]["bundle_url"].as_str().unwrap();
    let stored = c.dir.path().join(
        url.split_once("/repo/")
            .map(|(_, p)| format!("repo/{p}"))
            .unwrap(),
    );
    assert_eq!(std::fs::read(stored).unwrap(), std::fs::read(&v2).unwrap());
    assert_eq!(
        p["trusted"],
        json!({"root": 1, "timestamp": 2, "snapshot": 2, "targets": 2})
    );
    // The JSON documents as docs/json.md describes them.
    let fields = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(
        fields(&p),
        common::documented_json_fields("channel-fetch"),
        "{p}"
    );
    assert_eq!(
        fields(&p["offer"]),
        fields(&doc_example("channel-fetch")["offer"])
    );
    let listed: Value = serde_json::from_str(&ok(slate()
        .args(["channel", "list"])
        .arg(&c.repo)
        .arg("--json")))
    .unwrap();
    assert_eq!(
        fields(&listed),
        common::documented_json_fields("channel-list")
    );
    assert_eq!(
        fields(&listed["bundles"][0]),
        fields(&doc_example("channel-list")["bundles"][0])
    );

    // Nothing changed: one conditional request for the timestamp, 304.
    nginx.clear_log();
    let (code, p, err) = c.fetch(&nginx, "d1", "2.0.0", "device-1");
    assert_eq!(code, 0, "{err}");
    assert!(p["offer"].is_null(), "{p}");
    assert_eq!(p["refresh"]["timestamp_unchanged"], true);
    let log = nginx.log_lines();
    assert_eq!(log, [(304, String::new(), 0)], "{log:?}");
    assert_eq!(
        (p["requests"].as_u64(), p["bytes"].as_u64()),
        (Some(1), Some(0)),
        "{p}"
    );

    let changed: Value = serde_json::from_str(&ok(c.cmd("promote").args([
        "--channel",
        "stable",
        "--version",
        "2.0.0",
        "--rollout",
        "100",
        "--json",
    ])))
    .unwrap();
    assert_eq!(
        fields(&changed),
        common::documented_json_fields("channel-change")
    );
    // Withdrawn before the next poll: nothing is offered.
    ok(c.cmd("withdraw")
        .args(["--channel", "stable", "--version", "2.0.0"]));
    let (code, p, err) = c.fetch(&nginx, "d1", "1.0.0", "device-1");
    assert_eq!(code, 0, "{err}");
    assert!(
        p["offer"].is_null() && p["selection"]["considered"].as_array().unwrap().is_empty(),
        "{p}"
    );

    // Bad input, one line each.
    let e = bundle_support::fails_with(
        INVALID_INPUT,
        c.cmd("promote").args([
            "--channel",
            "stable",
            "--version",
            "9.9.9",
            "--rollout",
            "5",
        ]),
    );
    assert!(
        e.contains("stable/9.9.9") && e.contains("no such version"),
        "{e}"
    );
    let e = bundle_support::fails_with(
        INVALID_INPUT,
        c.cmd("publish").arg(c.root()).args(["--channel", "stable"]),
    );
    assert!(
        e.contains("1.root.json") && e.contains("not a slate bundle"),
        "{e}"
    );
    let inside = c.repo.join("keys");
    let e = bundle_support::fails_with(
        INVALID_INPUT,
        slate()
            .args(["channel", "init"])
            .arg(c.dir.path().join("other"))
            .arg("--keys")
            .arg(c.dir.path().join("other/keys")),
    );
    assert!(
        e.contains("must not be inside the repository"),
        "{e} {inside:?}"
    );
}

#[test]
fn rollout_waves_are_stable_and_promotion_reaches_all() {
    if skip("channel_rollout") {
        return;
    }
    let c = Channel::init(&[]);
    let v2 = make_bundle(c.dir.path(), "2.0.0", "r");
    c.publish(&v2, 10);
    let nginx = serve(&c);
    let image_root = std::fs::read(c.root()).unwrap();
    let url = nginx.url("repo");
    let state = c.state("fleet");
    let poll = |id: &str| -> bool {
        let spec = slate::channel::client::PollSpec {
            url: &url,
            image_root: &image_root,
            state: &state,
            device: slate::channel::select::Device {
                compatible: "slate-qemu-x86_64".into(),
                version: "1.0.0".parse().unwrap(),
                security_floor: 0,
                channel: "stable".into(),
                id: id.into(),
            },
            clock: slate::utc::system_now(),
            floor: 0,
        };
        slate::channel::client::poll(&spec).unwrap().offer.is_some()
    };
    let ids: Vec<String> = (0..1000).map(|i| format!("edge-{i:04}")).collect();
    let first: Vec<&String> = ids.iter().filter(|id| poll(id)).collect();
    assert!(
        (70..=130).contains(&first.len()),
        "{} of 1000 selected at 10 %",
        first.len()
    );
    let again: Vec<&String> = ids.iter().filter(|id| poll(id)).collect();
    assert_eq!(first, again, "the same devices every time");
    // The CLI decides as the library does.
    for id in ids.iter().take(40) {
        let (code, p, err) = c.fetch(&nginx, "cli", "1.0.0", id);
        assert_eq!(code, 0, "{err}");
        assert_eq!(p["offer"].is_object(), first.contains(&id), "{id}: {p}");
    }
    ok(c.cmd("promote").args([
        "--channel",
        "stable",
        "--version",
        "2.0.0",
        "--rollout",
        "100",
    ]));
    assert!(
        ids.iter().all(|id| poll(id)),
        "promotion to 100 % selects every device"
    );
}

#[test]
fn attacks_are_refused_with_a_clear_line_and_nothing_offered() {
    if skip("channel_attacks") {
        return;
    }
    let c = Channel::init(&["--role", "timestamp=2/2"]);
    let v2 = make_bundle(c.dir.path(), "2.0.0", "x");
    c.publish(&v2, 100);
    let nginx = serve(&c);
    let (code, _, err) = c.fetch(&nginx, "good", "1.0.0", "device-1");
    assert_eq!(code, 0, "{err}");
    let backup = c.dir.path().join("backup");
    copy_dir(&c.repo, &backup);
    // Each version of timestamp.json the server holds gets a later time
    // than the one before (nginx's validators are its time and size).
    let served = || fresh_time(&c.metadata("timestamp.json"));
    let restore = || {
        std::fs::remove_dir_all(&c.repo).unwrap();
        copy_dir(&backup, &c.repo);
        served();
    };

    // Signed by too few keys: one of the timestamp's two signatures dropped.
    let mut ts = c.read_envelope("timestamp.json");
    ts.signatures.truncate(1);
    std::fs::write(c.metadata("timestamp.json"), ts.to_bytes()).unwrap();
    served();
    c.refused(
        &nginx,
        "fresh1",
        VERIFICATION,
        &["timestamp.json", "1 valid signature(s)", "2 needed"],
    );
    restore();

    // Expired timestamp (published with a signing time 8 days ago).
    let old = slate::utc::system_now() - 8 * 86_400;
    ok(c.cmd("refresh").env("SOURCE_DATE_EPOCH", old.to_string()));
    c.refused(
        &nginx,
        "fresh2",
        VERIFICATION,
        &["timestamp.json", "expired"],
    );
    restore();

    // Rolled back: the device trusts timestamp 3 after a refresh; the
    // server then offers the older repository.
    ok(&mut c.cmd("refresh"));
    let (code, _, err) = c.fetch(&nginx, "good", "1.0.0", "device-1");
    assert_eq!(code, 0, "{err}");
    restore();
    c.refused(
        &nginx,
        "good",
        VERIFICATION,
        &["timestamp.json", "older than the trusted version 3"],
    );

    // A newer timestamp naming an older snapshot; a newer snapshot naming
    // older targets (both correctly signed: compromised online keys).
    let ts_keys = [
        SecretKey::read_pem_file(&c.keys.join("timestamp.1-1.key")).unwrap(),
        SecretKey::read_pem_file(&c.keys.join("timestamp.1-2.key")).unwrap(),
    ];
    let sign_ts = |version: u64, snapshot: Value| {
        let body = json!({"meta": {"snapshot.json": snapshot}});
        let signed = slate::channel::metadata::signed_object(
            Role::Timestamp,
            version,
            slate::utc::system_now() + 86_400,
            body,
        );
        write_signed(
            &c.metadata("timestamp.json"),
            signed,
            &[&ts_keys[0], &ts_keys[1]],
        );
        served();
    };
    sign_ts(9, json!({"version": 1}));
    c.refused(
        &nginx,
        "good",
        VERIFICATION,
        &[
            "snapshot.json",
            "version 1 is older than the trusted version 3",
        ],
    );
    restore();
    let snap_key = c.key("snapshot");
    let snap = json!({"meta": {"targets.json": {"version": 1}}});
    let signed = slate::channel::metadata::signed_object(
        Role::Snapshot,
        9,
        slate::utc::system_now() + 86_400,
        snap,
    );
    write_signed(&c.metadata("9.snapshot.json"), signed, &[&snap_key]);
    sign_ts(9, json!({"version": 9}));
    c.refused(
        &nginx,
        "good",
        VERIFICATION,
        &[
            "targets.json",
            "version 1 is older than the trusted version 3",
        ],
    );
    restore();

    // Mix and match: the timestamp names snapshot 9 (no hashes), the
    // server has an older snapshot under that name.
    std::fs::copy(c.metadata("2.snapshot.json"), c.metadata("9.snapshot.json")).unwrap();
    sign_ts(9, json!({"version": 9}));
    c.refused(
        &nginx,
        "fresh3",
        VERIFICATION,
        &[
            "9.snapshot.json",
            "version 2, but timestamp.json names version 9",
        ],
    );
    restore();
    // ... and with the hashes the publisher writes, any other file is refused.
    std::fs::copy(c.metadata("1.snapshot.json"), c.metadata("2.snapshot.json")).unwrap();
    c.refused(
        &nginx,
        "fresh4",
        VERIFICATION,
        &["2.snapshot.json", "bytes, the metadata say"],
    );
    restore();

    // Endless data: a 1 GiB timestamp is read to its 16 KiB bound only.
    let endless = std::fs::File::create(c.metadata("timestamp.json")).unwrap();
    endless.set_len(1 << 30).unwrap();
    served();
    nginx.clear_log();
    c.refused(
        &nginx,
        "fresh5",
        VERIFICATION,
        &["timestamp.json", "exceeds the 16384 bytes"],
    );
    let sent: u64 = nginx.log_lines().iter().map(|l| l.2).sum();
    assert!(
        sent < 64 << 20,
        "nginx sent {sent} bytes of an endless response"
    );
    restore();

    // The head target: other bytes of the same length, then a longer file.
    let head = find_stored(&c.repo, ".slate.head");
    let mut bytes = std::fs::read(&head).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    std::fs::write(&head, &bytes).unwrap();
    c.refused(
        &nginx,
        "fresh6",
        VERIFICATION,
        &["slate-qemu-x86_64-2.0.0.slate.head", "sha256"],
    );
    bytes[n / 2] ^= 1;
    bytes.extend_from_slice(&[0; 4096]);
    std::fs::write(&head, &bytes).unwrap();
    c.refused(
        &nginx,
        "fresh7",
        VERIFICATION,
        &[".slate.head", "exceeds the"],
    );
    restore();

    // A bundle whose head differs from its TUF target (another signed
    // bundle in its place).
    let other = make_bundle(&c.dir.path().join("other"), "2.0.0", "other bundle");
    std::fs::copy(&other, find_stored(&c.repo, "2.0.0.slate")).unwrap();
    c.refused(
        &nginx,
        "fresh8",
        VERIFICATION,
        &["differ from its signed head target"],
    );
    restore();

    // A root rotation signed only by the new root key.
    let new_root = SecretKey::generate().unwrap();
    let mut root = c.read_envelope("1.root.json").signed;
    let id = slate::channel::metadata::key_id(&new_root.public());
    root["version"] = json!(2);
    root["keys"][&id] =
        serde_json::to_value(slate::channel::metadata::Key::ed25519(&new_root.public())).unwrap();
    root["roles"]["root"] = json!({"keyids": [id], "threshold": 1});
    write_signed(&c.metadata("2.root.json"), root, &[&new_root]);
    c.refused(
        &nginx,
        "fresh9",
        VERIFICATION,
        &["2.root.json", "0 valid signature(s)"],
    );
    restore();

    // The device that accepted the compromised timestamp 9 (its snapshot
    // was refused, the timestamp had been checked and kept, as TUF does)
    // refuses the genuine timestamp 2 from then on ...
    c.refused(
        &nginx,
        "good",
        VERIFICATION,
        &["timestamp.json", "older than the trusted version 9"],
    );
    // ... until the publisher rotates the timestamp key: the new root voids
    // what the old key signed (specification 5.3.11) and the device is
    // offered v2 again.
    ok(c.cmd("rotate").args(["--role", "timestamp"]));
    let (code, p, err) = c.fetch(&nginx, "good", "1.0.0", "device-1");
    assert_eq!(code, 0, "{err}");
    assert_eq!(p["offer"]["version"], "2.0.0", "{p}");
    assert_eq!(p["trusted"]["root"], 2, "{p}");
}

#[test]
fn key_rotations_are_followed() {
    if skip("channel_rotation") {
        return;
    }
    let c = Channel::init(&[]);
    c.publish(&make_bundle(c.dir.path(), "2.0.0", "k"), 100);
    let nginx = serve(&c);
    let (code, p, err) = c.fetch(&nginx, "d", "1.0.0", "device-1");
    assert_eq!((code, &p["trusted"]["root"]), (0, &json!(1)), "{err}");
    ok(c.cmd("rotate").args(["--role", "timestamp"]));
    ok(c.cmd("rotate").args(["--role", "root=3/2"]));
    let (code, p, err) = c.fetch(&nginx, "d", "1.0.0", "device-1");
    assert_eq!(code, 0, "{err}");
    assert_eq!(p["refresh"]["rotated_to"], json!([2, 3]), "{p}");
    assert_eq!(p["offer"]["version"], "2.0.0");
    // Old keys are retired, never used again; the new root has 3 keys, 2 to sign.
    assert!(c.keys.join("timestamp.1-1.key.retired").exists());
    let root3 = c.read_envelope("3.root.json");
    assert_eq!(root3.signed["roles"]["root"]["threshold"], 2);
    // 3.root.json carries the old root key's signature and two new ones.
    assert_eq!(root3.signatures.len(), 4, "{:?}", root3.signatures);
    // The rotations persist: a later poll starts from root 3.
    let (code, p, err) = c.fetch(&nginx, "d", "1.0.0", "device-1");
    assert_eq!(
        (code, &p["refresh"]["rotated_to"]),
        (0, &json!([])),
        "{err}"
    );
    assert_eq!(p["trusted"]["root"], 3);
}

fn tuf_python(test: &str) -> Option<PathBuf> {
    match std::env::var_os("SLATE_TUF_PYTHON") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            common::skipped(test, "SLATE_TUF_PYTHON (a python with PyPI tuf) is not set");
            None
        }
    }
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tuf")
        .join(name)
}

#[test]
fn python_tuf_reads_a_slate_repository() {
    let test = "channel_python_tuf_client";
    if skip(test) {
        return;
    }
    let Some(python) = tuf_python(test) else {
        return;
    };
    let c = Channel::init(&["--role", "root=2/2"]);
    c.publish(&make_bundle(c.dir.path(), "2.0.0", "p"), 25);
    ok(c.cmd("rotate").args(["--role", "snapshot"]));
    let nginx = serve(&c);
    let listed: Value = serde_json::from_str(&ok(slate()
        .args(["channel", "list"])
        .arg(&c.repo)
        .arg("--json")))
    .unwrap();
    let bundle = listed["bundles"][0]["target"].as_str().unwrap().to_string();
    let head = format!("{bundle}.head");
    let out = common::run_ok(
        Command::new(&python)
            .arg(script("ngclient.py"))
            .arg(nginx.url("repo"))
            .arg(c.root())
            .arg(c.dir.path().join("ngclient"))
            .arg(&bundle)
            .arg(&head),
    );
    let py: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        py["versions"],
        json!({"root": 2, "timestamp": 3, "snapshot": 3, "targets": 3}),
        "{py}"
    );
    let targets: Value =
        serde_json::from_slice(&std::fs::read(c.metadata("3.targets.json")).unwrap()).unwrap();
    for name in [&bundle, &head] {
        let t = &py["targets"][name];
        let ours = &targets["signed"]["targets"][name];
        assert_eq!(t["length"], ours["length"], "{name}");
        assert_eq!(t["sha256"], ours["hashes"]["sha256"], "{name}");
        assert_eq!(t["downloaded_sha256"], ours["hashes"]["sha256"], "{name}");
        assert_eq!(t["custom"], ours["custom"], "{name}");
    }
    assert_eq!(py["targets"][&bundle]["custom"]["slate"]["rollout"], 25);
}

#[test]
fn slate_reads_a_python_tuf_repository() {
    let test = "channel_python_tuf_repository";
    if skip(test) {
        return;
    }
    let Some(python) = tuf_python(test) else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let v2 = make_bundle(d.path(), "2.0.0", "py");
    let head_len = slate::bundle::reader::read_head_unverified(std::fs::File::open(&v2).unwrap())
        .unwrap()
        .header
        .payload_offset();
    let head = d.path().join("v2.head");
    let all = std::fs::read(&v2).unwrap();
    std::fs::write(&head, &all[..head_len as usize]).unwrap();
    let name = "stable/slate-qemu-x86_64-2.0.0.slate";
    let custom = |kind: &str, pair: &str| {
        json!({"slate": {"kind": kind, "compatible": "slate-qemu-x86_64", "version": "2.0.0",
            "security_version": 7, "channel": "stable", "rollout": 100, "pair": pair}})
    };
    let spec = json!([
        {"name": name, "file": v2, "custom": custom("bundle", &format!("{name}.head"))},
        {"name": format!("{name}.head"), "file": head, "custom": custom("head", name)},
    ]);
    let spec_path = d.path().join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let repo = d.path().join("repo");
    common::run_ok(
        Command::new(&python)
            .arg(script("write_repo.py"))
            .arg(&repo)
            .arg(&spec_path),
    );
    let nginx = Nginx::start(d.path());
    let (code, out, err) = run(slate()
        .args(["channel", "fetch"])
        .arg(nginx.url("repo"))
        .arg("--root")
        .arg(repo.join("metadata/1.root.json"))
        .args([
            "--compatible",
            "slate-qemu-x86_64",
            "--version",
            "1.0.0",
            "--json",
            "--state",
        ])
        .arg(d.path().join("state")));
    assert_eq!(code, 0, "{err}");
    let p: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(p["offer"]["target"], name, "{p}");
    assert_eq!(p["offer"]["sha256"], bundle_support::sha256_file(&v2));
    assert_eq!(
        p["trusted"],
        json!({"root": 1, "timestamp": 1, "snapshot": 1, "targets": 1})
    );
}

/// The example labelled `label` in docs/json.md.
fn doc_example(label: &str) -> Value {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/json.md")).unwrap();
    let fence = format!("```json {label}\n");
    let start = doc.find(&fence).unwrap() + fence.len();
    serde_json::from_str(&doc[start..start + doc[start..].find("```").unwrap()]).unwrap()
}

/// Gives `path` a modification time later than any before it in this
/// test process.
fn fresh_time(path: &Path) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let secs = 2_000_000_000 + NEXT.fetch_add(10, Ordering::Relaxed);
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// The stored target file whose name ends with `suffix`.
fn find_stored(repo: &Path, suffix: &str) -> PathBuf {
    let dir = repo.join("targets/stable");
    let found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    assert_eq!(found.len(), 1, "{suffix}: {found:?}");
    found.into_iter().next().unwrap()
}
