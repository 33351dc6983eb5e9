//! What `[network]`, `[debug]` and `[state]` put into the root filesystem:
//! slate's network script and udhcpc lease script, `/etc/resolv.conf` (a
//! link to `/run`), the SSH server's keys, openntpd's configuration, the
//! init entries that start them, and `/etc/slate/state`, which the
//! initramfs reads to mount the writable paths (boot/init.sh).

use super::ComposeError;
use super::rootfs::resolve;
use crate::kernel::modules::ModuleIndex;
use crate::recipe::{
    Addressing, AuthorizedKey, DEFAULT_NET_MODULES, Interface, NTP_HOME, Recipe, SSH_HOST_KEYS,
    VarMode, check_key_line,
};
use crate::tree::{FileData, Metadata, Node, NodeKind, Timestamp, Tree};
use std::fmt::Write as _;

/// Brings up the interfaces and writes `/run/resolv.conf` (run once by init).
pub const NETWORK_SCRIPT: &str = "/etc/slate/network-up";
/// udhcpc's lease script.
pub const LEASE_SCRIPT: &str = "/etc/slate/udhcpc";
/// What the initramfs mounts over the read-only root (boot/init.sh).
pub const STATE_FILE: &str = "/etc/slate/state";
/// Where `/etc/resolv.conf` points: written at boot and by the lease script.
pub const RESOLV_CONF: &str = "/run/resolv.conf";
/// openntpd's configuration.
pub const NTPD_CONF: &str = "/etc/openntpd/ntpd.conf";
/// Route metric of the first interface (+1 for each later one).
const FIRST_METRIC: u32 = 100;

/// init entries that run before the agent and the services: the network.
pub fn inittab_first(recipe: &Recipe) -> String {
    if !recipe.network.declared {
        return String::new();
    }
    format!("# network ([network])\n::wait:{NETWORK_SCRIPT}\n")
}

/// init entries after the services: the SSH server, the NTP client, the
/// console shell.
pub fn inittab_last(recipe: &Recipe) -> String {
    let mut t = String::new();
    if recipe.debug.ssh() {
        // -R: host keys made on first use, kept in the writable /etc/dropbear;
        // -s: keys only, no passwords.
        t.push_str("# SSH server ([debug] ssh_authorized_keys)\n");
        t.push_str("::respawn:/usr/sbin/dropbear -F -E -R -s -p 22\n");
    }
    if !recipe.network.ntp.is_empty() {
        t.push_str("# NTP client ([network] ntp)\n");
        t.push_str(&format!("::respawn:/usr/sbin/ntpd -d -f {NTPD_CONF}\n"));
    }
    if let Some(tty) = &recipe.debug.console {
        t.push_str("# root shell on the console ([debug] console)\n");
        t.push_str(&format!(
            "{tty}::respawn:/sbin/getty -n -l /bin/sh -L 0 {tty} vt100\n"
        ));
    }
    t
}

fn meta(mode: u16, mtime: i64) -> Metadata {
    Metadata {
        mtime: Timestamp::from_secs(mtime),
        ..Metadata::root(mode)
    }
}

fn put_text(
    tree: &mut Tree,
    path: &str,
    text: String,
    mode: u16,
    mtime: i64,
) -> Result<(), ComposeError> {
    let node = Node {
        kind: NodeKind::File(FileData::from_bytes(text.into_bytes())),
        meta: meta(mode, mtime),
    };
    tree.put(path.as_bytes(), node, &meta(0o755, mtime))?;
    Ok(())
}

/// Adds the network, SSH and NTP files (before the recipe's own files,
/// which may replace `/etc/hosts` and the like).
pub fn add_files(recipe: &Recipe, tree: &mut Tree, mtime: i64) -> Result<(), ComposeError> {
    if recipe.network.declared {
        add_network_files(recipe, tree, mtime)?;
    }
    if recipe.debug.ssh() {
        let keys = authorized_keys(recipe)?;
        let id = tree.mkdir_p(b"/root/.ssh", &meta(0o700, mtime))?;
        tree.node_mut(id).meta = meta(0o700, mtime);
        put_text(tree, "/root/.ssh/authorized_keys", keys, 0o600, mtime)?;
        tree.mkdir_p(SSH_HOST_KEYS.as_bytes(), &meta(0o755, mtime))?;
    }
    if !recipe.network.ntp.is_empty() {
        put_text(tree, NTPD_CONF, ntpd_conf(recipe), 0o644, mtime)?;
        // openntpd refuses a privsep home that is not root's (the account
        // code made it the user's).
        let id = tree.mkdir_p(NTP_HOME.as_bytes(), &meta(0o755, mtime))?;
        tree.node_mut(id).meta = meta(0o755, mtime);
    }
    Ok(())
}

