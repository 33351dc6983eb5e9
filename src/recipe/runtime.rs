//! `[network]`, `[debug]` and `[state]`: how the running device is set up
//! (interfaces, hostname, DNS, NTP; an SSH server and a console shell for
//! debugging; writable `/var` and `/etc` paths). Raw forms and validation;
//! the files they turn into are written by `compose::runtime`.

use super::{Cx, Group, Lines, RecipeError, User};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::PathBuf;
use toml::Spanned;

/// The Debian package that provides the SSH server of `[debug]`.
pub const SSH_PACKAGE: &str = "dropbear-bin";
/// The Debian package that provides the NTP client of `[network] ntp`.
pub const NTP_PACKAGE: &str = "openntpd";
/// Drivers loaded when interfaces are declared and `network.modules` is not
/// set (those the kernel has): QEMU's and most clouds' NIC.
pub const DEFAULT_NET_MODULES: &[&str] = &["virtio_net"];
/// The account openntpd's unprivileged process runs as.
pub const NTP_USER: &str = "ntpd";
/// Its uid and gid (unless the recipe declares the account itself).
pub const NTP_UID: u32 = 990;
/// Where openntpd's unprivileged process is confined (its home: root's,
/// empty, not writable; the package's /var/lib/openntpd/run holds its socket).
pub const NTP_HOME: &str = "/var/empty";
/// The writable path dropbear keeps its host keys in.
pub const SSH_HOST_KEYS: &str = "/etc/dropbear";

/// `[network]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    pub hostname: Option<Spanned<String>>,
    #[serde(default)]
    pub interface: Vec<Spanned<RawInterface>>,
    #[serde(default)]
    pub dns: Vec<Spanned<String>>,
    #[serde(default)]
    pub search: Vec<Spanned<String>>,
    #[serde(default)]
    pub ntp: Vec<Spanned<String>>,
    pub modules: Option<Vec<Spanned<String>>>,
}

/// One `[[network.interface]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInterface {
    pub name: Spanned<String>,
    pub dhcp: Option<Spanned<bool>>,
    pub address: Option<Spanned<String>>,
    pub gateway: Option<Spanned<String>>,
}

/// `[debug]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDebug {
    #[serde(default)]
    pub ssh_authorized_keys: Vec<Spanned<String>>,
    pub console: Option<Spanned<bool>>,
}

/// `[state]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub var: Option<Spanned<String>>,
    #[serde(default)]
    pub writable: Vec<Spanned<String>>,
}

/// How an interface gets its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressing {
    /// DHCP (busybox udhcpc with slate's lease script).
    Dhcp,
    /// A fixed address.
    Static {
        /// The interface's address.
        address: IpAddr,
        /// Prefix length (`24` in `192.168.1.10/24`).
        prefix: u8,
        /// Default gateway through this interface.
        gateway: Option<IpAddr>,
    },
}

/// One `[[network.interface]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Kernel name, e.g. `eth0`.
    pub name: String,
    /// DHCP or static.
    pub addressing: Addressing,
}

/// `[network]`
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkSpec {
    /// Whether the recipe has a `[network]` section at all.
    pub declared: bool,
    /// Host name; `None` means the image name.
    pub hostname: Option<String>,
    /// Interfaces brought up at boot, in order.
    pub interfaces: Vec<Interface>,
    /// DNS servers; empty means those DHCP offers.
    pub dns: Vec<IpAddr>,
    /// DNS search domains.
    pub search: Vec<String>,
    /// NTP servers (names or addresses); empty means no NTP client.
    pub ntp: Vec<String>,
    /// NIC drivers the recipe names (loaded by the initramfs).
    pub modules: Vec<String>,
    /// Whether [`DEFAULT_NET_MODULES`] are added (interfaces declared,
    /// `modules` not set).
    pub default_modules: bool,
}

/// One `debug.ssh_authorized_keys` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizedKey {
    /// A public key line (`ssh-ed25519 AAAA... comment`).
    Line(String),
    /// A host file of such lines (relative to the recipe).
    File(PathBuf),
}

