//! Delta downloads against real HTTP servers on 127.0.0.1 (issue 12): what
//! `slate diff` predicts is what `slate extract --seed` reports and what
//! nginx's access log says it sent, and the written artifact is the signed
//! one. Python's http.server (no Range support) and a server that answers
//! ranges wrongly make extract fall back to streaming the whole bundle.

mod images;

use images::shared::nginx::Nginx;
use images::shared::pyhttp::PyHttp;
use images::shared::{documented_json_fields, json_fields};
use images::{keygen, run_ok, slate};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Deterministic pseudo-random bytes.
fn noise(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A build directory whose rootfs is `rootfs`.
fn build_dir(dir: &Path, name: &str, rootfs: &[u8], kernel: &[u8]) -> PathBuf {
    let b = dir.join(name);
    std::fs::create_dir_all(&b).unwrap();
    let files = [
        ("rootfs", "rootfs.ext4", rootfs.to_vec()),
        ("kernel", "vmlinuz", kernel.to_vec()),
        ("initrd", "initrd.img", noise(7, 300_000)),
        ("boot", "boot.json", b"{}".to_vec()),
    ];
    let mut artifacts = Vec::new();
    for (role, file, bytes) in files {
        std::fs::write(b.join(file), &bytes).unwrap();
        artifacts.push(slate::build_manifest::Artifact {
            name: role.into(),
            file: file.into(),
            size: bytes.len() as u64,
            sha256: slate::io::hash::hex(&slate::io::hash::sha256_reader(&bytes[..]).unwrap().0),
            verity: None,
        });
    }
    let m = slate::build_manifest::BuildManifest {
        format: slate::build_manifest::FORMAT,
        name: "delta".into(),
        version: name.into(),
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

fn bundle(build: &Path, key: &Path, out: &Path, chunk: &str) -> PathBuf {
    run_ok(
        slate()
            .arg("bundle")
            .arg(build)
            .arg("--key")
            .arg(key)
            .arg("--chunk-size")
            .arg(chunk)
            .arg("-o")
            .arg(out),
    );
    out.to_path_buf()
}

fn json(out: std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    })
}

fn diff(old: &Path, new: &Path, artifact: &str) -> Value {
    json(
        slate()
            .arg("diff")
            .arg(old)
            .arg(new)
            .args(["--artifact", artifact, "--json"])
            .output()
            .unwrap(),
    )
}

fn extract(
    url: &str,
    key: &Path,
    seeds: &[PathBuf],
    artifact: &str,
    out: &Path,
) -> (Value, String) {
    let mut c = slate();
    c.arg("extract")
        .arg(url)
        .arg("--pubkey")
        .arg(key)
        .args(["--artifact", artifact, "--json", "-o"])
        .arg(out);
    for s in seeds {
        c.arg("--seed").arg(s);
    }
    let o = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    (json(o), stderr)
}

const COUNTS: [&str; 4] = ["downloaded", "requests", "reused", "holes"];

/// Extracts `artifact` of `bundle` through nginx with `old`'s files as
/// seeds and checks prediction == report == access log, and the output.
fn check_pair(
    nginx: &Nginx,
    www: &Path,
    old: &Path,
    new: &Path,
    bundle: &Path,
    artifact: &str,
) -> Value {
    let seeds: Vec<PathBuf> = if old.is_dir() {
        ["rootfs.ext4", "vmlinuz", "initrd.img"]
            .iter()
            .map(|f| old.join(f))
            .collect()
    } else {
        vec![old.to_path_buf()]
    };
    check_seeds(nginx, www, old, &seeds, new, bundle, artifact)
}

/// [`check_pair`] with explicit seed files for the extract.
fn check_seeds(
    nginx: &Nginx,
    www: &Path,
    old: &Path,
    seeds: &[PathBuf],
    new: &Path,
    bundle: &Path,
    artifact: &str,
) -> Value {
    let file = match artifact {
        "rootfs" => "rootfs.ext4",
        "kernel" => "vmlinuz",
        _ => "initrd.img",
    };
    let name = bundle.file_name().unwrap().to_str().unwrap();
    std::fs::copy(bundle, www.join(name)).unwrap();
    let predicted = diff(old, bundle, artifact);
    assert_eq!(
        json_fields(&predicted),
        documented_json_fields("diff"),
        "{predicted}"
    );
    nginx.clear_log();
    let out = www.join(format!("{name}.{artifact}.out"));
    let (actual, stderr) = extract(&nginx.url(name), &nginx_key(www), seeds, artifact, &out);
    assert_eq!(actual["fallback"], false, "{stderr}");
    assert_eq!(
        json_fields(&actual),
        documented_json_fields("extract"),
        "{actual}"
    );
    for k in COUNTS {
        assert_eq!(
            actual[k], predicted[k],
            "{k}: extract {actual} vs diff {predicted}"
        );
    }
    let log = nginx.log_lines();
    assert!(log.iter().all(|a| a.0 == 206), "{log:?}");
    let sent: u64 = log.iter().map(|a| a.2).sum();
    assert_eq!(sent, predicted["downloaded"].as_u64().unwrap(), "{log:?}");
    assert_eq!(
        log.len() as u64,
        predicted["requests"].as_u64().unwrap(),
        "{log:?}"
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(new.join(file)).unwrap(),
        "{artifact} of {name}"
    );
    std::fs::remove_file(&out).unwrap();
    predicted
}

/// The public key the pair bundles are signed with (kept beside www).
fn nginx_key(www: &Path) -> PathBuf {
    www.parent().unwrap().join("k.pub")
}

struct Fixture {
    dir: tempfile::TempDir,
    www: PathBuf,
    key: PathBuf,
    old: PathBuf,
    base: Vec<u8>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let (key, _) = keygen(dir.path(), "k");
    // 4 MiB of data, 2 MiB of zeros, a tail: 64 KiB chunks of every kind.
    let mut base = noise(1, 4 << 20);
    base.extend(std::iter::repeat_n(0u8, 2 << 20));
    base.extend(noise(2, 100_000));
    let old = build_dir(dir.path(), "old", &base, &noise(3, 500_000));
    Fixture {
        dir,
        www,
        key,
        old,
        base,
    }
}

#[test]
fn predicted_downloads_are_what_nginx_sends() {
    if !Nginx::available("predicted_downloads_are_what_nginx_sends") {
        return;
    }
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let d = f.dir.path();
    let kernel = std::fs::read(f.old.join("vmlinuz")).unwrap();

    // One byte changed in the middle: one 64 KiB chunk (plus the head).
    let mut one = f.base.clone();
    one[(2 << 20) + 5] ^= 1;
    let new = build_dir(d, "one", &one, &kernel);
    let b = bundle(&new, &f.key, &d.join("one.slate"), "64K");
    let p = check_pair(&nginx, &f.www, &f.old, &new, &b, "rootfs");
    assert_eq!(p["fetched"], 65536, "{p}");
    assert_eq!(p["holes"], 2 << 20, "{p}");
    let full = p["full"].as_u64().unwrap();
    assert!(p["downloaded"].as_u64().unwrap() < full / 20, "{p}");
    // The kernel is unchanged: only the head is fetched.
    let k = check_pair(&nginx, &f.www, &f.old, &new, &b, "kernel");
    assert_eq!(k["fetched"], 0, "{k}");
    assert_eq!(k["reused_by_source"]["kernel"], kernel.len(), "{k}");

    // A chunk repeated inside the new image is copied from where it was
    // first written, not fetched twice.
    let mut rep = noise(9, 1 << 20);
    rep.extend_from_slice(&rep.clone()[..1 << 16]);
    let new = build_dir(d, "rep", &rep, &kernel);
    let b = bundle(&new, &f.key, &d.join("rep.slate"), "64K");
    let p = check_pair(&nginx, &f.www, &f.old, &new, &b, "rootfs");
    assert_eq!(p["reused_by_source"]["written"], 65536, "{p}");

    // Nothing in common, at 1 MiB chunks: the chunks and the head cost
    // no more than the whole bundle plus 1%.
    let other = noise(77, 6 << 20);
    let new = build_dir(d, "other", &other, &noise(78, 400_000));
    let b = bundle(&new, &f.key, &d.join("other.slate"), "1M");
    let p = check_pair(&nginx, &f.www, &f.old, &new, &b, "rootfs");
    assert_eq!(p["reused"], 0, "{p}");
    let full = p["full"].as_u64().unwrap();
    assert!(
        p["downloaded"].as_u64().unwrap() <= full + full / 100,
        "{p}"
    );
}

/// `slate diff --target`: the slot being installed is reused only where the
/// device's front-to-back writer has not reached yet, at or after each
/// chunk's own offset.
#[test]
fn diff_reuses_the_target_only_ahead_of_the_writer() {
    let f = fixture();
    let d = f.dir.path();
    let unrelated = d.join("unrelated.img");
    std::fs::write(&unrelated, noise(50, 3 << 20)).unwrap();
    let new = build_dir(d, "new", &f.base, &noise(3, 500_000));
    let b = bundle(&new, &f.key, &d.join("new.slate"), "64K");
    let target_diff = |target: &[u8]| {
        let t = d.join("target.img");
        std::fs::write(&t, target).unwrap();
        json(
            slate()
                .arg("diff")
                .arg(&unrelated)
                .arg(&b)
                .arg("--target")
                .arg(&t)
                .args(["--artifact", "rootfs", "--json"])
                .output()
                .unwrap(),
        )
    };
    let holes = 2u64 << 20;
    let data = f.base.len() as u64 - holes;
    // NEW one chunk further on: every chunk is ahead of its own offset.
    let mut ahead = vec![0u8; 65536];
    ahead.extend_from_slice(&f.base);
    let p = target_diff(&ahead);
    assert_eq!(p["fetched"], 0, "{p}");
    assert_eq!(p["reused_by_source"]["target"], data, "{p}");
    assert_eq!(p["holes"], holes, "{p}");
    // NEW one chunk earlier: the writer overwrites each before it is needed.
    let p = target_diff(&f.base[65536..]);
    assert_eq!(p["fetched"], data, "{p}");
    assert_eq!(p["reused"], 0, "{p}");
    // A target that cannot be read is named.
    let o = slate()
        .arg("diff")
        .arg(&unrelated)
        .arg(&b)
        .arg("--target")
        .arg(d.join("missing.img"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("missing.img"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn a_server_without_range_support_is_streamed() {
    let f = fixture();
    let server = PyHttp::start(&f.www);
    let d = f.dir.path();
    let mut v2 = f.base.clone();
    v2[10] ^= 1;
    let new = build_dir(d, "v2", &v2, b"kernel");
    let b = bundle(&new, &f.key, &f.www.join("v2.slate"), "64K");
    let out = d.join("out");
    let (r, stderr) = extract(
        &server.url("v2.slate"),
        &nginx_key(&f.www),
        &[f.old.join("rootfs.ext4")],
        "rootfs",
        &out,
    );
    assert_eq!(r["fallback"], true, "{r}");
    assert!(stderr.contains("ignores Range requests"), "{stderr}");
    assert_eq!(r["requests"], 1, "{r}");
    assert_eq!(r["downloaded"], std::fs::metadata(&b).unwrap().len(), "{r}");
    assert_eq!(std::fs::read(&out).unwrap(), v2);
}

/// A server that answers every range request with other bytes than asked
/// for (a 206 whose Content-Range starts one byte later) and a plain GET
/// with the whole file: the delta attempt fails on the first range and
/// extract streams the bundle once instead.
#[test]
fn a_wrong_range_reply_falls_back_to_streaming_once() {
    use std::io::{BufRead, BufReader, Write};
    let f = fixture();
    let d = f.dir.path();
    let mut v2 = f.base.clone();
    v2[10] ^= 1;
    let new = build_dir(d, "v2", &v2, b"kernel");
    let b = bundle(&new, &f.key, &d.join("v2.slate"), "64K");
    let bytes = std::fs::read(&b).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let gets = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let g = gets.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut range = None;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    let (a, _) = v.trim().split_once('-').unwrap();
                    range = Some(a.parse::<u64>().unwrap());
                }
            }
            g.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = match range {
                Some(a) => {
                    let body = &bytes[a as usize + 1..a as usize + 101];
                    let head = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {}-{}/{}\r\nContent-Length: 100\r\nConnection: close\r\n\r\n",
                        a + 1,
                        a + 100,
                        bytes.len()
                    );
                    s.write_all(head.as_bytes())
                        .and_then(|()| s.write_all(body))
                }
                None => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        bytes.len()
                    );
                    s.write_all(head.as_bytes())
                        .and_then(|()| s.write_all(&bytes))
                }
            };
        }
    });
    let out = d.join("out");
    let url = format!("http://127.0.0.1:{port}/v2.slate");
    let (r, stderr) = extract(
        &url,
        &nginx_key(&f.www),
        &[f.old.join("rootfs.ext4")],
        "rootfs",
        &out,
    );
    assert_eq!(r["fallback"], true, "{r}");
    assert!(stderr.contains("asked for bytes 0-16383"), "{stderr}");
    assert!(stderr.contains("streaming the whole bundle"), "{stderr}");
    // One failed range request, one plain download.
    assert_eq!(gets.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert_eq!(std::fs::read(&out).unwrap(), v2);
}

