//! Real HTTP servers on 127.0.0.1 for tests: Debian's nginx (range
//! support, an access log of `$status $http_range $body_bytes_sent`) and
//! Python's http.server (no range support). Each is killed on drop.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nginx binary Debian installs.
pub const NGINX: &str = "/usr/sbin/nginx";

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16, child: &mut Child, what: &str) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(s)) = child.try_wait() {
            panic!("{what} exited ({s}) before listening on 127.0.0.1:{port}");
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{what} is not listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One line of the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// HTTP status.
    pub status: u16,
    /// The Range header ("-" when none).
    pub range: String,
    /// Body bytes sent.
    pub bytes: u64,
}

/// nginx serving a directory.
pub struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Serves `root` on a free port of 127.0.0.1.
    pub fn start(root: &Path) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        let conf = format!(
            "worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/error.log; user root;
events {{}}
http {{
  log_format delta '$status $http_range $body_bytes_sent';
  access_log {d}/access.log delta;
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};
  uwsgi_temp_path {d}; scgi_temp_path {d};
  keepalive_requests 100000;
  server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
",
            root = root.display()
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let mut child = Command::new(NGINX)
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting nginx");
        wait_listening(port, &mut child, "nginx");
        Nginx { child, port, dir }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT/name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    /// The access log so far (nginx writes each line when a request ends).
    pub fn log(&self) -> Vec<Access> {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        text.lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                assert_eq!(f.len(), 3, "access log line {l:?}");
                Access {
                    status: f[0].parse().unwrap(),
                    range: f[1].to_string(),
                    bytes: f[2].parse().unwrap(),
                }
            })
            .collect()
    }

    /// Empties the access log.
    pub fn clear_log(&self) {
        std::fs::write(self.log_path(), b"").unwrap();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Python's http.server, which ignores Range.
pub struct PyHttp {
    child: Child,
    port: u16,
}

impl PyHttp {
    /// Serves `root` on a free port of 127.0.0.1.
    pub fn start(root: &Path) -> PyHttp {
        let port = free_port();
        let mut child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting python3 -m http.server");
        wait_listening(port, &mut child, "http.server");
        PyHttp { child, port }
    }

    /// `http://127.0.0.1:PORT/name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for PyHttp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