fn add_network_files(recipe: &Recipe, tree: &mut Tree, mtime: i64) -> Result<(), ComposeError> {
    put_text(tree, NETWORK_SCRIPT, network_script(recipe), 0o755, mtime)?;
    put_text(tree, LEASE_SCRIPT, lease_script(recipe), 0o755, mtime)?;
    let link = Node {
        kind: NodeKind::Symlink(RESOLV_CONF.as_bytes().to_vec()),
        meta: meta(0o777, mtime),
    };
    tree.put(b"/etc/resolv.conf", link, &meta(0o755, mtime))?;
    put_text(tree, "/etc/hosts", hosts(recipe), 0o644, mtime)?;
    if tree.lookup(b"/etc/nsswitch.conf").is_none() {
        put_text(tree, "/etc/nsswitch.conf", NSSWITCH.into(), 0o644, mtime)?;
    }
    Ok(())
}

/// The C library's name service order when no package brings one.
const NSSWITCH: &str = "\
# Written by slate ([network]): local files, then DNS for host names.
passwd: files
group: files
shadow: files
hosts: files dns
networks: files
protocols: files
services: files
";

/// `/etc/hosts`: localhost and the device's own name.
pub fn hosts(recipe: &Recipe) -> String {
    format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{h}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        h = recipe.hostname()
    )
}

/// The static part of `resolv.conf`: the recipe's servers and search list.
pub fn static_resolv_conf(recipe: &Recipe) -> String {
    let mut s = String::new();
    for d in &recipe.network.dns {
        let _ = writeln!(s, "nameserver {d}");
    }
    if !recipe.network.search.is_empty() {
        let _ = writeln!(s, "search {}", recipe.network.search.join(" "));
    }
    s
}

/// `/etc/slate/network-up`: one line per interface after the helpers.
pub fn network_script(recipe: &Recipe) -> String {
    let mut s = String::from(NETWORK_HELPERS);
    let _ = write!(
        s,
        "\n# DNS: {}\ncat > {RESOLV_CONF} <<'EOF'\n{}EOF\n\n",
        if recipe.network.dns.is_empty() {
            "from DHCP (the lease script writes it)"
        } else {
            "the recipe's servers"
        },
        static_resolv_conf(recipe)
    );
    for (metric, i) in (FIRST_METRIC..).zip(&recipe.network.interfaces) {
        s.push_str(&interface_line(i, metric));
    }
    s.push_str("exit 0\n");
    s
}

fn interface_line(i: &Interface, metric: u32) -> String {
    match &i.addressing {
        Addressing::Dhcp => format!("dhcp {} || log \"{}: DHCP failed\"\n", i.name, i.name),
        Addressing::Static {
            address,
            prefix,
            gateway,
        } => {
            let gw = gateway
                .map(|g| format!(" {g} {metric}"))
                .unwrap_or_default();
            format!(
                "static {n} {address}/{prefix}{gw} || log \"{n}: configuration failed\"\n",
                n = i.name
            )
        }
    }
}

/// The fixed part of the network script (shell functions).
const NETWORK_HELPERS: &str = r#"#!/bin/sh
# Generated by slate from the recipe's [network]. init runs it once, before
# the agent and the services: it writes /run/resolv.conf and brings up each
# interface, static or with DHCP (udhcpc, lease script /etc/slate/udhcpc).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
log() { echo "slate-network: $*"; }

# Waits up to 10 s for interface $1 (drivers probe asynchronously).
wait_link() {
    n=0
    while [ ! -e "/sys/class/net/$1" ]; do
        n=$((n + 1))
        [ $n -le 100 ] || { log "no interface $1"; return 1; }
        sleep 0.1
    done
}

# static IFACE ADDRESS/PREFIX [GATEWAY METRIC]
static() {
    wait_link "$1" || return 1
    ip link set dev "$1" up || return 1
    ip addr add "$2" dev "$1" || return 1
    if [ -n "$3" ]; then
        ip route add default via "$3" dev "$1" metric "$4" || return 1
    fi
    log "$1: $2"
}

