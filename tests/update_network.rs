//! An update over the network (issue 12): nginx serves a v2 bundle on the
//! host's 127.0.0.1, the guest reaches it as http://10.0.2.100:80 through a
//! `guestfwd` on restricted user networking, and a one-shot service in v1
//! runs `slate-agent install` on that URL. One QEMU run: v1 commits A,
//! installs v2 into B from nginx, reboots, commits B; /data survives, and
//! nginx's access log shows what the device downloaded.

mod images;
mod scenarios;

use images::shared::nginx::{LogLine, Nginx};
use images::{Recipe, keygen};
use scenarios::{assert_met, describe, events};
use slate::qemu::net::{GuestFwd, UserNet};
use slate::qemu::{QemuOptions, QemuOutcome};
use std::path::Path;
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
    let d = tempfile::Builder::new()
        .prefix("slate-netupdate.")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let (key, public) = keygen(d.path(), "dev");
    let v1 = images::build(d.path(), "v1", &recipe("1.0.0", &public));
    let v2 = images::build(d.path(), "v2", &recipe("2.0.0", &public));
    let root = d.path().join("www");
    std::fs::create_dir(&root).unwrap();
    let bundle = images::bundle(&v2, &key, &root.join("v2.slate"));
    let size = std::fs::metadata(&bundle).unwrap().len();
    let nginx = Nginx::start(&root);

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

    let log = nginx.log_lines();
    assert!(
        log.iter().any(|l| *l == (200, String::new(), size)),
        "nginx sent the whole {size}-byte bundle once: {log:?}"
    );
    assert_eq!(bytes_sent(&log, 200), size, "{log:?}");
    let data = scenarios::data_file(&disk, &d.path().join("data.part"), "/fetched");
    assert_eq!(data, "once\n", "the marker on /data");
}
