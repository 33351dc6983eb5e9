//! An update over the network (issue 12): nginx serves a v2 bundle on the
//! host's 127.0.0.1, the guest reaches it as http://10.0.2.100:80 through a
//! `guestfwd` on restricted user networking, and a one-shot service in v1
//! runs `slate-agent install` on that URL. One QEMU run: v1 commits A,
//! installs v2 into B from nginx as a delta (range requests for the chunks
//! v1 lacks), reboots, commits B; /data survives, and nginx's access log
//! shows the device downloaded exactly what `slate diff` predicted. Then a
//! power cut at every fault point of a delta install, with the checks of
//! `fault_scenarios.rs`: A committed and intact, and the restart finishes
//! the update from nginx, downloading again exactly what `slate diff`
//! predicts for what the device then holds.

mod images;
mod scenarios;

use images::shared::nginx::{LogLine, Nginx};
use images::shared::pyhttp::PyHttp;
use images::{Recipe, keygen};
use scenarios::{assert_met, describe, events};
use slate::agent::fault::{FaultAction, FaultPoint, FaultSpec};
use slate::qemu::net::{GuestFwd, UserNet};
use slate::qemu::{QemuOptions, QemuOutcome};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The URL the guest installs from: QEMU forwards 10.0.2.100:80 to nginx.
const GUEST_URL: &str = "http://10.0.2.100:80/v2.slate";

