//! Issue 11: a health check does not race the services it checks. A service
//! becomes ready 5 s after it starts; with `retries` the first boot commits,
//! without them the same check fails on its single attempt.

mod images;

use images::{Recipe, build_toml, keygen, run_ok, slate};

fn recipe(public: &std::path::Path, health: &str) -> String {
    let mut r = Recipe::counter("1.0.0", public);
    r.name = "retries".into();
    r.health = "test -e /run/ready".into();
    r.health_timeout = "2s".into();
    r.watchdog = "90s".into();
    r.extra =
        "[[service]]\nname = \"slow\"\nexec = \"sleep 5; touch /run/ready\"\nrestart = \"never\"\n"
            .into();
    // Retries and interval go into [health].
    r.toml().replace(
        "timeout = \"2s\"\n",
        &format!("timeout = \"2s\"\n{health}\n"),
    )
}

fn boot(disk: &std::path::Path, expect: &[&str]) -> (bool, Vec<serde_json::Value>) {
    let mut c = slate();
    c.arg("qemu")
        .arg(disk)
        .args(["--snapshot", "--json", "--timeout", "150"]);
    for e in expect {
        c.args(["--expect", e]);
    }
    let out = c.output().unwrap();
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (out.status.success(), events)
}

#[test]
fn health_check_retries_until_services_are_ready() {
    if !images::have_apt("health_retries") || !images::have_qemu("health_retries") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (_, public) = keygen(d.path(), "k");

    let out = build_toml(
        d.path(),
        "patient",
        &recipe(&public, "retries = 10\ninterval = \"1s\""),
    );
    let config = run_ok(
        std::process::Command::new("debugfs")
            .args(["-R", "cat /etc/slate/agent.json"])
            .arg(out.join("rootfs.ext4")),
    );
    let config: serde_json::Value = serde_json::from_slice(&config.stdout).unwrap();
    assert_eq!(config["health_retries"], 10, "{config}");
    assert_eq!(config["health_interval_ms"], 1000, "{config}");
    let (ok, events) = boot(&out.join("disk.img"), &["healthy:A", "committed:A"]);
    assert!(ok, "{events:?}");
    assert!(
        !events.iter().any(|e| e["event"] == "unhealthy"),
        "{events:?}"
    );

    let out = build_toml(d.path(), "hasty", &recipe(&public, ""));
    let (_, events) = boot(&out.join("disk.img"), &["unhealthy:A"]);
    let bad: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "unhealthy")
        .collect();
    assert_eq!(bad.len(), 1, "{events:?}");
    assert!(
        !events.iter().any(|e| e["event"] == "committed"),
        "{events:?}"
    );
}
