//! The guest's network: QEMU user networking (slirp) with `restrict=on`, so
//! the guest reaches nothing outside QEMU, and host forwards that listen on
//! 127.0.0.1 only (`--hostfwd tcp:127.0.0.1:2222-:22`), and guest forwards
//! that connect a slirp address to a 127.0.0.1 port on the host
//! (`--guestfwd tcp:10.0.2.100:80-127.0.0.1:8080`).

/// The only address a host forward may listen on.
pub const HOST_ADDRESS: &str = "127.0.0.1";

/// Transport of a forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// One host forward: connections to 127.0.0.1:`host_port` on the host go
/// to `guest_port` of the guest's DHCP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFwd {
    /// TCP or UDP.
    pub proto: Proto,
    /// Port on the host's 127.0.0.1.
    pub host_port: u16,
    /// Port in the guest.
    pub guest_port: u16,
}

impl std::str::FromStr for HostFwd {
    type Err = String;

    /// `[tcp|udp:][127.0.0.1]:HOSTPORT-[:]GUESTPORT`, QEMU's hostfwd syntax
    /// with the host address limited to 127.0.0.1 (an empty one, which QEMU
    /// would bind to every interface, means 127.0.0.1 here).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = || {
            format!(
                "{s:?}: expected [tcp|udp:]127.0.0.1:HOSTPORT-:GUESTPORT, e.g. tcp:127.0.0.1:2222-:22"
            )
        };
        let (host, guest) = s.split_once('-').ok_or_else(usage)?;
        let mut h: Vec<&str> = host.split(':').collect();
        let proto = match h.first() {
            Some(&"tcp") if h.len() == 3 => Proto::Tcp,
            Some(&"udp") if h.len() == 3 => Proto::Udp,
            _ if h.len() <= 2 => Proto::Tcp,
            _ => return Err(usage()),
        };
        if h.len() == 3 {
            h.remove(0);
        }
        let (addr, port) = match h.as_slice() {
            [addr, port] => (*addr, *port),
            [port] => ("", *port),
            _ => return Err(usage()),
        };
        if !addr.is_empty() && addr != HOST_ADDRESS {
            return Err(format!(
                "{s:?}: forwards listen on {HOST_ADDRESS} only, not {addr}"
            ));
        }
        let guest = guest.strip_prefix(':').unwrap_or(guest);
        if guest.contains(':') {
            return Err(format!(
                "{s:?}: the guest side is a port only (its DHCP address is used)"
            ));
        }
        let number = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(usage);
        Ok(HostFwd {
            proto,
            host_port: number(port)?,
            guest_port: number(guest)?,
        })
    }
}

impl std::fmt::Display for HostFwd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        write!(
            f,
            "{proto}:{HOST_ADDRESS}:{}-:{}",
            self.host_port, self.guest_port
        )
    }
}

/// The slirp address a guest forward uses when its text gives only ports.
pub const GUESTFWD_ADDRESS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 0, 2, 100);

/// One guest forward: TCP connections from the guest to
/// `guest_addr`:`guest_port` (an address inside slirp's 10.0.2.0/24) go to
/// 127.0.0.1:`host_port` on the host. QEMU's guestfwd is TCP only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestFwd {
    /// Address the guest connects to, in 10.0.2.0/24 but none of slirp's own.
    pub guest_addr: std::net::Ipv4Addr,
    /// Port the guest connects to.
    pub guest_port: u16,
    /// Port on the host's 127.0.0.1 that QEMU connects to.
    pub host_port: u16,
}

impl std::str::FromStr for GuestFwd {
    type Err = String;

