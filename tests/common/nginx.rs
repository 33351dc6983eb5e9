//! Debian's nginx on 127.0.0.1 as a test's HTTP server: real Range support,
//! and an access log that records, for each request, the status, the Range
//! header and the body bytes sent (`log_format delta`), so tests can count
//! what a client really downloaded.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nginx binary the harness runs.
pub const NGINX: &str = "/usr/sbin/nginx";

/// One access-log line: status, the Range header ("" without one) and the
/// body bytes sent.
pub type LogLine = (u16, String, u64);

/// A running nginx serving a directory on 127.0.0.1; killed on drop.
pub struct Nginx {
    child: Child,
    port: u16,
    prefix: tempfile::TempDir,
}

impl Nginx {
    /// Whether nginx is installed; records a skip for `test` when not.
    pub fn available(test: &str) -> bool {
        let ok = Path::new(NGINX).is_file();
        if !ok {
            super::skipped(
                test,
                &format!("{NGINX} is not installed (Debian package nginx)"),
            );
        }
        ok
    }

    /// Starts nginx serving `root` on a free port of 127.0.0.1 and waits
    /// until it accepts connections.
    pub fn start(root: &Path) -> Nginx {
        let prefix = tempfile::Builder::new()
            .prefix("slate-nginx.")
            .tempdir()
            .expect("creating the nginx prefix directory");
        let port = super::free_port();
        let p = prefix.path();
        // Running as root, nginx would switch its workers to nobody, who
        // cannot read a private temp dir.
        let user = if super::is_root() { "user root;" } else { "" };
        let conf = format!(
            r#"{user}
worker_processes 1;
pid {pid};
error_log {error} info;
events {{ worker_connections 64; }}
http {{
    log_format delta '$status $http_range $body_bytes_sent';
    access_log {access} delta;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"#,
            pid = p.join("nginx.pid").display(),
            error = p.join("error.log").display(),
            access = p.join("access.log").display(),
            tmp = p.display(),
            root = root.display(),
        );
        let conf_path = p.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("writing nginx.conf");
        let mut child = Command::new(NGINX)
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(p)
            .arg("-e")
            .arg(p.join("error.log"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .spawn()
            .expect("starting nginx");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            let exited = child.try_wait().expect("waiting for nginx");
            if exited.is_some() || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(p.join("error.log")).unwrap_or_default();
                panic!("nginx did not start on 127.0.0.1:{port} ({exited:?}): {log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx {
            child,
            port,
            prefix,
        }
    }

    /// The port it listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host-side URL of `name` under the served root.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    fn access_log(&self) -> PathBuf {
        self.prefix.path().join("access.log")
    }

    /// Every request logged so far, oldest first.
    pub fn log_lines(&self) -> Vec<LogLine> {
        let text = std::fs::read_to_string(self.access_log()).unwrap_or_default();
        text.lines().map(parse_line).collect()
    }

    /// Forgets the requests logged so far (nginx appends to the emptied file).
    pub fn clear_log(&self) {
        std::fs::write(self.access_log(), b"").expect("emptying nginx's access log");
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses `STATUS RANGE BYTES`; RANGE may hold spaces and is "-" when the
/// request had none.
fn parse_line(line: &str) -> LogLine {
    let parse = || -> Option<LogLine> {
        let (status, rest) = line.split_once(' ')?;
        let (range, bytes) = rest.rsplit_once(' ')?;
        let range = if range == "-" { "" } else { range };
        Some((status.parse().ok()?, range.to_string(), bytes.parse().ok()?))
    };
    parse().unwrap_or_else(|| panic!("unexpected nginx access-log line {line:?}"))
}