/// `[debug]`
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DebugSpec {
    /// Keys that may log in as root over SSH; non-empty starts dropbear.
    pub ssh_authorized_keys: Vec<AuthorizedKey>,
    /// A root shell on the kernel's console (`console=` in the command line).
    pub console: Option<String>,
}

/// Where `/var` lives at runtime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VarMode {
    /// Part of the read-only root (the default).
    #[default]
    ReadOnly,
    /// A tmpfs filled from the image at every boot.
    Tmpfs,
    /// `/data/state/var`, seeded from the image at the first boot.
    Data,
}

/// `[state]`
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateSpec {
    /// `/var`.
    pub var: VarMode,
    /// Paths below `/etc` bind-mounted from `/data/state/etc/...`, seeded
    /// from the image at the first boot; includes those `[debug]` needs.
    pub writable: Vec<String>,
}

impl DebugSpec {
    /// Whether the image runs an SSH server.
    pub fn ssh(&self) -> bool {
        !self.ssh_authorized_keys.is_empty()
    }
}

impl super::Recipe {
    /// The host name the device sets: `[network] hostname`, else the image name.
    pub fn hostname(&self) -> &str {
        self.network.hostname.as_deref().unwrap_or(&self.name)
    }

    /// Debian packages `[network]` and `[debug]` bring into the root
    /// filesystem besides `rootfs.packages`.
    pub fn runtime_packages(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.debug.ssh() {
            p.push(SSH_PACKAGE.to_string());
        }
        if !self.network.ntp.is_empty() {
            p.push(NTP_PACKAGE.to_string());
        }
        p.retain(|x| !self.rootfs.packages.contains(x));
        p
    }
}