    /// `[tcp:]GUESTADDR:GUESTPORT-127.0.0.1:HOSTPORT`, QEMU's guestfwd syntax
    /// limited to TCP and to a host address of 127.0.0.1, or the shorthand
    /// `GUESTPORT-HOSTPORT` for 10.0.2.100:GUESTPORT -> 127.0.0.1:HOSTPORT.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = || {
            format!(
                "{s:?}: expected [tcp:]10.0.2.X:GUESTPORT-127.0.0.1:HOSTPORT or \
                 GUESTPORT-HOSTPORT, e.g. tcp:10.0.2.100:80-127.0.0.1:8080"
            )
        };
        let body = match s.split_once(':') {
            Some(("tcp", rest)) => rest,
            Some((proto, _)) if !proto.contains('.') && proto.parse::<u16>().is_err() => {
                return Err(format!("{s:?}: guest forwards are TCP only, not {proto}"));
            }
            _ => s,
        };
        let (guest, host) = body.split_once('-').ok_or_else(usage)?;
        let number = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(usage);
        let (guest_addr, guest_port) = match guest.split_once(':') {
            Some((addr, port)) => {
                let addr: std::net::Ipv4Addr = addr.parse().map_err(|_| usage())?;
                (addr, number(port)?)
            }
            None => (GUESTFWD_ADDRESS, number(guest)?),
        };
        let host = host.strip_prefix("tcp:").unwrap_or(host);
        let host_port = match host.rsplit_once(':') {
            Some((addr, port)) if addr == HOST_ADDRESS => number(port)?,
            Some((addr, _)) => {
                return Err(format!(
                    "{s:?}: guest forwards connect to {HOST_ADDRESS} only, not {addr}"
                ));
            }
            None => number(host)?,
        };
        let [a, b, c, d] = guest_addr.octets();
        if [a, b, c] != [10, 0, 2] {
            return Err(format!(
                "{s:?}: the guest address must be inside slirp's 10.0.2.0/24, not {guest_addr}"
            ));
        }
        let reserved = match d {
            0 => Some("the network address"),
            2 => Some("slirp's gateway"),
            3 => Some("slirp's DNS server"),
            15 => Some("the guest's own DHCP address"),
            255 => Some("the broadcast address"),
            _ => None,
        };
        if let Some(what) = reserved {
            return Err(format!(
                "{s:?}: {guest_addr} is {what}; pick another 10.0.2.X"
            ));
        }
        Ok(GuestFwd {
            guest_addr,
            guest_port,
            host_port,
        })
    }
}

impl std::fmt::Display for GuestFwd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tcp:{}:{}-tcp:{HOST_ADDRESS}:{}",
            self.guest_addr, self.guest_port, self.host_port
        )
    }
}

/// A user-mode network card for the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserNet {
    /// Host forwards.
    pub hostfwd: Vec<HostFwd>,
    /// Guest forwards.
    pub guestfwd: Vec<GuestFwd>,
}