# dhcp IFACE: waits up to ~6 s for a lease, then goes on; udhcpc stays in
# the background to renew it (or to keep asking).
dhcp() {
    wait_link "$1" || return 1
    udhcpc -i "$1" -s /etc/slate/udhcpc -p "/run/udhcpc.$1.pid" \
        -x hostname:"$(hostname)" -t 3 -T 2 -A 10 -b
}
"#;

/// `/etc/slate/udhcpc`: applies a lease (udhcpc passes it in the
/// environment: `interface ip mask broadcast router dns domain`).
pub fn lease_script(recipe: &Recipe) -> String {
    let mut metrics = String::new();
    for (metric, i) in (FIRST_METRIC..).zip(&recipe.network.interfaces) {
        let _ = writeln!(metrics, "    {}) metric={metric} ;;", i.name);
    }
    let dns = if recipe.network.dns.is_empty() {
        let search = if recipe.network.search.is_empty() {
            "[ -z \"$domain\" ] || echo \"search $domain\"".to_string()
        } else {
            format!("echo \"search {}\"", recipe.network.search.join(" "))
        };
        format!(
            "        if [ -n \"$dns\" ]; then\n            {{ for d in $dns; do echo \"nameserver $d\"; done; {search}; }} \\\n                > {RESOLV_CONF}.new && mv {RESOLV_CONF}.new {RESOLV_CONF}\n        fi\n"
        )
    } else {
        "        # DNS servers are the recipe's ([network] dns).\n".to_string()
    };
    LEASE_TEMPLATE
        .replace("@METRICS@", &metrics)
        .replace("@DNS@\n", &dns)
}

const LEASE_TEMPLATE: &str = r#"#!/bin/sh
# Generated by slate from the recipe's [network]: udhcpc runs it with
# deconfig, bound, renew, leasefail or nak, the lease in the environment.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
case "$interface" in
@METRICS@    *) metric=1000 ;;
esac
case "$1" in
    deconfig)
        ip link set dev "$interface" up
        ip -4 addr flush dev "$interface"
        ;;
    bound|renew)
        if ! ip -4 addr show dev "$interface" | grep -q "inet $ip/$mask "; then
            ip -4 addr flush dev "$interface"
            ip addr add "$ip/$mask" broadcast "${broadcast:-+}" dev "$interface"
        fi
        for r in $router; do
            ip route replace default via "$r" dev "$interface" metric "$metric"
            break
        done
@DNS@
        echo "slate-network: $interface: $ip/$mask (DHCP, $1)"
        ;;
esac
exit 0
"#;

/// openntpd's configuration: `servers` for names (every address they
/// resolve to), `server` for addresses.
pub fn ntpd_conf(recipe: &Recipe) -> String {
    let mut s = String::from("# Generated by slate from the recipe's [network] ntp.\n");
    for n in &recipe.network.ntp {
        let kw = if n.parse::<std::net::IpAddr>().is_ok() {
            "server"
        } else {
            "servers"
        };
        let _ = writeln!(s, "{kw} {n}");
    }
    s
}

/// The `authorized_keys` text: the recipe's key lines and the lines of its
/// key files, each checked; errors name the entry (and the file's line).
pub fn authorized_keys(recipe: &Recipe) -> Result<String, ComposeError> {
    let mut out =
        String::from("# Written by slate from the recipe's [debug] ssh_authorized_keys.\n");
    for (i, k) in recipe.debug.ssh_authorized_keys.iter().enumerate() {
        let field = format!("debug.ssh_authorized_keys.{i}");
        match k {
            AuthorizedKey::Line(l) => out.push_str(&format!("{l}\n")),
            AuthorizedKey::File(p) => {
                let host = resolve(recipe, p);
                let text = std::fs::read_to_string(&host).map_err(|e| {
                    recipe.error(&field, format!("cannot read {}: {e}", host.display()))
                })?;
                let keys = key_file_lines(&text).map_err(|(n, m)| {
                    recipe.error(&field, format!("{}:{n}: {m}", host.display()))
                })?;
                if keys.is_empty() {
                    return Err(recipe
                        .error(&field, format!("{} holds no key", host.display()))
                        .into());
                }
                keys.iter().for_each(|l| out.push_str(&format!("{l}\n")));
            }
        }
    }
    Ok(out)
}

/// The key lines of an `authorized_keys`-style file (comments and blank
/// lines dropped); `Err((line, message))` for the first bad one.
fn key_file_lines(text: &str) -> Result<Vec<&str>, (usize, String)> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        check_key_line(line).map_err(|m| (n + 1, m))?;
        keys.push(line);
    }
    Ok(keys)
}