impl Cx<'_> {
    /// `[network]`
    pub(super) fn network(
        &self,
        raw: Option<&RawNetwork>,
        lines: &mut Lines,
    ) -> Result<NetworkSpec, RecipeError> {
        let Some(raw) = raw else {
            return Ok(NetworkSpec::default());
        };
        let mut net = NetworkSpec {
            declared: true,
            ..NetworkSpec::default()
        };
        if let Some(h) = &raw.hostname {
            if !is_hostname(h.get_ref()) {
                return Err(self.field_err(
                    h,
                    "network.hostname",
                    "use 1-64 characters: labels of letters, digits and '-' separated by '.'",
                ));
            }
            lines.mark(self, "network.hostname", h.span());
            net.hostname = Some(h.get_ref().clone());
        }
        net.interfaces = self.interfaces(&raw.interface, lines)?;
        net.dns = self.dns(&raw.dns, lines)?;
        net.search = self.search(&raw.search)?;
        net.ntp = self.ntp(&raw.ntp, &net, lines)?;
        match &raw.modules {
            Some(m) => net.modules = self.module_names(m, "network.modules", lines)?,
            None => net.default_modules = !net.interfaces.is_empty(),
        }
        Ok(net)
    }

    fn interfaces(
        &self,
        raw: &[Spanned<RawInterface>],
        lines: &mut Lines,
    ) -> Result<Vec<Interface>, RecipeError> {
        let mut out: Vec<Interface> = Vec::new();
        for (i, s) in raw.iter().enumerate() {
            let field = format!("network.interface[{i}]");
            lines.mark(self, &format!("network.interface.{i}"), s.span());
            let r = s.get_ref();
            let name = r.name.get_ref();
            let ok = !name.is_empty()
                && name.len() <= 15
                && name != "lo"
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !ok {
                return Err(self.field_err(
                    &r.name,
                    &format!("{field}.name"),
                    "use 1-15 letters, digits, '-', '_' or '.' (not lo, which is always up)",
                ));
            }
            if out.iter().any(|x| &x.name == name) {
                return Err(self.field_err(
                    &r.name,
                    &format!("{field}.name"),
                    format!("duplicate interface {name:?}"),
                ));
            }
            let addressing = self.addressing(s, &field)?;
            out.push(Interface {
                name: name.clone(),
                addressing,
            });
        }
        Ok(out)
    }

    fn addressing(
        &self,
        s: &Spanned<RawInterface>,
        field: &str,
    ) -> Result<Addressing, RecipeError> {
        let r = s.get_ref();
        let dhcp = r.dhcp.as_ref().is_some_and(|d| *d.get_ref());
        match (dhcp, &r.address) {
            (true, Some(a)) => Err(self.field_err(
                a,
                &format!("{field}.address"),
                "set either dhcp = true or an address, not both",
            )),
            (true, None) => match &r.gateway {
                Some(g) => Err(self.field_err(
                    g,
                    &format!("{field}.gateway"),
                    "DHCP provides the gateway; set it only with a static address",
                )),
                None => Ok(Addressing::Dhcp),
            },
            (false, None) => Err(self.field_err(
                s,
                field,
                "set dhcp = true or a static address (e.g. address = \"192.168.1.10/24\")",
            )),
            (false, Some(a)) => {
                let (address, prefix) = parse_cidr(a.get_ref()).ok_or_else(|| {
                    self.field_err(
                        a,
                        &format!("{field}.address"),
                        format!(
                            "invalid address {:?} (expected ADDRESS/PREFIX, e.g. 192.168.1.10/24)",
                            a.get_ref()
                        ),
                    )
                })?;
                let gateway = match &r.gateway {
                    None => None,
                    Some(g) => Some(
                        g.get_ref()
                            .parse::<IpAddr>()
                            .ok()
                            .filter(|ip| ip.is_ipv4() == address.is_ipv4())
                            .ok_or_else(|| {
                                self.field_err(
                                    g,
                                    &format!("{field}.gateway"),
                                    format!(
                                        "invalid gateway {:?} (an address of the same family as {})",
                                        g.get_ref(),
                                        a.get_ref()
                                    ),
                                )
                            })?,
                    ),
                };
                Ok(Addressing::Static {
                    address,
                    prefix,
                    gateway,
                })
            }
        }
    }

    fn dns(&self, raw: &[Spanned<String>], lines: &mut Lines) -> Result<Vec<IpAddr>, RecipeError> {
        let mut out = Vec::new();
        for (i, d) in raw.iter().enumerate() {
            let field = format!("network.dns[{i}]");
            if i >= 3 {
                return Err(self.field_err(
                    d,
                    &field,
                    "at most 3 DNS servers (the C library reads no more)",
                ));
            }
            let ip = d.get_ref().parse::<IpAddr>().map_err(|_| {
                self.field_err(d, &field, format!("{:?} is not an IP address", d.get_ref()))
            })?;
            lines.mark(self, &format!("network.dns.{i}"), d.span());
            out.push(ip);
        }
        Ok(out)
    }

    fn search(&self, raw: &[Spanned<String>]) -> Result<Vec<String>, RecipeError> {
        let mut out = Vec::new();
        for (i, d) in raw.iter().enumerate() {
            let field = format!("network.search[{i}]");
            if i >= 6 {
                return Err(self.field_err(d, &field, "at most 6 search domains"));
            }
            if !is_domain(d.get_ref()) {
                return Err(self.field_err(
                    d,
                    &field,
                    format!("{:?} is not a domain name", d.get_ref()),
                ));
            }
            out.push(d.get_ref().clone());
        }
        Ok(out)
    }

    fn ntp(
        &self,
        raw: &[Spanned<String>],
        net: &NetworkSpec,
        lines: &mut Lines,
    ) -> Result<Vec<String>, RecipeError> {
        let mut out = Vec::new();
        for (i, s) in raw.iter().enumerate() {
            let v = s.get_ref();
            if v.parse::<IpAddr>().is_err() && !is_domain(v) {
                return Err(self.field_err(
                    s,
                    &format!("network.ntp[{i}]"),
                    format!("{v:?} is neither a host name nor an IP address"),
                ));
            }
            lines.mark(self, &format!("network.ntp.{i}"), s.span());
            out.push(v.clone());
        }
        if let (Some(first), true) = (raw.first(), net.interfaces.is_empty()) {
            return Err(self.field_err(
                first,
                "network.ntp",
                "needs a [[network.interface]] to reach the servers",
            ));
        }
        Ok(out)
    }

    /// Module names as `kernel.modules` takes them (`-` read as `_`).
    fn module_names(
        &self,
        raw: &[Spanned<String>],
        field: &str,
        lines: &mut Lines,
    ) -> Result<Vec<String>, RecipeError> {
        let mut out = Vec::new();
        for (i, m) in raw.iter().enumerate() {
            let ok = !m.get_ref().is_empty()
                && m.get_ref()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                return Err(self.field_err(m, &format!("{field}[{i}]"), "not a module name"));
            }
            lines.mark(self, &format!("{field}.{i}"), m.span());
            out.push(m.get_ref().replace('-', "_"));
        }
        Ok(out)
    }

    /// `[debug]`; `cmdline` is the kernel command line (the console shell
    /// runs on its `console=` device).
    pub(super) fn debug(
        &self,
        raw: Option<&Spanned<RawDebug>>,
        cmdline: &str,
        net: &NetworkSpec,
        lines: &mut Lines,
    ) -> Result<DebugSpec, RecipeError> {
        let Some(raw) = raw else {
            return Ok(DebugSpec::default());
        };
        let mut dbg = DebugSpec::default();
        for (i, k) in raw.get_ref().ssh_authorized_keys.iter().enumerate() {
            let field = format!("debug.ssh_authorized_keys[{i}]");
            lines.mark(self, &format!("debug.ssh_authorized_keys.{i}"), k.span());
            let v = k.get_ref().trim();
            let key = if looks_like_key(v) {
                check_key_line(v).map_err(|m| self.field_err(k, &field, m))?;
                AuthorizedKey::Line(v.to_string())
            } else if v.is_empty() {
                return Err(self.field_err(k, &field, "a public key line or a file of them"));
            } else {
                AuthorizedKey::File(PathBuf::from(v))
            };
            dbg.ssh_authorized_keys.push(key);
        }
        if let (Some(first), true) = (
            raw.get_ref().ssh_authorized_keys.first(),
            net.interfaces.is_empty(),
        ) {
            return Err(self.field_err(
                first,
                "debug.ssh_authorized_keys",
                "the SSH server needs a [[network.interface]] to be reached",
            ));
        }
        if let Some(c) = &raw.get_ref().console {
            lines.mark(self, "debug.console", c.span());
            if *c.get_ref() {
                let tty = console_tty(cmdline).ok_or_else(|| {
                    self.field_err(
                        c,
                        "debug.console",
                        "kernel.cmdline names no console= device (e.g. console=ttyS0) to put the shell on",
                    )
                })?;
                dbg.console = Some(tty);
            }
        }
        Ok(dbg)
    }

    /// `[state]`; `[debug]`'s SSH host keys and `[network]`'s NTP client
    /// add what they need.
    pub(super) fn state(
        &self,
        raw: &RawState,
        debug: &DebugSpec,
        ntp: Option<&Spanned<String>>,
        lines: &mut Lines,
    ) -> Result<StateSpec, RecipeError> {
        let mut st = StateSpec::default();
        if let Some(v) = &raw.var {
            lines.mark(self, "state.var", v.span());
            st.var = match v.get_ref().as_str() {
                "readonly" => VarMode::ReadOnly,
                "tmpfs" => VarMode::Tmpfs,
                "data" => VarMode::Data,
                other => {
                    return Err(self.field_err(
                        v,
                        "state.var",
                        format!("unknown {other:?} (readonly, tmpfs or data)"),
                    ));
                }
            };
        }
        for (i, w) in raw.writable.iter().enumerate() {
            let field = format!("state.writable[{i}]");
            lines.mark(self, &format!("state.writable.{i}"), w.span());
            let p = w.get_ref().trim_end_matches('/');
            check_writable(p).map_err(|m| self.field_err(w, &field, m))?;
            if let Some(o) = st.writable.iter().find(|o| nested(o, p)) {
                return Err(self.field_err(w, &field, format!("overlaps {o:?}")));
            }
            st.writable.push(p.to_string());
        }
        if debug.ssh() && !st.writable.iter().any(|o| nested(o, SSH_HOST_KEYS)) {
            st.writable.push(SSH_HOST_KEYS.to_string());
        }
        if let (Some(n), VarMode::ReadOnly) = (ntp, st.var) {
            return Err(self.field_err(
                n,
                "network.ntp",
                "openntpd keeps its drift file and socket below /var/lib/openntpd: \
                 set [state] var = \"tmpfs\" or \"data\"",
            ));
        }
        Ok(st)
    }

    /// The NTP client's account, added to the recipe's unless it declares
    /// one named [`NTP_USER`].
    pub(super) fn ntp_account(
        &self,
        ntp: Option<&Spanned<String>>,
        users: &mut Vec<User>,
        groups: &mut Vec<Group>,
    ) -> Result<(), RecipeError> {
        let Some(n) = ntp else { return Ok(()) };
        if users.iter().any(|u| u.name == NTP_USER) {
            return Ok(());
        }
        let taken = users.iter().any(|u| u.uid == NTP_UID)
            || groups
                .iter()
                .any(|g| g.gid == NTP_UID || g.name == NTP_USER);
        if taken {
            return Err(self.field_err(
                n,
                "network.ntp",
                format!(
                    "the NTP client's account {NTP_USER} (uid and gid {NTP_UID}) collides with a declared one: \
                     declare [[user]] name = \"{NTP_USER}\" yourself"
                ),
            ));
        }
        groups.push(Group {
            name: NTP_USER.into(),
            gid: NTP_UID,
            members: Vec::new(),
        });
        users.push(User {
            name: NTP_USER.into(),
            uid: NTP_UID,
            gid: NTP_UID,
            home: NTP_HOME.into(),
            shell: "/sbin/nologin".into(),
        });
        Ok(())
    }
}

