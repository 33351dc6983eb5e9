//! Issue 10: the network script and udhcpc lease script slate writes into an
//! image, run with the image's own busybox (in a chroot, in a private network,
//! mount and UTS namespace, on veth pairs) and checked with the host's iproute2:
//! a static address and gateway, then a DHCP lease applied, renewed and
//! withdrawn. (DHCP itself is exercised under QEMU in tests/network_debug.rs;
//! QEMU's restricted user networking offers no gateway or DNS, so those parts
//! of a lease are tested here.)

mod images;

use images::{build_toml, is_root, keygen, run_ok, skip_without};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn recipe(key: &Path) -> String {
    format!(
        r#"[image]
name = "netscripts"
version = "1.0.0"

[kernel]
package = "linux-image-cloud-amd64"
cmdline = "console=ttyS0 quiet"
modules = ["virtio_pci", "virtio_blk"]

[network]
hostname = "gw-1"
search = ["lan"]

[[network.interface]]
name = "eth0"
address = "192.168.7.2/24"
gateway = "192.168.7.1"

[[network.interface]]
name = "eth1"
dhcp = true

[update]
public_keys = [{key:?}]
"#,
        key = key.display().to_string()
    )
}

/// A chroot with the image's busybox, its applets and slate's two scripts.
fn mini_root(rootfs: &Path, root: &Path) {
    for d in ["bin", "etc/slate", "run", "sys", "proc", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for (from, to) in [
        ("/bin/busybox", "bin/busybox"),
        ("/etc/slate/network-up", "etc/slate/network-up"),
        ("/etc/slate/udhcpc", "etc/slate/udhcpc"),
        ("/etc/hostname", "etc/hostname"),
    ] {
        let dump = format!("dump {from} {}", root.join(to).display());
        run_ok(Command::new("debugfs").args(["-R", &dump]).arg(rootfs));
    }
    use std::os::unix::fs::PermissionsExt;
    for f in ["bin/busybox", "etc/slate/network-up", "etc/slate/udhcpc"] {
        std::fs::set_permissions(root.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let list = run_ok(Command::new(root.join("bin/busybox")).arg("--list"));
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }
    // Every PATH directory the scripts name leads to busybox.
    for d in ["sbin", "usr/bin", "usr/sbin"] {
        std::fs::create_dir_all(root.join(d).parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(
            if d.starts_with("usr") {
                "../bin"
            } else {
                "bin"
            },
            root.join(d),
        )
        .unwrap();
    }
}

/// The steps, in one private network and mount namespace; prints the state
/// after each step as `== STEP` then `ip -j addr`, `ip -j route`, resolv.conf.
const STEPS: &str = r#"
set -e
R=$1
mount -t tmpfs tmpfs "$R/run"; mount -t sysfs sysfs "$R/sys"; mount -t proc proc "$R/proc"
ip link add eth0 type veth peer name peer0
ip link add eth1 type veth peer name peer1
ip link set peer0 up; ip link set peer1 up
show() { echo "== $1"; ip -j addr show; echo; ip -j route show; echo; cat "$R/run/resolv.conf"; }
# eth1 has no DHCP server: udhcpc tries for a few seconds, then goes to the
# background, where it is stopped.
chroot "$R" /bin/sh /etc/slate/network-up
kill "$(cat "$R/run/udhcpc.eth1.pid")"
show static
lease() {
    chroot "$R" /bin/env -i interface=eth1 ip=$2 mask=24 broadcast=10.1.2.255 \
        router="10.1.2.1 10.1.2.9" dns="9.9.9.9 1.1.1.1" domain=example.org /bin/sh /etc/slate/udhcpc "$1" >&2
}
chroot "$R" /bin/env -i interface=eth1 /bin/sh /etc/slate/udhcpc deconfig
lease bound 10.1.2.3
show bound
lease renew 10.1.2.3
show renew
lease renew 10.1.2.4
show moved
chroot "$R" /bin/env -i interface=eth1 /bin/sh /etc/slate/udhcpc deconfig
show deconfig
"#;

struct State {
    addrs: Value,
    routes: Value,
    resolv: String,
}

fn states(output: &str) -> Vec<(String, State)> {
    output
        .split("== ")
        .skip(1)
        .map(|part| {
            let mut lines = part.splitn(4, '\n');
            let name = lines.next().unwrap().to_string();
            let addrs = serde_json::from_str(lines.next().unwrap()).unwrap();
            let _ = lines.next();
            let rest = lines.next().unwrap_or_default();
            let (routes, resolv) = rest.split_once('\n').unwrap_or((rest, ""));
            let routes = serde_json::from_str(routes).unwrap();
            (
                name,
                State {
                    addrs,
                    routes,
                    resolv: resolv.trim_start_matches('\n').to_string(),
                },
            )
        })
        .collect()
}

fn addresses(s: &State, ifname: &str) -> Vec<String> {
    s.addrs
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["ifname"] == ifname)
        .flat_map(|l| l["addr_info"].as_array().unwrap().clone())
        .filter(|a| a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

fn defaults(s: &State) -> Vec<String> {
    s.routes
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["dst"] == "default")
        .map(|r| {
            format!(
                "{} {} {}",
                r["gateway"].as_str().unwrap(),
                r["dev"].as_str().unwrap(),
                r["metric"]
            )
        })
        .collect()
}

#[test]
fn static_address_and_dhcp_lease_scripts() {
    let test = "static_address_and_dhcp_lease_scripts";
    if !is_root() {
        images::shared::skipped(test, "needs root (network namespaces, chroot)");
        return;
    }
    if !images::have_apt(test) || skip_without(test, &["debugfs", "unshare", "chroot", "ip"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (_, key) = keygen(d.path(), "k");
    let out = build_toml(d.path(), "netscripts", &recipe(&key));
    let root = d.path().join("root");
    mini_root(&out.join("rootfs.ext4"), &root);
    let run = run_ok(
        Command::new("unshare")
            .args(["-n", "-m", "-u", "sh", "-c", STEPS, "sh"])
            .arg(&root),
    );
    let all = states(&String::from_utf8_lossy(&run.stdout));
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["static", "bound", "renew", "moved", "deconfig"]);
    let st = |n: &str| &all.iter().find(|(x, _)| x == n).unwrap().1;

    assert_eq!(addresses(st("static"), "eth0"), ["192.168.7.2/24"]);
    assert_eq!(defaults(st("static")), ["192.168.7.1 eth0 100"]);
    assert_eq!(
        st("static").resolv,
        "search lan\n",
        "no static servers: DHCP's come later"
    );

    for step in ["bound", "renew"] {
        assert_eq!(addresses(st(step), "eth1"), ["10.1.2.3/24"], "{step}");
        let mut routes = defaults(st(step));
        routes.sort();
        assert_eq!(
            routes,
            ["10.1.2.1 eth1 101", "192.168.7.1 eth0 100"],
            "{step}: first router only"
        );
        assert_eq!(
            st(step).resolv,
            "nameserver 9.9.9.9\nnameserver 1.1.1.1\nsearch lan\n",
            "{step}: DHCP's servers, the recipe's search list"
        );
    }
    assert_eq!(
        addresses(st("moved"), "eth1"),
        ["10.1.2.4/24"],
        "a changed lease replaces the address"
    );
    assert!(addresses(st("deconfig"), "eth1").is_empty());
    assert_eq!(
        addresses(st("deconfig"), "eth0"),
        ["192.168.7.2/24"],
        "static untouched"
    );
}
