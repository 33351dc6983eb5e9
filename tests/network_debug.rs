//! Issue 10: `[network]`, `[debug]` and `[state]` under QEMU. The guest gets
//! its address from QEMU's DHCP (user networking with restrict=on), the
//! health check proves the address, resolv.conf, the host name and the NTP
//! client; the host's OpenSSH logs in through a forward on 127.0.0.1 with a
//! key generated here; a command typed on the serial console prints its
//! output; what boot 1 writes to /var and to a writable /etc path (and the
//! SSH host key dropbear made) is still there on boot 2.

mod images;

use images::{build_toml, keygen, run_ok, skip_without};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn recipe(update_key: &Path, ssh_key: &Path) -> String {
    format!(
        r#"[image]
name = "netdbg"
version = "1.0.0"
compatible = "slate-test-x86_64"

[kernel]
package = "linux-image-cloud-amd64"
cmdline = "console=ttyS0 quiet panic=2"
modules = ["virtio_pci", "virtio_blk"]

[rootfs]
packages = ["busybox-static"]

[network]
hostname = "edge-1"
dns = ["10.0.2.3"]
# Nothing answers on the guest's own loopback: ntpd runs, unsynchronised.
ntp = ["127.0.0.1"]

[[network.interface]]
name = "eth0"
dhcp = true

[debug]
ssh_authorized_keys = [{ssh_key:?}]
console = true

[state]
var = "data"
writable = ["/etc/app"]

[health]
command = """ip -4 addr show dev eth0 | grep -q 'inet 10.0.2.15/24 ' \
  && grep -qx 'nameserver 10.0.2.3' /etc/resolv.conf \
  && [ "$(hostname)" = edge-1 ] \
  && ntpctl -s status | grep -q 'peers valid'"""
timeout = "10s"
retries = 10
interval = "1s"

[disk]
esp = "64M"
slot = "128M"
data = "32M"

[update]
public_keys = [{update_key:?}]
"#,
        ssh_key = ssh_key.display().to_string(),
        update_key = update_key.display().to_string(),
    )
}

