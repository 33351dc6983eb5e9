//! Bundles streamed over HTTP (ureq) against a server on 127.0.0.1: the
//! installer's network path, exercised host-side with `slate extract`.

mod images;

use images::{keygen, sha256sum, slate};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

/// A build directory with a rootfs of mixed data and a hole.
fn build_dir(dir: &Path) -> PathBuf {
    let b = dir.join("build");
    std::fs::create_dir_all(&b).unwrap();
    let mut rootfs: Vec<u8> = (0..(3u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    rootfs.extend(std::iter::repeat_n(0u8, 2 << 20));
    rootfs.extend(b"end of the root filesystem");
    let files = [
        ("rootfs", "rootfs.ext4", rootfs),
        ("kernel", "vmlinuz", b"kernel".to_vec()),
        ("initrd", "initrd.img", b"initrd".to_vec()),
        ("boot", "boot.json", b"{}".to_vec()),
    ];
    let mut artifacts = Vec::new();
    for (name, file, bytes) in files {
        std::fs::write(b.join(file), &bytes).unwrap();
        artifacts.push(slate::build_manifest::Artifact {
            name: name.into(),
            file: file.into(),
            size: bytes.len() as u64,
            sha256: slate::io::hash::hex(&slate::io::hash::sha256_reader(&bytes[..]).unwrap().0),
            verity: None,
        });
    }
    let m = slate::build_manifest::BuildManifest {
        format: slate::build_manifest::FORMAT,
        name: "http".into(),
        version: "2.0.0".into(),
        compatible: "test".into(),
        security_version: 1,
        source_date_epoch: 0,
        artifacts,
        disk: None,
        layout: None,
        packages: vec![],
    };
    std::fs::write(b.join("manifest.json"), m.to_json()).unwrap();
    b
}

/// Serves `file` to every request; with `cut`, sends only that many bytes
/// of the body (but announces the full length) and hangs up.
fn serve(file: PathBuf, cut: Option<u64>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            // Request line and headers.
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line == "\r\n" || line == "\n" {
                    break;
                }
                line.clear();
            }
            let bytes = std::fs::read(&file).unwrap();
            let header = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                bytes.len()
            );
            let _ = stream.write_all(header.as_bytes());
            let body = match cut {
                Some(n) => &bytes[..n as usize],
                None => &bytes[..],
            };
            // Small writes: the client must really stream.
            for chunk in body.chunks(64 << 10) {
                if stream.write_all(chunk).is_err() {
                    break;
                }
            }
            let _ = stream.flush();
            let mut sink = Vec::new();
            let _ = stream.take(0).read_to_end(&mut sink);
        }
    });
    port
}

/// `slate extract http://127.0.0.1:PORT/b.slate --pubkey PUB -o OUT`.
fn extract(port: u16, public: &Path, out: &Path) -> std::process::Output {
    slate()
        .arg("extract")
        .arg(format!("http://127.0.0.1:{port}/b.slate"))
        .arg("--pubkey")
        .arg(public)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn extract_streams_a_bundle_over_http() {
    let d = tempfile::tempdir().unwrap();
    let (key, public) = keygen(d.path(), "k");
    let build = build_dir(d.path());
    let bundle = d.path().join("b.slate");
    images::bundle(&build, &key, &bundle);

    let port = serve(bundle.clone(), None);
    let out = d.path().join("rootfs.out");
    let res = extract(port, &public, &out);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(sha256sum(&out), sha256sum(&build.join("rootfs.ext4")));

    // A connection cut in the middle: a clear error and no output file.
    let len = std::fs::metadata(&bundle).unwrap().len();
    let port = serve(bundle, Some(len / 2));
    let out = d.path().join("cut.out");
    let res = extract(port, &public, &out);
    assert!(!res.status.success());
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(stderr.contains("127.0.0.1"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!out.exists(), "a partial output was left behind");
    let leftovers = std::fs::read_dir(d.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".cut.out"))
        .count();
    assert_eq!(leftovers, 0);
}

#[test]
fn extract_refuses_an_untrusted_bundle_from_a_url() {
    let d = tempfile::tempdir().unwrap();
    let (key, _) = keygen(d.path(), "signer");
    let (_, other_public) = keygen(d.path(), "other");
    let build = build_dir(d.path());
    let bundle = d.path().join("b.slate");
    images::bundle(&build, &key, &bundle);
    let port = serve(bundle, None);
    let res = extract(port, &other_public, &d.path().join("x"));
    assert!(!res.status.success());
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(stderr.contains("trusted key"), "{stderr}");
    assert!(!d.path().join("x").exists());
}

/// Accepts connections and, after `head` bytes of the response (0: not even
/// the status line), sends nothing more while keeping the socket open.
fn serve_stalling(file: PathBuf, head: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let bytes = std::fs::read(&file).unwrap();
            let mut response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                bytes.len()
            )
            .into_bytes();
            response.extend_from_slice(&bytes);
            let _ = stream.write_all(&response[..head.min(response.len())]);
            let _ = stream.flush();
            open.push(stream);
        }
    });
    port
}

/// Runs `cmd`, failing the test if it has not exited after `limit` (it
/// would hang forever without the fix; this is a bound, not a benchmark).
fn output_within(
    cmd: &mut std::process::Command,
    limit: std::time::Duration,
) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("still running after {limit:?}: a stalled server held it");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// Issue 9: a server that stops sending (before the response, or in the
/// middle of the body) cannot hold an install: the read timeout ends it
/// with one clear line and no output.
#[test]
fn a_stalled_server_times_out() {
    let d = tempfile::tempdir().unwrap();
    let (key, public) = keygen(d.path(), "k");
    let build = build_dir(d.path());
    let bundle = d.path().join("b.slate");
    images::bundle(&build, &key, &bundle);
    let len = std::fs::metadata(&bundle).unwrap().len() as usize;
    for head in [0, len / 2] {
        let port = serve_stalling(bundle.clone(), head);
        let out = d.path().join(format!("stalled-{head}.out"));
        let mut cmd = slate();
        cmd.env("SLATE_HTTP_READ_TIMEOUT", "2")
            .arg("extract")
            .arg(format!("http://127.0.0.1:{port}/b.slate"))
            .arg("--pubkey")
            .arg(&public)
            .arg("-o")
            .arg(&out);
        let res = output_within(&mut cmd, std::time::Duration::from_secs(120));
        assert!(!res.status.success(), "stall after {head} bytes succeeded");
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert!(stderr.contains("127.0.0.1"), "{stderr}");
        assert!(
            stderr.to_lowercase().contains("timeout") || stderr.contains("timed out"),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!out.exists());
    }
}
