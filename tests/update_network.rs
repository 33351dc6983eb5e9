//! An update over the network (issue 12): nginx serves a v2 bundle on the
//! host's 127.0.0.1, the guest reaches it as http://10.0.2.100:80 through a
//! `guestfwd` on restricted user networking, and a one-shot service in v1
//! runs `slate-agent install` on that URL. One QEMU run: v1 commits A,
//! installs v2 into B from nginx as a delta (range requests for the chunks
//! v1 lacks), reboots, commits B; /data survives, and nginx's access log
//! shows the device downloaded exactly what `slate diff` predicted. A power
//! cut in the middle of the delta install leaves A committed and intact.

mod images;
mod scenarios;

use images::shared::nginx::{LogLine, Nginx};
use images::{Recipe, keygen};
use scenarios::{assert_met, describe, events};
use slate::qemu::net::{GuestFwd, UserNet};
use slate::qemu::{QemuOptions, QemuOutcome};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The URL the guest installs from: QEMU forwards 10.0.2.100:80 to nginx.
const GUEST_URL: &str = "http://10.0.2.100:80/v2.slate";

/// The counter image plus DHCP on eth0 and a service that, once per device
/// (a marker on /data), installs [`GUEST_URL`] after the running slot is
/// committed and eth0 has its address.
fn recipe(version: &str, key: &Path) -> Recipe {
    let mut r = Recipe::counter(version, key);
    r.name = "netupdate".into();
    r.extra.push_str(&format!(
        r##"
[network]

[[network.interface]]
name = "eth0"
dhcp = true

[[rootfs.files]]
dst = "/usr/bin/fetch-update"
mode = "0755"
content = """#!/bin/sh
[ -e /data/fetched ] && exit 0
for i in $(seq 120); do [ -e /run/slate/committed ] && break; sleep 1; done
for i in $(seq 60); do ip -4 addr show dev eth0 | grep -q 'inet ' && break; sleep 1; done
echo once > /data/fetched && sync
exec slate-agent install {GUEST_URL}
"""

[[service]]
name = "fetch-update"
exec = "/usr/bin/fetch-update"
restart = "never"
"##
    ));
    r
}

/// Boots `disk` with the guest forward to nginx, waiting for `expect`.
fn boot_with_forward(disk: &Path, port: u16, expect: &[&str], log: &Path) -> QemuOutcome {
    let mut opts = QemuOptions::new(disk);
    opts.expect = expect.iter().map(|e| e.parse().unwrap()).collect();
    opts.timeout = Duration::from_secs(300);
    opts.console_log = Some(log.to_path_buf());
    let fwd: GuestFwd = format!("tcp:10.0.2.100:80-127.0.0.1:{port}")
        .parse()
        .unwrap();
    opts.net = Some(UserNet {
        hostfwd: Vec::new(),
        guestfwd: vec![fwd],
    });
    slate::qemu::run(&opts).expect("QEMU could not run")
}

/// The fields of the only `name` event, with the whole run in the message.
fn only<'a>(o: &'a QemuOutcome, name: &str) -> &'a serde_json::Map<String, serde_json::Value> {
    let found = events(o, name);
    assert_eq!(found.len(), 1, "one {name} event:\n{}", describe(o));
    found[0]
}

/// Builds `version` of the recipe laid out like `previous` (delta-friendly).
fn build_after(dir: &Path, file: &str, version: &str, key: &Path, previous: &Path) -> PathBuf {
    let path = dir.join(format!("{file}.toml"));
    std::fs::write(&path, recipe(version, key).toml()).unwrap();
    let out = dir.join(file);
    images::run_ok(
        images::slate()
            .arg("build")
            .arg(&path)
            .arg("--out-dir")
            .arg(&out)
            .arg("--previous")
            .arg(previous),
    );
    out
}

/// v1 and v2 (built after v1), and v2 bundled in 64 KiB chunks into `www`
/// with `slate diff`'s prediction for a device running v1.
struct Pair {
    dir: tempfile::TempDir,
    v1: PathBuf,
    www: PathBuf,
    predicted: serde_json::Value,
}

fn pair() -> Pair {
    let dir = tempfile::Builder::new()
        .prefix("slate-netupdate.")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let d = dir.path();
    let (key, public) = keygen(d, "dev");
    let v1 = images::build(d, "v1", &recipe("1.0.0", &public));
    let v2 = build_after(d, "v2", "2.0.0", &public, &v1);
    let www = d.join("www");
    std::fs::create_dir(&www).unwrap();
    let bundle = www.join("v2.slate");
    images::run_ok(
        images::slate()
            .arg("bundle")
            .arg(&v2)
            .arg("--key")
            .arg(&key)
            .args(["--chunk-size", "64K", "-o"])
            .arg(&bundle),
    );
    let out = images::run_ok(
        images::slate()
            .arg("diff")
            .arg(&v1)
            .arg(&bundle)
            .arg("--json"),
    );
    let predicted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Pair {
        dir,
        v1,
        www,
        predicted,
    }
}

/// Body bytes nginx sent with `status`, over every logged request.
fn bytes_sent(log: &[LogLine], status: u16) -> u64 {
    log.iter().filter(|l| l.0 == status).map(|l| l.2).sum()
}