/// The host's OpenSSH running `command` as root in the guest through the
/// forward on 127.0.0.1: key only, no host key kept, no prompt.
fn ssh_command(key: &Path, port: u16, command: &str) -> Command {
    let mut c = Command::new("ssh");
    c.arg("-i")
        .arg(key)
        .args(["-p", &port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=20",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg("root@127.0.0.1")
        .arg(command)
        .stdin(Stdio::null());
    c
}

/// Runs `command` in the guest through the forward with the host's OpenSSH;
/// retries while the server is not up yet.
fn ssh(key: &Path, port: u16, command: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = ssh_command(key, port, command).output().unwrap();
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            Instant::now() < deadline && out.status.code() == Some(255),
            "ssh {command:?} failed ({}): {err}",
            out.status
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Sends `command` once, whatever happens to the connection (the guest
/// reboots or powers off under it).
fn ssh_once(key: &Path, port: u16, command: &str) {
    let _ = ssh_command(key, port, command).output().unwrap();
}

/// `slate qemu` with the forward and the console line, events on a channel.
fn start(disk: &Path, port: u16, log: &Path) -> (Child, mpsc::Receiver<Value>) {
    let typed = "committed=printf 'SLATE-%s {\"event\":\"typed\",\"uid\":%s}\\n' EVENT $(id -u)";
    let mut child = images::slate()
        .arg("qemu")
        .arg(disk)
        .arg("--hostfwd")
        .arg(format!("tcp:127.0.0.1:{port}-:22"))
        .args(["--json", "--timeout", "400", "--type-after", typed])
        .arg("--console-log")
        .arg(log)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    (child, rx)
}

/// Waits for event `name` on boot `boot`; returns every event seen.
fn wait_for(rx: &mpsc::Receiver<Value>, name: &str, boot: u64, seen: &mut Vec<Value>) {
    let deadline = Instant::now() + Duration::from_secs(240);
    while Instant::now() < deadline {
        if let Ok(e) = rx.recv_timeout(Duration::from_secs(1)) {
            seen.push(e.clone());
            assert_ne!(e["event"], "unhealthy", "{seen:?}");
            if e["event"] == name && e["boot"] == boot {
                return;
            }
        }
    }
    panic!("no {name} on boot {boot}: {seen:?}");
}

#[test]
fn network_ssh_console_and_state_across_a_reboot() {
    let test = "network_ssh_console_and_state_across_a_reboot";
    if !images::have_apt(test)
        || !images::have_qemu(test)
        || skip_without(test, &["ssh", "ssh-keygen", "debugfs"])
    {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (_, update_key) = keygen(d.path(), "update");
    let key: PathBuf = d.path().join("id");
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "slate-test", "-f"])
            .arg(&key),
    );
    let out = build_toml(
        d.path(),
        "netdbg",
        &recipe(&update_key, &key.with_extension("pub")),
    );
    let keys = run_ok(
        Command::new("debugfs")
            .args(["-R", "cat /root/.ssh/authorized_keys"])
            .arg(out.join("rootfs.ext4")),
    );
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    assert!(String::from_utf8_lossy(&keys.stdout).contains(public.trim()));

    let port = images::shared::free_port();
    let (mut child, rx) = start(&out.join("disk.img"), port, &d.path().join("console.log"));
    let mut seen = Vec::new();
    wait_for(&rx, "committed", 1, &mut seen);
    assert_eq!(ssh(&key, port, "id -u"), "0\n");
    assert!(ssh(&key, port, "cat /etc/os-release").contains("IMAGE_ID=netdbg\n"));
    let host_key = ssh(
        &key,
        port,
        "sha256sum /etc/dropbear/dropbear_ed25519_host_key",
    );
    ssh(
        &key,
        port,
        "mkdir -p /var/lib/probe && echo boot1 > /var/lib/probe/v && echo one > /etc/app/conf && sync",
    );
    wait_for(&rx, "typed", 1, &mut seen);
    assert_eq!(seen.last().unwrap()["uid"], 0, "{seen:?}");
    // A reboot through init (busybox's reboot returns at once).
    ssh_once(&key, port, "reboot");

    wait_for(&rx, "committed", 2, &mut seen);
    assert_eq!(
        ssh(&key, port, "cat /var/lib/probe/v /etc/app/conf"),
        "boot1\none\n"
    );
    assert_eq!(
        ssh(
            &key,
            port,
            "sha256sum /etc/dropbear/dropbear_ed25519_host_key"
        ),
        host_key,
        "the SSH host key persists on /data"
    );
    let mounts = ssh(&key, port, "cat /proc/mounts");
    assert!(mounts.contains(" /var ext4 rw"), "{mounts}");
    assert!(mounts.contains(" / ext4 ro"), "{mounts}");
    ssh_once(&key, port, "poweroff");
    let status = child.wait().unwrap();
    assert!(status.success(), "slate qemu: {status} {seen:?}");
}

/// `[state] var = "tmpfs"`: /var is a tmpfs holding the image's /var,
/// writable, and a static address without DHCP (eth0 on QEMU's network
/// simply gets the address it is given). The health check proves it all.
#[test]
fn var_on_tmpfs_and_a_static_address() {
    let test = "var_on_tmpfs_and_a_static_address";
    if !images::have_apt(test) || !images::have_qemu(test) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (_, update_key) = keygen(d.path(), "update");
    let mut r = images::Recipe::counter("1.0.0", &update_key);
    r.name = "vartmpfs".into();
    r.health = "grep -q ' /var tmpfs rw' /proc/mounts && test \"$(cat /var/lib/seed/x)\" = seeded \
        && echo w > /var/lib/seed/y && ip -4 addr show dev eth0 | grep -q 'inet 10.0.2.20/24 ' \
        && ip route | grep -q '^default via 10.0.2.2 dev eth0' \
        && grep -qx 'nameserver 10.0.2.3' /etc/resolv.conf && [ \"$(hostname)\" = vartmpfs ]"
        .into();
    r.extra = r#"
[[rootfs.files]]
dst = "/var/lib/seed/x"
content = "seeded\n"

[network]
dns = ["10.0.2.3"]

[[network.interface]]
name = "eth0"
address = "10.0.2.20/24"
gateway = "10.0.2.2"

[state]
var = "tmpfs"
"#
    .into();
    let out = build_toml(d.path(), "vartmpfs", &r.toml());
    let run = run_ok(
        images::slate()
            .arg("qemu")
            .arg(out.join("disk.img"))
            .args(["--net", "--snapshot", "--timeout", "150"])
            .args(["--expect", "healthy:A", "--expect", "committed:A"]),
    );
    assert!(run.status.success());
}