/// A seed chunk that no longer matches what the index says (a stale slot
/// manifest) is fetched alone, and the result is still the signed artifact.
#[test]
fn a_stale_seed_chunk_is_fetched_alone() {
    use slate::bundle::delta::fetch::{Remote, fetch_head};
    use slate::bundle::delta::{Seed, SeedIndex};
    use slate::bundle::{ChunkSource, FileSink};
    if !Nginx::available("a_stale_seed_chunk_is_fetched_alone") {
        return;
    }
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let d = f.dir.path();
    let b1 = bundle(&f.old, &f.key, &d.join("v1.slate"), "64K");
    let mut v2 = f.base.clone();
    v2[(3 << 20) + 1] ^= 1;
    let new = build_dir(d, "v2", &v2, b"kernel");
    bundle(&new, &f.key, &f.www.join("v2.slate"), "64K");
    // The index comes from v1's manifest; the seed file then changes in
    // its second chunk.
    let head1 = slate::bundle::read_head_unverified(std::fs::File::open(&b1).unwrap()).unwrap();
    let seed_path = d.join("slot");
    let mut stale = f.base.clone();
    stale[65536 + 3] ^= 0xff;
    std::fs::write(&seed_path, &stale).unwrap();
    let mut ix = SeedIndex::new();
    let s = ix.add_seed(Seed {
        label: "slot".into(),
        path: seed_path,
        ahead_only: false,
    });
    ix.index_artifact(s, &head1.manifest.artifacts[0]);
    let keys = slate::bundle::TrustedKeys::from_pem_files(&[nginx_key(&f.www)], 1).unwrap();
    let Remote::Ranges(head) = fetch_head(
        &nginx.url("v2.slate"),
        &keys,
        slate::io::source::HttpTimeouts::DEFAULT,
    )
    .unwrap() else {
        panic!("nginx answers ranges");
    };
    let plan = head.plan(&ix, &|n| n == "rootfs");
    let predicted = plan.counts.clone();
    let mut r = head.into_reader(ix, plan);
    let out = std::fs::File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(d.join("out"))
        .unwrap();
    let a = r.next_artifact().unwrap().unwrap();
    assert_eq!(a.name, "rootfs");
    r.read_into(&mut FileSink::new(&out)).unwrap();
    assert_eq!(std::fs::read(d.join("out")).unwrap(), v2);
    assert_eq!(r.refetched(), 1);
    let c = r.counts();
    assert_eq!(c.requests, predicted.requests + 1, "{c:?} vs {predicted:?}");
    assert_eq!(c.reused, predicted.reused - 65536);
    let log = nginx.log_lines();
    assert_eq!(
        log.iter().map(|a| a.2).sum::<u64>(),
        c.downloaded,
        "{log:?}"
    );
}