/// Writes `/etc/slate/state` for the initramfs and makes sure every
/// writable path exists; runs last, so the recipe's files count as the
/// image's content. Lines: `tmpfs /var`, `data /var`, `data PATH dir|file`.
pub fn add_state(recipe: &Recipe, tree: &mut Tree, mtime: i64) -> Result<(), ComposeError> {
    let st = &recipe.state;
    let mut s =
        String::from("# Generated by slate from the recipe's [state]; read by the initramfs.\n");
    match st.var {
        VarMode::ReadOnly => {}
        VarMode::Tmpfs => s.push_str("tmpfs /var dir\n"),
        VarMode::Data => s.push_str("data /var dir\n"),
    }
    for (i, p) in st.writable.iter().enumerate() {
        let kind = writable_kind(tree, p, mtime)
            .map_err(|m| recipe.error(&format!("state.writable.{i}"), m))?;
        let _ = writeln!(s, "data {p} {kind}");
    }
    if st.var != VarMode::ReadOnly || !st.writable.is_empty() {
        put_text(tree, STATE_FILE, s, 0o644, mtime)?;
    }
    Ok(())
}

/// `dir` or `file` for a writable path, creating a missing one as an
/// empty directory.
fn writable_kind(tree: &mut Tree, path: &str, mtime: i64) -> Result<&'static str, String> {
    let Some(id) = tree.lookup(path.as_bytes()) else {
        tree.mkdir_p(path.as_bytes(), &meta(0o755, mtime))
            .map_err(|e| e.to_string())?;
        return Ok("dir");
    };
    match tree.node(id).kind {
        NodeKind::Directory(_) => Ok("dir"),
        NodeKind::File(_) => Ok("file"),
        _ => Err(format!(
            "{path} in the image is neither a directory nor a regular file"
        )),
    }
}

