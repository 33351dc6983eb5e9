//! Python's http.server on 127.0.0.1: a real HTTP server without Range
//! support (it answers every GET with 200 and the whole file).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// Python's http.server, which ignores Range.
pub struct PyHttp {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl PyHttp {
    /// Serves `root` on a free port of 127.0.0.1.
    pub fn start(root: &Path) -> PyHttp {
        Self::start_on(root, super::free_port())
    }

    /// Serves `root` on `port` of 127.0.0.1 (a server that comes back where
    /// an earlier one was).
    pub fn start_on(root: &Path, port: u16) -> PyHttp {
        let log = tempfile::NamedTempFile::new().expect("creating the http.server log");
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
            .stderr(log.reopen().expect("reopening the http.server log"))
            .spawn()
            .expect("starting python3 -m http.server");
        wait_listening(port, &mut child, "http.server");
        PyHttp { child, port, log }
    }

    /// The requests served so far, as `(request line, status)`, from the
    /// server's own log (`"GET /x HTTP/1.1" 200 -`).
    pub fn requests(&self) -> Vec<(String, u16)> {
        let text = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let (_, rest) = l.split_once('"')?;
                let (request, tail) = rest.split_once('"')?;
                let status = tail.split_whitespace().next()?.parse().ok()?;
                Some((request.to_string(), status))
            })
            .collect()
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
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