/// A writable path: absolute, below `/etc`, not slate's own or generated files.
fn check_writable(p: &str) -> Result<(), String> {
    let rest = p.strip_prefix("/etc/").filter(|r| !r.is_empty());
    let Some(rest) = rest else {
        return Err(
            "must be a path below /etc/ ([state] var covers /var; keep other state on /data)"
                .into(),
        );
    };
    if rest
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
        || p.contains(char::is_whitespace)
    {
        return Err("must be a plain absolute path (no '..', '//' or spaces)".into());
    }
    let first = rest.split('/').next().unwrap_or_default();
    if ["slate", "inittab", "resolv.conf", "hostname"].contains(&first) {
        return Err(format!(
            "/etc/{first} is slate's (generated at build or boot time) and cannot be made writable"
        ));
    }
    Ok(())
}

/// Whether one of two paths is the other or below it.
fn nested(a: &str, b: &str) -> bool {
    let below = |x: &str, y: &str| x.strip_prefix(y).is_some_and(|r| r.starts_with('/'));
    a == b || below(a, b) || below(b, a)
}

/// `addr/prefix`, IPv4 or IPv6.
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (a, p) = s.split_once('/')?;
    let address: IpAddr = a.parse().ok()?;
    let prefix: u8 = p.parse().ok()?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    (prefix <= max && !p.starts_with('+')).then_some((address, prefix))
}