/// The image pairs of issue 12 (tests/fixtures/delta-pairs.gen.sh: a new
/// version string, a file added, a file resized, a Debian package added,
/// the kernel changed, nothing in common), built with `--previous` and
/// bundled in 64 KiB chunks: for each, what nginx sends is what `slate
/// diff` predicts, and the extracted artifacts are the new ones.
#[test]
fn image_pairs_download_what_diff_predicts() {
    let test = "image_pairs_download_what_diff_predicts";
    if !images::have_apt(test) || !Nginx::available(test) {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("slate-pairs.")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let d = dir.path();
    let www = d.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let (key, public) = keygen(d, "k");
    let out = run_ok(
        std::process::Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/delta-pairs.gen.sh"
        ))
        .arg(env!("CARGO_BIN_EXE_slate"))
        .arg(d.join("pairs"))
        .arg(&public)
        .env("SLATE_CACHE_DIR", images::cache_dir()),
    );
    let lines = String::from_utf8(out.stdout).unwrap();
    let nginx = Nginx::start(&www);
    let mut seen = Vec::new();
    for line in lines.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let (pair, old, new) = (f[0], PathBuf::from(f[1]), PathBuf::from(f[2]));
        seen.push(pair.to_string());
        let b = bundle(&new, &key, &d.join(format!("{pair}.slate")), "64K");
        let artifacts: &[&str] = match pair {
            "kernel-changed" => &["rootfs", "kernel", "initrd"],
            _ => &["rootfs"],
        };
        for a in artifacts {
            check_pair(&nginx, &www, &old, &new, &b, a);
        }
        // The whole bundle, as a device installs it.
        let all = json(
            slate()
                .arg("diff")
                .arg(&old)
                .arg(&b)
                .arg("--json")
                .output()
                .unwrap(),
        );
        let (got, full) = (
            all["downloaded"].as_u64().unwrap(),
            all["full"].as_u64().unwrap(),
        );
        eprintln!(
            "{pair}: {got} of {full} bytes ({:.2}%)",
            got as f64 * 100.0 / full as f64
        );
        match pair {
            "unrelated" => assert!(got <= full + full / 100, "{pair}: {all}"),
            "kernel-changed" => assert!(got < full, "{pair}: {all}"),
            _ => assert!(got * 50 < full, "{pair}: under 2% of the bundle: {all}"),
        }
    }
    assert_eq!(
        seen,
        [
            "version",
            "file-added",
            "file-resized",
            "package-added",
            "kernel-changed",
            "unrelated"
        ]
    );
}
