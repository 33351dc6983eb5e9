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

#[cfg(test)]
mod tests {
    use super::*;

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
