//! Running the image's health check: `/bin/sh -c COMMAND`, exit 0 = healthy,
//! anything else or running past the timeout = unhealthy.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The check exited 0.
    Healthy,
    /// Why it is not healthy.
    Unhealthy(String),
}

/// Runs `command` with `timeout`; on timeout the whole process group is killed.
pub fn check(command: &str, timeout: Duration) -> Health {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(command).stdin(Stdio::null());
    // Own process group, so a timeout kills the check's children too.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Health::Unhealthy(format!("cannot run health check: {e}")),
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Health::Healthy,
            Ok(Some(status)) => {
                return Health::Unhealthy(match status.code() {
                    Some(c) => format!("health check exited with status {c}"),
                    None => "health check was killed by a signal".into(),
                });
            }
            Ok(None) if start.elapsed() >= timeout => {
                let pid = rustix::process::Pid::from_child(&child);
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                let _ = child.kill();
                let _ = child.wait();
                return Health::Unhealthy(format!(
                    "health check timed out after {}s",
                    timeout.as_secs_f64()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Health::Unhealthy(format!("waiting for health check: {e}")),
        }
    }
}

/// Runs the check up to `retries + 1` times, `interval` apart, until it
/// passes, so a check does not fail because the services it checks are
/// still starting. Each attempt has `timeout`.
pub fn check_with_retries(
    command: &str,
    timeout: Duration,
    retries: u32,
    interval: Duration,
) -> Health {
    let mut attempt = 0;
    loop {
        match check(command, timeout) {
            Health::Healthy => return Health::Healthy,
            Health::Unhealthy(reason) if attempt >= retries => {
                return Health::Unhealthy(if retries == 0 {
                    reason
                } else {
                    format!("{reason} (attempt {} of {})", attempt + 1, retries + 1)
                });
            }
            Health::Unhealthy(_) => {
                attempt += 1;
                std::thread::sleep(interval);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_until_the_service_is_up() {
        // The "service" becomes ready on the third look.
        let d = tempfile::tempdir().unwrap();
        let n = d.path().join("n");
        let cmd = format!(
            "n=$(cat {0} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {0}; [ $n -ge 3 ]",
            n.display()
        );
        let short = Duration::from_millis(10);
        assert_eq!(
            check_with_retries(&cmd, Duration::from_secs(5), 1, short),
            Health::Unhealthy("health check exited with status 1 (attempt 2 of 2)".into())
        );
        std::fs::remove_file(&n).unwrap();
        assert_eq!(
            check_with_retries(&cmd, Duration::from_secs(5), 4, short),
            Health::Healthy
        );
        assert_eq!(std::fs::read_to_string(&n).unwrap().trim(), "3");
        assert_eq!(
            check_with_retries("exit 2", Duration::from_secs(5), 0, short),
            Health::Unhealthy("health check exited with status 2".into())
        );
    }

    #[test]
    fn verdicts() {
        assert_eq!(check("true", Duration::from_secs(5)), Health::Healthy);
        assert_eq!(
            check("exit 3", Duration::from_secs(5)),
            Health::Unhealthy("health check exited with status 3".into())
        );
        let start = Instant::now();
        let h = check("sleep 30; true", Duration::from_millis(300));
        assert!(
            matches!(h, Health::Unhealthy(ref r) if r.contains("timed out")),
            "{h:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}