/// The counter image plus DHCP on eth0 and, in version 1.0.0 only, a
/// service that installs [`GUEST_URL`] on every boot once the running slot
/// is committed and eth0 has its address (each attempt appends a line to
/// /data/fetched first). A read-only mount of the ESP, as `slate-agent
/// status` makes, is in the install's way for its first two seconds: the
/// kernel refuses the install's read-write mount until it is gone.
fn recipe(version: &str, security_version: u64, key: &Path) -> Recipe {
    let mut r = Recipe {
        security_version,
        ..Recipe::counter(version, key)
    };
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
[ {version} = 1.0.0 ] || exit 0
for i in $(seq 120); do [ -e /run/slate/committed ] && break; sleep 1; done
for i in $(seq 60); do ip -4 addr show dev eth0 | grep -q 'inet ' && break; sleep 1; done
echo attempt >> /data/fetched && sync
mkdir -p /run/esp-hold
mount -t vfat -o ro /dev/vda1 /run/esp-hold && echo 'SLATE-EVENT {{"event":"esp_held"}}'
(sleep 2; umount /run/esp-hold) &
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

/// Boots `disk` with the guest forward to nginx, waiting for `expect`,
/// with `fault` selected.
fn boot_with_forward(
    disk: &Path,
    port: u16,
    expect: &[&str],
    log: &Path,
    fault: Option<FaultPoint>,
) -> QemuOutcome {
    let mut opts = QemuOptions::new(disk);
    opts.fault = fault.map(|point| FaultSpec {
        point,
        action: FaultAction::PowerOff,
    });
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
fn build_after(dir: &Path, file: &str, recipe: &Recipe, previous: &Path) -> PathBuf {
    let path = dir.join(format!("{file}.toml"));
    std::fs::write(&path, recipe.toml()).unwrap();
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

/// v1 and v2 (built after v1), and v2 bundled (at the default chunk size)
/// into `www`, with `slate diff`'s predictions for a device running v1: with
/// nothing usable in the target slot, and with v2 already there (its
/// manifest stored).
struct Pair {
    dir: tempfile::TempDir,
    v1: PathBuf,
    v2: PathBuf,
    www: PathBuf,
    predicted: serde_json::Value,
    predicted_over_v2: serde_json::Value,
}

/// The pair, built once for every test of this binary.
fn pair() -> &'static Pair {
    static PAIR: OnceLock<Pair> = OnceLock::new();
    PAIR.get_or_init(build_pair)
}

fn build_pair() -> Pair {
    let dir = tempfile::Builder::new()
        .prefix("slate-netupdate.")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let d = dir.path();
    let (key, public) = keygen(d, "dev");
    let v1 = images::build(d, "v1", &recipe("1.0.0", 1, &public));
    let v2 = build_after(d, "v2", &recipe("2.0.0", 2, &public), &v1);
    let www = d.join("www");
    std::fs::create_dir(&www).unwrap();
    let bundle = www.join("v2.slate");
    images::run_ok(
        images::slate()
            .arg("bundle")
            .arg(&v2)
            .arg("--key")
            .arg(&key)
            .arg("-o")
            .arg(&bundle),
    );
    let diff = |target: Option<&Path>| {
        let mut cmd = images::slate();
        cmd.arg("diff").arg(&v1).arg(&bundle).arg("--json");
        if let Some(t) = target {
            cmd.arg("--target").arg(t);
        }
        let out = images::run_ok(&mut cmd);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let predicted = diff(None);
    let predicted_over_v2 = diff(Some(&v2));
    // With v2 already in the target, its chunks come from there.
    let (plain, over) = (&predicted["downloaded"], &predicted_over_v2["downloaded"]);
    assert!(over.as_u64() < plain.as_u64(), "{over} vs {plain}");
    assert!(
        predicted_over_v2["reused_by_source"]["target"].as_u64() > Some(0),
        "{predicted_over_v2}"
    );
    Pair {
        dir,
        v1,
        v2,
        www,
        predicted,
        predicted_over_v2,
    }
}

/// Body bytes nginx sent with `status`, over every logged request.
fn bytes_sent(log: &[LogLine], status: u16) -> u64 {
    log.iter().filter(|l| l.0 == status).map(|l| l.2).sum()
}

/// The counts a device reports in `event` equal `want`'s.
fn assert_counts(o: &QemuOutcome, event: &str, want: &serde_json::Value) {
    let got = only(o, event);
    for k in ["downloaded", "requests", "reused", "holes", "full"] {
        assert_eq!(got[k], want[k], "{event} {k}: {want}\n{}", describe(o));
    }
}

/// nginx answered only range requests, exactly as many and with exactly the
/// bytes `want` predicts.
fn assert_served(nginx: &Nginx, want: &serde_json::Value) {
    let log = nginx.log_lines();
    assert!(
        log.iter().all(|l| l.0 == 206),
        "range requests only: {log:?}"
    );
    assert_eq!(bytes_sent(&log, 206), want["downloaded"], "{log:?}");
    assert_eq!(log.len() as u64, want["requests"], "{log:?}");
}

#[test]
fn update_from_nginx_through_a_guest_forward() {
    let test = "update_from_nginx_through_a_guest_forward";
    if scenarios::skip(test) || !Nginx::available(test) {
        return;
    }
    let p = pair();
    let scratch = scratch_dir(p, test);
    let nginx = Nginx::start(&p.www);

    let disk = images::copy_disk(&p.v1.join("disk.img"), &scratch.join("disk.img"));
    let started = Instant::now();
    let o = boot_with_forward(
        &disk,
        nginx.port(),
        &["committed:A", "installing:B", "installed:B", "committed:B"],
        &scratch.join("console.log"),
        None,
    );
    eprintln!("QEMU run: {:.1} s", started.elapsed().as_secs_f64());
    assert_met(&o, "v1 installs v2 from nginx and commits it");

    // The install waited for the read-only mount instead of failing.
    let held = o.events.iter().position(|e| e.event.event == "esp_held");
    let installing_at = o.events.iter().position(|e| e.event.event == "installing");
    assert!(
        held.is_some() && held < installing_at,
        "the ESP was held before the install:\n{}",
        describe(&o)
    );
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
    assert_counts(&o, "installing", want);
    assert_counts(&o, "installed", want);
    assert_served(&nginx, want);
    // A new version string costs a small fraction of the bundle.
    let (got, full) = (
        want["downloaded"].as_u64().unwrap(),
        want["full"].as_u64().unwrap(),
    );
    assert!(got * 50 < full, "{got} of {full} bytes: {want}");
    let data = scenarios::data_file(&disk, &scratch.join("data.part"), "/fetched");
    assert_eq!(data, "attempt\n", "one attempt, recorded on /data");
}

/// A server without Range support (Python's http.server answers every GET
/// with 200 and the whole file): the device reports `delta_fallback` and
/// streams the bundle from that first reply, in one request, and commits v2.
#[test]
fn update_from_a_server_without_range_support_streams() {
    let test = "update_from_a_server_without_range_support_streams";
    if scenarios::skip(test) {
        return;
    }
    let p = pair();
    let scratch = scratch_dir(p, test);
    let server = PyHttp::start(&p.www);
    let disk = images::copy_disk(&p.v1.join("disk.img"), &scratch.join("disk.img"));
    let o = boot_with_forward(
        &disk,
        server.port(),
        &["committed:A", "installing:B", "installed:B", "committed:B"],
        &scratch.join("console.log"),
        None,
    );
    assert_met(&o, "v1 installs v2 from http.server and commits it");
    // Streamed, and said so before the install began: no delta plan.
    let fallback = only(&o, "delta_fallback");
    assert_eq!(
        fallback["reason"],
        format!("{GUEST_URL} ignores Range requests"),
        "{}",
        describe(&o)
    );
    let at = |name: &str| o.events.iter().position(|e| e.event.event == name);
    assert!(at("delta_fallback") < at("installing"), "{}", describe(&o));
    let installing = only(&o, "installing");
    assert!(installing.get("downloaded").is_none(), "{}", describe(&o));
    assert_eq!(only(&o, "installed")["version"], "2.0.0");
    assert_eq!(
        server.requests(),
        [("GET /v2.slate HTTP/1.1".to_string(), 200)],
        "one request, answered whole"
    );
    scenarios::assert_slot_holds(&disk, 3, &p.v2.join("rootfs.ext4"), test);
    let state = scenarios::device_state(&disk, &scratch.join("data.part"));
    assert_eq!(state["slots"]["B"]["version"], "2.0.0", "{state}");
    assert_eq!(state["update"]["phase"], "idle", "{state}");
}

/// A directory of its own for `test` in the pair's directory.
fn scratch_dir(p: &Pair, test: &str) -> PathBuf {
    let d = p.dir.path().join(test);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// What the restart after a cut at `point` must do: install again, and
/// what it downloads then (`None`: the slot was bootable already, so the
/// trial boot commits it without an install).
fn restart_download(p: &Pair, point: FaultPoint) -> Option<&serde_json::Value> {
    use FaultPoint::*;
    match point {
        AfterVerify | AfterDisable | AfterInstalling | AfterFirstWrite | MidSlot
        | AfterSlotSync | AfterBootFiles | AfterSeal => Some(&p.predicted),
        // Slot B holds v2 and its manifest is stored: it is its own seed.
        AfterSlotManifest => Some(&p.predicted_over_v2),
        AfterTrialEntry | AfterInstalled => None,
        other => panic!("{other} is not a point of the install"),
    }
}

/// A power cut at `point` of a delta install from nginx, then the checks of
/// `fault_scenarios.rs`: slot A byte for byte v1, the ESP clean with A's
/// committed entry, the stored phase one the cut can leave, the floor not
/// raised. The restart (no fault) finishes the update: B commits v2 (its
/// bytes those of v2's rootfs), the final state is exact, and what the
/// device downloaded again is what `slate diff` predicts for what it then
/// holds, byte for byte in nginx's log.
fn delta_install_survives_a_cut(point: FaultPoint) {
    let test = format!("delta-{}", point.name().replace('.', "-"));
    if scenarios::skip(&test) || !Nginx::available(&test) {
        return;
    }
    let p = pair();
    let scratch = scratch_dir(p, &test);
    let nginx = Nginx::start(&p.www);
    let disk = images::copy_disk(&p.v1.join("disk.img"), &scratch.join("disk.img"));

    let o = boot_with_forward(
        &disk,
        nginx.port(),
        &[],
        &scratch.join("cut.log"),
        Some(point),
    );
    scenarios::assert_powered_off_at(&o, point);
    let log = nginx.log_lines();
    assert!(
        !log.is_empty() && log.iter().all(|l| l.0 == 206),
        "{point}: the cut came during a delta download: {log:?}"
    );
    let a = p.v1.join("rootfs.ext4");
    scenarios::check_after_cut(&disk, &a, point, &scratch.join("cut"), 1);

    nginx.clear_log();
    let o = boot_with_forward(
        &disk,
        nginx.port(),
        &["committed:B"],
        &scratch.join("restart.log"),
        None,
    );
    assert_met(&o, &format!("{test}: restart"));
    for bad in [
        "unhealthy",
        "rollback",
        "last_resort",
        "state_unreadable",
        "delta_fallback",
    ] {
        assert!(
            events(&o, bad).is_empty(),
            "{test}: {bad}\n{}",
            describe(&o)
        );
    }
    match restart_download(p, point) {
        Some(want) => {
            assert_counts(&o, "installing", want);
            assert_counts(&o, "installed", want);
            assert_served(&nginx, want);
        }
        None => {
            assert!(events(&o, "installing").is_empty(), "{}", describe(&o));
            assert!(nginx.log_lines().is_empty(), "{:?}", nginx.log_lines());
        }
    }
    let state = scenarios::device_state(&disk, &scratch.join("data2.part"));
    assert_eq!(state["update"]["phase"], "idle", "{state}");
    assert_eq!(state["floor"], 2, "{state}");
    assert_eq!(state["slots"]["A"]["version"], "1.0.0", "{state}");
    assert_eq!(state["slots"]["B"]["version"], "2.0.0", "{state}");
    assert_eq!(state["failed"].as_array().unwrap().len(), 0, "{state}");
    scenarios::assert_slot_holds(&disk, 3, &p.v2.join("rootfs.ext4"), &test);
    scenarios::assert_slot_holds(&disk, 2, &p.v1.join("rootfs.ext4"), &test);
    scenarios::assert_esp_clean(&disk, &scratch.join("esp2.part"), &test);
    scenarios::assert_committed_entry(&disk, "a", &test);
    scenarios::assert_committed_entry(&disk, "b", &test);
    let _ = std::fs::remove_file(&disk);
}

macro_rules! cut {
    ($($name:ident => $point:ident,)*) => {$(
        #[test]
        fn $name() {
            delta_install_survives_a_cut(FaultPoint::$point);
        }
    )*};
}

cut! {
    delta_cut_after_verify => AfterVerify,
    delta_cut_after_disable => AfterDisable,
    delta_cut_after_installing => AfterInstalling,
    delta_cut_after_first_write => AfterFirstWrite,
    delta_cut_mid_slot => MidSlot,
    delta_cut_after_slot_sync => AfterSlotSync,
    delta_cut_after_boot_files => AfterBootFiles,
    delta_cut_after_seal => AfterSeal,
    delta_cut_after_slot_manifest => AfterSlotManifest,
    delta_cut_after_trial_entry => AfterTrialEntry,
    delta_cut_after_installed => AfterInstalled,
}

/// Every fault point of the install has a delta scenario here (the points
/// after the reboot do not depend on where the bundle came from and are
/// covered by `fault_scenarios.rs`).
#[test]
fn every_install_fault_point_has_a_delta_scenario() {
    let me = include_str!("update_network.rs");
    for p in FaultPoint::ALL {
        if p.name().starts_with("install.") {
            let variant = format!("{p:?}");
            assert_eq!(
                me.matches(&format!("=> {variant},")).count(),
                1,
                "install fault point {p} has no delta scenario"
            );
        }
    }
}