#[test]
fn update_from_nginx_through_a_guest_forward() {
    let test = "update_from_nginx_through_a_guest_forward";
    if scenarios::skip(test) || !Nginx::available(test) {
        return;
    }
    let p = pair();
    let (d, v1) = (&p.dir, &p.v1);
    let nginx = Nginx::start(&p.www);

    let disk = images::copy_disk(&v1.join("disk.img"), &d.path().join("disk.img"));
    let started = Instant::now();
    let o = boot_with_forward(
        &disk,
        nginx.port(),
        &["committed:A", "installing:B", "installed:B", "committed:B"],
        &d.path().join("console.log"),
    );
    eprintln!("QEMU run: {:.1} s", started.elapsed().as_secs_f64());
    assert_met(&o, "v1 installs v2 from nginx and commits it");

    let installing = only(&o, "installing");
    assert_eq!(installing["source"], GUEST_URL, "{}", describe(&o));
    assert_eq!(installing["version"], "2.0.0", "{}", describe(&o));
    let installed = only(&o, "installed");
    assert_eq!(installed["version"], "2.0.0", "{}", describe(&o));
    let committed = events(&o, "committed");
    assert_eq!(committed.len(), 2, "{}", describe(&o));
    assert_eq!(committed[0]["slot"], "A");
    assert_eq!(committed[0]["version"], "1.0.0");
    assert_eq!(committed[1]["slot"], "B");
    assert_eq!(committed[1]["version"], "2.0.0");
    let booted: Vec<_> = o
        .events
        .iter()
        .filter(|e| e.event.event == "booted")
        .collect();
    assert_eq!(booted.len(), 2, "{}", describe(&o));
    assert!(booted[0].boot < booted[1].boot, "B boots after a reboot");
    assert_eq!(booted[1].event.fields["slot"], "B");
    // /data survived the update: the boot counter went on from 1 to 2.
    assert_eq!(scenarios::app_boots(&o), [1, 2], "{}", describe(&o));

    // The device planned and fetched exactly what slate diff predicted.
    let want = &p.predicted;
    for k in ["downloaded", "requests", "reused", "holes", "full"] {
        assert_eq!(
            installing[k],
            want[k],
            "installing {k}: {want}\n{}",
            describe(&o)
        );
        assert_eq!(
            installed[k],
            want[k],
            "installed {k}: {want}\n{}",
            describe(&o)
        );
    }
    let log = nginx.log_lines();
    assert!(
        log.iter().all(|l| l.0 == 206),
        "range requests only: {log:?}"
    );
    assert_eq!(bytes_sent(&log, 206), want["downloaded"], "{log:?}");
    assert_eq!(log.len() as u64, want["requests"], "{log:?}");
    // A new version string costs a small fraction of the bundle.
    let (got, full) = (
        want["downloaded"].as_u64().unwrap(),
        want["full"].as_u64().unwrap(),
    );
    assert!(got * 50 < full, "{got} of {full} bytes: {want}");
    let data = scenarios::data_file(&disk, &d.path().join("data.part"), "/fetched");
    assert_eq!(data, "once\n", "the marker on /data");
}

/// A power cut half-way through writing the slot in a delta install: the
/// next boot runs A (committed, byte for byte what it was), abandons the
/// install, and the ESP is clean.
#[test]
fn power_cut_during_a_delta_install_leaves_a_committed() {
    use slate::agent::fault::{FaultAction, FaultPoint, FaultSpec};
    let test = "power_cut_during_a_delta_install";
    if scenarios::skip(test) || !Nginx::available(test) {
        return;
    }
    let p = pair();
    let d = p.dir.path();
    let nginx = Nginx::start(&p.www);
    let disk = images::copy_disk(&p.v1.join("disk.img"), &d.join("disk.img"));
    let slot_len = std::fs::metadata(p.v1.join("rootfs.ext4")).unwrap().len();
    let a_before = scenarios::slot_hash(&disk, 2, slot_len);
    let fwd: GuestFwd = format!("tcp:10.0.2.100:80-127.0.0.1:{}", nginx.port())
        .parse()
        .unwrap();
    let mut opts = QemuOptions::new(&disk);
    opts.timeout = Duration::from_secs(300);
    opts.console_log = Some(d.join("cut.log"));
    opts.net = Some(UserNet {
        hostfwd: Vec::new(),
        guestfwd: vec![fwd],
    });
    opts.fault = Some(FaultSpec {
        point: FaultPoint::MidSlot,
        action: FaultAction::PowerOff,
    });
    let o = slate::qemu::run(&opts).expect("QEMU could not run");
    let fired = events(&o, "fault");
    assert_eq!(fired.len(), 1, "the cut fired once:\n{}", describe(&o));
    assert_eq!(
        fired[0]["point"],
        FaultPoint::MidSlot.name(),
        "{}",
        describe(&o)
    );
    assert!(
        nginx.log_lines().iter().all(|l| l.0 == 206),
        "the cut came during the delta download"
    );
    assert_eq!(
        scenarios::slot_hash(&disk, 2, slot_len),
        a_before,
        "slot A after the cut"
    );

    // Restart without faults: A boots committed and the install is abandoned.
    let o = boot_with_forward(&disk, nginx.port(), &["committed:A"], &d.join("after.log"));
    assert_met(&o, "A boots after the cut");
    assert!(events(&o, "installed").is_empty(), "{}", describe(&o));
    assert_eq!(
        scenarios::slot_hash(&disk, 2, slot_len),
        a_before,
        "slot A after the restart"
    );
    let state = scenarios::device_state(&disk, &d.join("data.part"));
    assert_eq!(state["update"]["phase"], "idle", "{state}");
    assert_eq!(state["slots"]["A"]["version"], "1.0.0", "{state}");
    scenarios::assert_esp_clean(&disk, &d.join("esp.part"), "after a cut in a delta install");
}