/// The modules the initramfs loads for the recipe: `kernel.modules`, then
/// `network.modules`, or (interfaces declared, no `network.modules`) the
/// default NIC drivers this kernel has.
pub fn requested_modules(recipe: &Recipe, index: &ModuleIndex) -> Vec<String> {
    let mut names = recipe.kernel.modules.clone();
    names.extend(recipe.network.modules.iter().cloned());
    if recipe.network.default_modules {
        let have = |m: &str| index.load_order(&[m.to_string()]).is_ok();
        names.extend(
            DEFAULT_NET_MODULES
                .iter()
                .filter(|m| have(m))
                .map(|m| m.to_string()),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// The recipe field that asked for module `name`.
pub fn module_field(recipe: &Recipe, name: &str) -> String {
    let pos = |list: &[String]| list.iter().position(|m| m == name);
    if let Some(i) = pos(&recipe.kernel.modules) {
        format!("kernel.modules.{i}")
    } else if let Some(i) = pos(&recipe.network.modules) {
        format!("network.modules.{i}")
    } else {
        "kernel.modules".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::rootfs::inittab;
    use std::path::Path;

    const BASE: &str = "[image]\nname = \"edge\"\nversion = \"1\"\n\n[kernel]\npackage = \"linux-image-cloud-amd64\"\ncmdline = \"console=ttyS0 quiet\"\n";

    fn recipe(extra: &str) -> Recipe {
        Recipe::parse(Path::new("r/t.toml"), &format!("{BASE}{extra}")).unwrap()
    }

    const STATIC: &str = r#"
[network]
hostname = "gw-1"
dns = ["192.168.7.1"]
search = ["lan"]

[[network.interface]]
name = "eth0"
address = "192.168.7.2/24"
gateway = "192.168.7.1"

[[network.interface]]
name = "eth1"
dhcp = true
"#;

    #[test]
    fn nothing_runs_unless_asked() {
        let r = recipe("");
        let t = inittab(&r);
        for absent in ["network-up", "dropbear", "ntpd", "getty", "/bin/sh -L"] {
            assert!(!t.contains(absent), "{absent} in\n{t}");
        }
        let mut tree = Tree::new(meta(0o755, 0));
        add_files(&r, &mut tree, 0).unwrap();
        add_state(&r, &mut tree, 0).unwrap();
        assert_eq!(
            tree.len(),
            1,
            "no files without [network], [debug], [state]"
        );
    }

    #[test]
    fn console_shell_only_when_asked() {
        let on = inittab(&recipe("\n[debug]\nconsole = true\n"));
        assert!(
            on.contains("ttyS0::respawn:/sbin/getty -n -l /bin/sh -L 0 ttyS0 vt100\n"),
            "{on}"
        );
        let off = inittab(&recipe("\n[debug]\nconsole = false\n"));
        assert!(!off.contains("getty"), "{off}");
    }

    #[test]
    fn static_and_dhcp_configuration() {
        let r = recipe(STATIC);
        let s = network_script(&r);
        assert!(
            s.contains("\nstatic eth0 192.168.7.2/24 192.168.7.1 100 ||"),
            "{s}"
        );
        assert!(s.contains("\ndhcp eth1 ||"), "{s}");
        assert!(
            s.contains("cat > /run/resolv.conf <<'EOF'\nnameserver 192.168.7.1\nsearch lan\nEOF\n"),
            "{s}"
        );
        let lease = lease_script(&r);
        assert!(lease.contains("    eth1) metric=101 ;;"), "{lease}");
        assert!(
            !lease.contains("nameserver"),
            "the recipe's DNS wins: {lease}"
        );
        assert_eq!(hosts(&r).lines().nth(1), Some("127.0.1.1\tgw-1"),);
        let t = inittab(&r);
        let net = t.find("::wait:/etc/slate/network-up").unwrap();
        assert!(
            net < t.find("slate-agent boot").unwrap(),
            "network first:\n{t}"
        );
        for script in [s, lease] {
            let out = std::process::Command::new("sh")
                .args(["-n", "-c", &script])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn dhcp_dns_and_files() {
        let r = recipe("\n[[network.interface]]\nname = \"eth0\"\ndhcp = true\n");
        let lease = lease_script(&r);
        assert!(
            lease.contains("for d in $dns; do echo \"nameserver $d\"; done"),
            "{lease}"
        );
        assert!(lease.contains("search $domain"), "{lease}");
        let mut tree = Tree::new(meta(0o755, 0));
        add_files(&r, &mut tree, 0).unwrap();
        let link = tree.lookup(b"/etc/resolv.conf").unwrap();
        assert!(matches!(&tree.node(link).kind, NodeKind::Symlink(t) if t == b"/run/resolv.conf"));
        for p in [
            NETWORK_SCRIPT,
            LEASE_SCRIPT,
            "/etc/hosts",
            "/etc/nsswitch.conf",
        ] {
            assert!(tree.lookup(p.as_bytes()).is_some(), "{p}");
        }
    }

    #[test]
    fn state_file_lists_writable_paths() {
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJld8tjnakHlA8V8LnW//Z1AnHrwVJeagaSV5ElYeGZo me@host";
        let r = recipe(&format!(
            "\n[[network.interface]]\nname = \"eth0\"\ndhcp = true\n[debug]\nssh_authorized_keys = [\"{key}\"]\n[state]\nvar = \"data\"\nwritable = [\"/etc/app\", \"/etc/machine-id\"]\n"
        ));
        let mut tree = Tree::new(meta(0o755, 0));
        put_text(&mut tree, "/etc/machine-id", "x\n".into(), 0o644, 0).unwrap();
        add_files(&r, &mut tree, 0).unwrap();
        add_state(&r, &mut tree, 0).unwrap();
        let NodeKind::File(f) = &tree.node(tree.lookup(STATE_FILE.as_bytes()).unwrap()).kind else {
            panic!("no state file")
        };
        let crate::tree::DataSource::Bytes(b) = &f.source else {
            panic!("generated")
        };
        let text = String::from_utf8(b.to_vec()).unwrap();
        assert!(
            text.ends_with("data /var dir\ndata /etc/app dir\ndata /etc/machine-id file\ndata /etc/dropbear dir\n"),
            "{text}"
        );
        assert!(tree.lookup(b"/etc/app").is_some(), "created");
        let ak = tree.lookup(b"/root/.ssh/authorized_keys").unwrap();
        assert_eq!(tree.node(ak).meta.mode, 0o600);
        assert!(inittab(&r).contains("::respawn:/usr/sbin/dropbear -F -E -R -s -p 22\n"));
    }

    #[test]
    fn key_files_are_checked_line_by_line() {
        let good = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJld8tjnakHlA8V8LnW//Z1AnHrwVJeagaSV5ElYeGZo me@host";
        assert_eq!(
            key_file_lines(&format!("# team\n\n{good}\n")),
            Ok(vec![good])
        );
        let e = key_file_lines(&format!("{good}\nssh-ed25519 AAAA\n")).unwrap_err();
        assert_eq!(e.0, 2);
    }
}