impl UserNet {
    /// QEMU arguments: a restricted slirp backend and a virtio NIC without
    /// an option ROM (the firmware then has no network boot to try).
    pub fn args(&self) -> [String; 4] {
        let mut netdev = String::from("user,id=net0,restrict=on");
        for f in &self.hostfwd {
            netdev.push_str(&format!(",hostfwd={f}"));
        }
        for f in &self.guestfwd {
            netdev.push_str(&format!(",guestfwd={f}"));
        }
        [
            "-netdev".into(),
            netdev,
            "-device".into(),
            "virtio-net-pci,netdev=net0,romfile=".into(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_bind_to_loopback_only() {
        for (text, want) in [
            ("tcp:127.0.0.1:2222-:22", "tcp:127.0.0.1:2222-:22"),
            ("tcp::2222-:22", "tcp:127.0.0.1:2222-:22"),
            ("2222-22", "tcp:127.0.0.1:2222-:22"),
            ("127.0.0.1:8080-:80", "tcp:127.0.0.1:8080-:80"),
            ("udp:127.0.0.1:5353-:53", "udp:127.0.0.1:5353-:53"),
        ] {
            let f: HostFwd = text.parse().unwrap();
            assert_eq!(f.to_string(), want, "{text}");
        }
        for bad in [
            "tcp:0.0.0.0:2222-:22",
            "tcp:192.168.1.5:2222-:22",
            "tcp:localhost:2222-:22",
            "tcp:127.0.0.1:2222-10.0.2.15:22",
            "tcp:127.0.0.1:2222",
            "sctp:127.0.0.1:1-:2",
            "tcp:127.0.0.1:0-:22",
            "tcp:127.0.0.1:70000-:22",
        ] {
            assert!(bad.parse::<HostFwd>().is_err(), "{bad} accepted");
        }
        let e = "tcp:0.0.0.0:1-:2".parse::<HostFwd>().unwrap_err();
        assert!(e.contains("127.0.0.1 only"), "{e}");
    }

    #[test]
    fn restricted_netdev() {
        let net = UserNet {
            hostfwd: vec![
                "2222-22".parse().unwrap(),
                "udp::5000-:5000".parse().unwrap(),
            ],
            guestfwd: vec!["80-8080".parse().unwrap()],
        };
        assert_eq!(
            net.args().join(" "),
            "-netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22,\
             hostfwd=udp:127.0.0.1:5000-:5000,guestfwd=tcp:10.0.2.100:80-tcp:127.0.0.1:8080 \
             -device virtio-net-pci,netdev=net0,romfile="
        );
    }

    #[test]
    fn guest_forwards_reach_loopback_only() {
        for (text, want) in [
            ("80-8080", "tcp:10.0.2.100:80-tcp:127.0.0.1:8080"),
            (
                "tcp:10.0.2.100:80-127.0.0.1:8080",
                "tcp:10.0.2.100:80-tcp:127.0.0.1:8080",
            ),
            (
                "tcp:10.0.2.100:80-tcp:127.0.0.1:8080",
                "tcp:10.0.2.100:80-tcp:127.0.0.1:8080",
            ),
            (
                "10.0.2.4:443-127.0.0.1:8443",
                "tcp:10.0.2.4:443-tcp:127.0.0.1:8443",
            ),
            ("10.0.2.100:80-8080", "tcp:10.0.2.100:80-tcp:127.0.0.1:8080"),
        ] {
            let f: GuestFwd = text.parse().unwrap();
            assert_eq!(f.to_string(), want, "{text}");
        }
        for bad in [
            "tcp:10.0.2.100:80-0.0.0.0:8080",
            "tcp:10.0.2.100:80-192.168.1.5:8080",
            "tcp:10.0.2.100:80-localhost:8080",
            "tcp:10.0.2.100:80-tcp:10.0.2.2:8080",
            "udp:10.0.2.100:53-127.0.0.1:5353",
            "tcp:10.0.3.100:80-127.0.0.1:8080",
            "tcp:192.168.0.1:80-127.0.0.1:8080",
            "tcp:10.0.2.2:80-127.0.0.1:8080",
            "tcp:10.0.2.3:53-127.0.0.1:5353",
            "tcp:10.0.2.15:80-127.0.0.1:8080",
            "tcp:10.0.2.255:80-127.0.0.1:8080",
            "tcp:10.0.2.100:80",
            "80-0",
            "0-8080",
            "80-70000",
            "10.0.2:80-8080",
        ] {
            assert!(bad.parse::<GuestFwd>().is_err(), "{bad} accepted");
        }
        let e = "10.0.2.100:80-0.0.0.0:1".parse::<GuestFwd>().unwrap_err();
        assert!(e.contains("127.0.0.1 only"), "{e}");
        let e = "udp:10.0.2.100:53-127.0.0.1:1"
            .parse::<GuestFwd>()
            .unwrap_err();
        assert!(e.contains("TCP only"), "{e}");
        let e = "10.0.2.2:80-8080".parse::<GuestFwd>().unwrap_err();
        assert!(e.contains("gateway"), "{e}");
    }
}