/// The device of the last `console=` on a kernel command line
/// (`console=ttyS0,115200n8` -> `ttyS0`).
pub fn console_tty(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("console="))
        .next_back()
        .map(|v| v.split(',').next().unwrap_or_default().to_string())
        .filter(|t| {
            !t.is_empty()
                && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '/')
                && !t.contains("//")
        })
}

fn is_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && !l.starts_with('-')
        && !l.ends_with('-')
        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// RFC 1123 host name of at most 64 bytes (the kernel's limit).
fn is_hostname(s: &str) -> bool {
    s.len() <= 64 && s.split('.').all(is_label)
}

fn is_domain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

/// Key types dropbear (2022.83) accepts in `authorized_keys`.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Whether a `ssh_authorized_keys` entry is a key line: it has a space
/// (`TYPE DATA [COMMENT]`); anything else names a file.
fn looks_like_key(s: &str) -> bool {
    s.contains(char::is_whitespace)
}

/// Checks one `authorized_keys` line: a known type, then base64 of a key
/// blob that names the same type, then an optional comment.
pub fn check_key_line(line: &str) -> Result<(), String> {
    let mut words = line.split_whitespace();
    let kind = words.next().unwrap_or_default();
    if !KEY_TYPES.contains(&kind) {
        return Err(format!(
            "unsupported key type {kind:?} (dropbear takes {})",
            KEY_TYPES.join(", ")
        ));
    }
    let blob = words
        .next()
        .and_then(base64_decode)
        .ok_or_else(|| format!("{kind} key: the key data is not valid base64"))?;
    let named = blob
        .get(..4)
        .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
        .and_then(|n| blob.get(4..4 + n));
    if named != Some(kind.as_bytes()) {
        return Err(format!(
            "{kind} key: the key data is not a {kind} public key"
        ));
    }
    Ok(())
}

/// Standard base64 with padding; `None` on anything else.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if s.is_empty() || s.len() % 4 != 0 {
        return None;
    }
    let body = s.trim_end_matches('=');
    if s.len() - body.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in body.bytes() {
        let v = ALPHA.iter().position(|a| *a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_console_and_names() {
        assert_eq!(
            parse_cidr("192.168.1.10/24"),
            Some(("192.168.1.10".parse().unwrap(), 24))
        );
        assert_eq!(parse_cidr("fd00::5/64").map(|x| x.1), Some(64));
        for bad in [
            "192.168.1.10",
            "192.168.1.10/33",
            "1.2.3/8",
            "::1/129",
            "1.2.3.4/+8",
        ] {
            assert_eq!(parse_cidr(bad), None, "{bad}");
        }
        assert_eq!(
            console_tty("quiet console=tty0 console=ttyS0,115200n8").as_deref(),
            Some("ttyS0")
        );
        assert_eq!(console_tty("quiet"), None);
        assert!(is_hostname("edge-1.lan") && !is_hostname("-x") && !is_hostname("a_b"));
        assert!(nested("/etc/a", "/etc/a/b") && !nested("/etc/ab", "/etc/a"));
    }

    #[test]
    fn key_lines() {
        // ssh-keygen -t ed25519 output (a throwaway key).
        let good = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJld8tjnakHlA8V8LnW//Z1AnHrwVJeagaSV5ElYeGZo me@host";
        assert_eq!(check_key_line(good), Ok(()));
        assert!(
            check_key_line("ssh-dss AAAA")
                .unwrap_err()
                .contains("unsupported")
        );
        assert!(
            check_key_line("ssh-ed25519 !!!!")
                .unwrap_err()
                .contains("base64")
        );
        // An RSA blob labelled ed25519.
        let e = check_key_line("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQAB").unwrap_err();
        assert!(e.contains("not a ssh-ed25519 public key"), "{e}");
        assert_eq!(base64_decode("aGk="), Some(b"hi".to_vec()));
        assert_eq!(base64_decode("aGk"), None);
    }
}

#[cfg(test)]
mod recipe_tests {
    use super::super::{Recipe, RecipeError};
    use super::*;
    use std::path::Path;

    const BASE: &str = r#"[image]
name = "edge"
version = "1.0"

[kernel]
package = "linux-image-cloud-amd64"
cmdline = "console=ttyS0,115200 quiet"
"#;
    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJld8tjnakHlA8V8LnW//Z1AnHrwVJeagaSV5ElYeGZo me@host";

    fn parse(extra: &str) -> Result<Recipe, RecipeError> {
        Recipe::parse(Path::new("r/t.toml"), &format!("{BASE}{extra}"))
    }

    fn err(extra: &str) -> String {
        parse(extra).unwrap_err().to_string()
    }

    #[test]
    fn defaults_change_nothing() {
        let r = parse("").unwrap();
        assert!(!r.network.declared && r.network.interfaces.is_empty());
        assert_eq!(r.hostname(), "edge");
        assert_eq!(r.state, StateSpec::default());
        assert!(!r.debug.ssh() && r.debug.console.is_none());
        assert!(r.runtime_packages().is_empty());
    }

    #[test]
    fn a_full_runtime_setup() {
        let r = parse(&format!(
            r#"
[network]
hostname = "edge-1"
dns = ["10.0.2.3", "fd00::3"]
search = ["lan"]
ntp = ["pool.ntp.org", "192.168.1.1"]

[[network.interface]]
name = "eth0"
dhcp = true

[[network.interface]]
name = "eth1"
address = "192.168.7.2/24"
gateway = "192.168.7.1"

[debug]
ssh_authorized_keys = ["{KEY}", "keys/team.pub"]
console = true

[state]
var = "data"
writable = ["/etc/app/"]
"#
        ))
        .unwrap();
        assert_eq!(r.hostname(), "edge-1");
        assert_eq!(r.network.interfaces[0].addressing, Addressing::Dhcp);
        assert_eq!(
            r.network.interfaces[1].addressing,
            Addressing::Static {
                address: "192.168.7.2".parse().unwrap(),
                prefix: 24,
                gateway: Some("192.168.7.1".parse().unwrap()),
            }
        );
        assert!(r.network.default_modules && r.network.modules.is_empty());
        assert_eq!(r.debug.console.as_deref(), Some("ttyS0"));
        assert_eq!(
            r.debug.ssh_authorized_keys[1],
            AuthorizedKey::File("keys/team.pub".into())
        );
        assert_eq!(r.state.var, VarMode::Data);
        let r2 = parse("\n[[network.interface]]\nname = \"eth0\"\ndhcp = true\n[debug]\nssh_authorized_keys = [\"ssh-keys/a.pub\"]\n").unwrap();
        assert_eq!(
            r2.debug.ssh_authorized_keys,
            [AuthorizedKey::File("ssh-keys/a.pub".into())]
        );
        assert_eq!(r.state.writable, ["/etc/app", SSH_HOST_KEYS]);
        assert_eq!(r.runtime_packages(), [SSH_PACKAGE, NTP_PACKAGE]);
        let ntpd = r.users.iter().find(|u| u.name == NTP_USER).unwrap();
        assert_eq!((ntpd.uid, ntpd.home.as_str()), (NTP_UID, NTP_HOME));
        assert_eq!(r.location("debug.ssh_authorized_keys.1"), "r/t.toml:25");
    }

    #[test]
    fn every_key_names_file_line_and_field() {
        let eth0 = "[[network.interface]]\nname = \"eth0\"\ndhcp = true\n";
        let cases = [
            (
                "[network]\nhostname = \"a_b\"",
                "r/t.toml:10: network.hostname: use",
            ),
            (
                "[network]\nmtu = 1500",
                "r/t.toml:10: network.mtu: unknown field",
            ),
            (
                "[network]\ndns = [\"x\"]",
                "r/t.toml:10: network.dns[0]: \"x\" is not an IP",
            ),
            (
                "[network]\ndns = [\"1.1.1.1\", \"1.1.1.2\", \"1.1.1.3\", \"1.1.1.4\"]",
                "r/t.toml:10: network.dns[3]: at most 3",
            ),
            (
                "[network]\nsearch = [\"-x\"]",
                "r/t.toml:10: network.search[0]: \"-x\" is not a domain",
            ),
            (
                "[network]\nntp = [\"pool.ntp.org\"]",
                "r/t.toml:10: network.ntp: needs a [[network.interface]]",
            ),
            (
                &format!("[network]\nntp = [\"pool.ntp.org\"]\n{eth0}"),
                "r/t.toml:10: network.ntp: openntpd keeps",
            ),
            (
                &format!("[network]\nntp = [\"a b\"]\n{eth0}"),
                "r/t.toml:10: network.ntp[0]: \"a b\" is neither",
            ),
            (
                &format!("[network]\nmodules = [\"e/1000\"]\n{eth0}"),
                "r/t.toml:10: network.modules[0]: not a module",
            ),
            (
                "[[network.interface]]\nname = \"lo\"\ndhcp = true",
                "r/t.toml:10: network.interface[0].name: use",
            ),
            (
                &format!("{eth0}{eth0}"),
                "r/t.toml:13: network.interface[1].name: duplicate interface \"eth0\"",
            ),
            (
                "[[network.interface]]\nname = \"eth0\"",
                "r/t.toml:9: network.interface[0]: set dhcp = true or a static",
            ),
            (
                "[[network.interface]]\nname = \"eth0\"\ndhcp = true\naddress = \"10.0.0.2/8\"",
                "r/t.toml:12: network.interface[0].address: set either",
            ),
            (
                "[[network.interface]]\nname = \"eth0\"\naddress = \"10.0.0.2\"",
                "r/t.toml:11: network.interface[0].address: invalid address \"10.0.0.2\"",
            ),
            (
                "[[network.interface]]\nname = \"eth0\"\naddress = \"10.0.0.2/8\"\ngateway = \"fd00::1\"",
                "r/t.toml:12: network.interface[0].gateway: invalid gateway",
            ),
            (
                "[[network.interface]]\nname = \"eth0\"\ndhcp = true\ngateway = \"10.0.0.1\"",
                "r/t.toml:12: network.interface[0].gateway: DHCP provides",
            ),
            (
                "[[network.interface]]\nname = \"eth0\"\ndhcp = \"yes\"",
                "r/t.toml:11: network.interface[0].dhcp: invalid type",
            ),
            (
                &format!("[debug]\nssh_authorized_keys = [\"{KEY}\"]"),
                "r/t.toml:10: debug.ssh_authorized_keys: the SSH server needs",
            ),
            (
                &format!("{eth0}[debug]\nssh_authorized_keys = [\"ssh-ed25519 AAAA\"]"),
                "r/t.toml:13: debug.ssh_authorized_keys[0]: ssh-ed25519 key: the key data",
            ),
            (
                &format!("{eth0}[debug]\nssh_authorized_keys = [\"ssh-dss AAAA\"]"),
                "r/t.toml:13: debug.ssh_authorized_keys[0]: unsupported key type",
            ),
            (
                "[debug]\nconsole = 1",
                "r/t.toml:10: debug.console: invalid type",
            ),
            (
                "[debug]\nshell = true",
                "r/t.toml:10: debug.shell: unknown field",
            ),
            (
                "[state]\nvar = \"disk\"",
                "r/t.toml:10: state.var: unknown \"disk\"",
            ),
            (
                "[state]\nwritable = [\"/var/lib/x\"]",
                "r/t.toml:10: state.writable[0]: must be a path below /etc/",
            ),
            (
                "[state]\nwritable = [\"/etc\"]",
                "r/t.toml:10: state.writable[0]: must be a path below /etc/",
            ),
            (
                "[state]\nwritable = [\"/etc/slate/x\"]",
                "r/t.toml:10: state.writable[0]: /etc/slate is slate's",
            ),
            (
                "[state]\nwritable = [\"/etc/../x\"]",
                "r/t.toml:10: state.writable[0]: must be a plain",
            ),
            (
                "[state]\nwritable = [\"/etc/a\", \"/etc/a/b\"]",
                "r/t.toml:10: state.writable[1]: overlaps \"/etc/a\"",
            ),
        ];
        let wrong: Vec<String> = cases
            .iter()
            .map(|(extra, want)| (err(&format!("\n{extra}\n")), want))
            .filter(|(e, want)| !e.starts_with(*want))
            .map(|(e, want)| format!("  got:  {e}\n  want: {want}"))
            .collect();
        assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    }

    #[test]
    fn console_needs_a_console_device() {
        let text =
            format!("{BASE}\n[debug]\nconsole = true\n").replace("console=ttyS0,115200 ", "");
        let e = Recipe::parse(Path::new("r/t.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("r/t.toml:10: debug.console: kernel.cmdline names no console="),
            "{e}"
        );
        assert!(
            parse("\n[debug]\nconsole = false\n")
                .unwrap()
                .debug
                .console
                .is_none()
        );
    }

    #[test]
    fn ntp_account_collisions() {
        let net = "[network]\nntp = [\"10.0.0.1\"]\n[[network.interface]]\nname = \"eth0\"\ndhcp = true\n[state]\nvar = \"tmpfs\"\n";
        let e = err(&format!("\n{net}[[user]]\nname = \"app\"\nuid = 990\n"));
        assert!(
            e.starts_with("r/t.toml:10: network.ntp: the NTP client's account ntpd"),
            "{e}"
        );
        let r = parse(&format!("\n{net}[[user]]\nname = \"ntpd\"\nuid = 500\n")).unwrap();
        assert_eq!(r.users.iter().filter(|u| u.name == "ntpd").count(), 1);
        assert_eq!(r.users[0].uid, 500, "the declared account is kept");
    }
}
