//! The I/O edge: prepare the firmware copy, spawn QEMU, read its console on a
//! thread, feed the [`Session`], and stop or kill QEMU when the session says.

use super::command::{Machine, WatchdogSyntax};
use super::firmware::{self, Firmware};
use super::session::Session;
use super::{Accel, ExitReason, Observer, QEMU_ENV, QemuError, QemuOptions, QemuOutcome, Quiet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// QEMU's own stderr lines kept for failure reports.
const STDERR_LINES: usize = 20;
/// How long QEMU gets to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Boots `opts.disk` and returns what happened; see [`run_with`].
pub fn run(opts: &QemuOptions) -> Result<QemuOutcome, QemuError> {
    run_with(opts, &mut Quiet)
}

/// Boots `opts.disk`, telling `observer` about events as they arrive.
///
/// An `Err` means QEMU could not be run at all (missing firmware, disk,
/// binary, I/O error); a run whose expectations failed is an `Ok` outcome
/// with `success == false`.
pub fn run_with(opts: &QemuOptions, observer: &mut dyn Observer) -> Result<QemuOutcome, QemuError> {
    check_inputs(opts)?;
    // Private per run: the firmware's variable store and QEMU's snapshot overlay.
    let work = tempfile::Builder::new()
        .prefix("slate-qemu.")
        .tempdir()
        .map_err(|e| QemuError::io("creating a temporary directory", e))?;
    let qemu = qemu_program(opts);
    let machine = prepare_machine(opts, &qemu, work.path())?;
    let mut console_log =
        match &opts.console_log {
            Some(path) => Some(File::create(path).map_err(|e| {
                QemuError::io(format!("creating console log {}", path.display()), e)
            })?),
            None => None,
        };
    announce(opts, &machine, observer);

    let args = machine.args();
    let mut qemu_command = vec![qemu.to_string_lossy().into_owned()];
    qemu_command.extend(args.iter().map(|a| a.to_string_lossy().into_owned()));
    let start = Instant::now();
    let child = Command::new(&qemu)
        .args(&args)
        .env("TMPDIR", work.path())
        .stdin(if opts.type_after.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(&qemu, e))?;
    let mut qemu_proc = QemuProcess { child, done: None };
    let rx = spawn_readers(&mut qemu_proc.child);

    let mut session = Session::new(opts.expect.clone(), opts.kill_after.map(|k| k.delay()))
        .with_input(&opts.type_after);
    let mut stderr_tail: Vec<String> = Vec::new();
    let deadline = start + opts.timeout;
    let since_start = |at: Instant| at.saturating_duration_since(start).as_secs_f64();
    let mut console =
        |bytes: &[u8], at: Instant, session: &mut Session, observer: &mut dyn Observer| {
            if let Some(log) = console_log.as_mut() {
                log.write_all(bytes)
                    .map_err(|e| QemuError::io(console_log_context(opts), e))?;
            }
            session.feed(bytes, since_start(at), observer);
            Ok::<(), QemuError>(())
        };

    let (reason, end) = loop {
        let now = Instant::now();
        let kill_at = session
            .kill_at()
            .map(|s| start + Duration::from_secs_f64(s));
        if let Some(kill_at) = kill_at.filter(|k| now >= *k) {
            qemu_proc.kill()?;
            let t = since_start(now);
            let planned = since_start(kill_at);
            observer.notice(
                t,
                &format!("power cut: SIGKILL sent to QEMU (planned at {planned:.3} s)"),
            );
            let after_installing = t - session.installing_at().unwrap_or(t);
            break (
                ExitReason::Killed {
                    t,
                    after_installing,
                },
                now,
            );
        }
        if now >= deadline {
            observer.notice(since_start(now), "timeout: stopping QEMU");
            qemu_proc.stop()?;
            break (ExitReason::Timeout, now);
        }
        let wake = kill_at.map_or(deadline, |k| k.min(deadline));
        let (closed_at, status) = match rx.recv_timeout(wake.saturating_duration_since(now)) {
            Ok(Msg::Console(bytes, at)) => {
                console(&bytes, at, &mut session, observer)?;
                qemu_proc.type_input(&session.take_input())?;
                if session.finished() {
                    qemu_proc.stop()?;
                    break (ExitReason::ExpectationsMet, at);
                }
                continue;
            }
            Ok(Msg::Stderr(line)) => {
                keep_stderr(&mut stderr_tail, line, observer);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Ok(Msg::ReadError(e)) => return Err(QemuError::io("reading QEMU's console", e)),
            Ok(Msg::ConsoleClosed(at)) => (at, qemu_proc.wait()?),
            Err(mpsc::RecvTimeoutError::Disconnected) => (Instant::now(), qemu_proc.wait()?),
        };
        break (
            ExitReason::QemuExited {
                code: status.code(),
            },
            closed_at,
        );
    };

    // QEMU is gone; what it printed before still belongs to the run (e.g.
    // events in the pipe when the power was cut).
    qemu_proc.wait()?;
    loop {
        match rx.recv_timeout(STOP_GRACE) {
            Ok(Msg::Console(bytes, at)) => console(&bytes, at, &mut session, observer)?,
            Ok(Msg::Stderr(line)) => keep_stderr(&mut stderr_tail, line, observer),
            Ok(Msg::ConsoleClosed(_)) => {}
            Ok(Msg::ReadError(_)) | Err(_) => break,
        }
    }
    let elapsed = since_start(end);
    session.end_of_console(elapsed, observer);
    if let Some(log) = console_log.as_mut() {
        log.flush()
            .map_err(|e| QemuError::io(console_log_context(opts), e))?;
    }
    let mut outcome = session.into_outcome(reason, elapsed, stderr_tail);
    outcome.qemu_command = qemu_command;
    Ok(outcome)
}

/// The run's firmware variable store: `--nvram FILE` itself (made from the
/// template first when missing), or a private copy of the template (or of
/// FILE, with `--snapshot`).
fn variable_store(opts: &QemuOptions, template: &Path, work: &Path) -> Result<PathBuf, QemuError> {
    let copy = |from: &Path, to: &Path| {
        std::fs::copy(from, to)
            .map(drop)
            .map_err(|e| QemuError::io(format!("copying {}", from.display()), e))
    };
    let private = work.join(firmware::VARS_FILE);
    let Some(nvram) = &opts.nvram else {
        copy(template, &private)?;
        return Ok(private);
    };
    if !nvram.exists() {
        if opts.snapshot {
            copy(template, &private)?;
            return Ok(private);
        }
        let bytes = std::fs::read(template)
            .map_err(|e| QemuError::io(format!("reading {}", template.display()), e))?;
        crate::io::atomic::write_atomic(nvram, &bytes)
            .map_err(|e| QemuError::io(format!("creating {}", nvram.display()), e))?;
        return Ok(nvram.clone());
    }
    let (have, want) = (file_len(nvram)?, file_len(template)?);
    if have != want {
        return Err(QemuError::Unsupported(format!(
            "{}: a variable store of {have} bytes, but the firmware's template {} has {want}",
            nvram.display(),
            template.display()
        )));
    }
    if opts.snapshot {
        copy(nvram, &private)?;
        return Ok(private);
    }
    Ok(nvram.clone())
}

fn file_len(path: &Path) -> Result<u64, QemuError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| QemuError::io(format!("reading {}", path.display()), e))
}

/// Finds the firmware, picks the accelerator and watchdog syntax, and copies
/// the firmware's variable store into `work`.
fn prepare_machine(opts: &QemuOptions, qemu: &Path, work: &Path) -> Result<Machine, QemuError> {
    let mut firmware = Firmware::locate()?;
    if let Some(vars) = &opts.secure_boot_vars {
        firmware = firmware.secure_boot(vars)?;
    }
    let accel = match opts.accel {
        Some(accel) => accel,
        None => Accel::detect()?,
    };
    let watchdog = probe_watchdog_syntax(qemu)?;
    let vars = variable_store(opts, &firmware.vars_template, work)?;
    let fault_disk = match &opts.fault {
        Some(spec) => {
            let path = work.join("fault.img");
            std::fs::write(&path, spec.disk_image())
                .map_err(|e| QemuError::io(format!("writing {}", path.display()), e))?;
            Some(path)
        }
        None => None,
    };
    let blkdebug = match &opts.io_error {
        Some(spec) => Some(write_blkdebug_rules(&opts.disk, spec, work)?),
        None => None,
    };
    Ok(Machine {
        accel,
        memory_mib: opts.memory_mib,
        firmware_code: firmware.code,
        firmware_vars: vars,
        secure_boot: firmware.secure_boot,
        disk: opts.disk.clone(),
        snapshot: opts.snapshot,
        updates: opts.updates.clone(),
        watchdog,
        fault_disk,
        blkdebug,
        net: opts.net.clone(),
    })
}

/// blkdebug rules that fail every write (and write-zeroes) touching the
/// sector at `spec.at` of partition `spec.partition` with EIO.
fn write_blkdebug_rules(
    disk: &Path,
    spec: &super::IoError,
    work: &Path,
) -> Result<PathBuf, QemuError> {
    let mut f =
        File::open(disk).map_err(|e| QemuError::io(format!("opening {}", disk.display()), e))?;
    let parts = crate::filesystems::gpt::read_partitions(&mut f).map_err(|e| {
        QemuError::io(
            format!("reading the partition table of {}", disk.display()),
            std::io::Error::other(e.to_string()),
        )
    })?;
    let p = parts
        .iter()
        .find(|p| p.name == spec.partition)
        .ok_or_else(|| {
            QemuError::io(
                format!("--io-error: {}", disk.display()),
                std::io::Error::other(format!("no partition named {:?}", spec.partition)),
            )
        })?;
    let len = p.last_lba + 1 - p.first_lba;
    let sector = p.first_lba + ((len as f64 * spec.at) as u64).min(len - 1);
    let rules: String = ["write", "write-zeroes"]
        .iter()
        .map(|iotype| {
            format!(
                "[inject-error]\nevent = \"write_aio\"\niotype = \"{iotype}\"\nerrno = \"5\"\n\
                 sector = \"{sector}\"\nonce = \"off\"\nimmediately = \"on\"\n\n"
            )
        })
        .collect();
    let path = work.join("blkdebug.conf");
    std::fs::write(&path, rules)
        .map_err(|e| QemuError::io(format!("writing {}", path.display()), e))?;
    Ok(path)
}

/// Tells the observer what is about to run, and the kill point if planned.
fn announce(opts: &QemuOptions, machine: &Machine, observer: &mut dyn Observer) {
    if let Some(kill) = opts.kill_after {
        let how = match kill.seed {
            Some(seed) => format!(
                ", drawn from seed {seed} in [0, {:.3} s)",
                kill.window.as_secs_f64()
            ),
            None => String::new(),
        };
        observer.notice(
            0.0,
            &format!(
                "kill point: {:.3} s after the first `installing`{how}",
                kill.delay().as_secs_f64()
            ),
        );
    }
    observer.notice(
        0.0,
        &format!(
            "booting {} ({}, {} MiB{})",
            opts.disk.display(),
            machine.accel,
            machine.memory_mib,
            if machine.snapshot { ", snapshot" } else { "" }
        ),
    );
}

/// What the reader threads send.
enum Msg {
    /// Console bytes and when they were read.
    Console(Vec<u8>, Instant),
    /// QEMU closed its stdout (it exited), and when.
    ConsoleClosed(Instant),
    /// A line QEMU wrote on stderr.
    Stderr(String),
    /// Reading the console failed.
    ReadError(std::io::Error),
}

/// Starts one thread per QEMU output pipe. The console thread timestamps
/// every chunk as it arrives, so event times do not depend on how busy the
/// main loop is.
fn spawn_readers(child: &mut Child) -> mpsc::Receiver<Msg> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut stdout) = child.stdout.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx
                            .send(Msg::Console(buf[..n].to_vec(), Instant::now()))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Msg::ReadError(e));
                        return;
                    }
                }
            }
            let _ = tx.send(Msg::ConsoleClosed(Instant::now()));
        });
    }
    if let Some(stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line).trim_end().to_string();
                if tx.send(Msg::Stderr(line)).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

fn keep_stderr(tail: &mut Vec<String>, line: String, observer: &mut dyn Observer) {
    observer.qemu_stderr(&line);
    if tail.len() == STDERR_LINES {
        tail.remove(0);
    }
    tail.push(line);
}

fn console_log_context(opts: &QemuOptions) -> String {
    let path = opts.console_log.as_deref().unwrap_or(Path::new("?"));
    format!("writing console log {}", path.display())
}

/// The QEMU child; killed if still running when dropped (an error or a panic
/// in the runner must not leave a VM behind).
struct QemuProcess {
    child: Child,
    done: Option<ExitStatus>,
}

impl QemuProcess {
    /// Writes `bytes` to the serial console (QEMU's stdin).
    fn type_input(&mut self, bytes: &[u8]) -> Result<(), QemuError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let stdin = self.child.stdin.as_mut().ok_or_else(|| {
            QemuError::io(
                "typing on the console",
                std::io::ErrorKind::BrokenPipe.into(),
            )
        })?;
        stdin
            .write_all(bytes)
            .and_then(|()| stdin.flush())
            .map_err(|e| QemuError::io("typing on the console (QEMU's stdin)", e))
    }

    /// SIGKILL: the power cut.
    fn kill(&mut self) -> Result<(), QemuError> {
        if self.done.is_none() {
            self.child
                .kill()
                .map_err(|e| QemuError::io("killing QEMU", e))?;
        }
        Ok(())
    }

    /// SIGTERM (QEMU shuts down cleanly), SIGKILL if it is still there after
    /// [`STOP_GRACE`].
    fn stop(&mut self) -> Result<(), QemuError> {
        if self.done.is_some() || self.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = rustix::process::Pid::from_child(&self.child);
        // ESRCH: it exited meanwhile, which is what we want.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let until = Instant::now() + STOP_GRACE;
        while Instant::now() < until {
            if self.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill()
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>, QemuError> {
        if self.done.is_none() {
            self.done = self
                .child
                .try_wait()
                .map_err(|e| QemuError::io("waiting for QEMU", e))?;
        }
        Ok(self.done)
    }

    fn wait(&mut self) -> Result<ExitStatus, QemuError> {
        match self.done {
            Some(status) => Ok(status),
            None => {
                let status = self
                    .child
                    .wait()
                    .map_err(|e| QemuError::io("waiting for QEMU", e))?;
                self.done = Some(status);
                Ok(status)
            }
        }
    }
}

impl Drop for QemuProcess {
    fn drop(&mut self) {
        if self.done.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Refuses to start when an input file is missing or, without `--snapshot`,
/// the disk cannot be written (QEMU would fail later with a vaguer message).
fn check_inputs(opts: &QemuOptions) -> Result<(), QemuError> {
    OpenOptions::new()
        .read(true)
        .write(!opts.snapshot)
        .open(&opts.disk)
        .map_err(|e| QemuError::io(format!("opening disk image {}", opts.disk.display()), e))?;
    for update in &opts.updates {
        File::open(update)
            .map_err(|e| QemuError::io(format!("opening update bundle {}", update.display()), e))?;
    }
    if opts.memory_mib < 64 {
        return Err(QemuError::Unsupported(format!(
            "--memory {}: the guest needs at least 64 MiB",
            opts.memory_mib
        )));
    }
    Ok(())
}

fn qemu_program(opts: &QemuOptions) -> PathBuf {
    if let Some(q) = &opts.qemu {
        return q.clone();
    }
    match std::env::var_os(QEMU_ENV) {
        Some(q) if !q.is_empty() => PathBuf::from(q),
        _ => PathBuf::from("qemu-system-x86_64"),
    }
}

fn spawn_error(qemu: &Path, e: std::io::Error) -> QemuError {
    if e.kind() == std::io::ErrorKind::NotFound {
        QemuError::QemuMissing {
            program: qemu.to_path_buf(),
        }
    } else {
        QemuError::io(format!("starting {}", qemu.display()), e)
    }
}

/// Asks this QEMU whether it knows `-action watchdog=...`.
fn probe_watchdog_syntax(qemu: &Path) -> Result<WatchdogSyntax, QemuError> {
    let out = Command::new(qemu)
        .args(["-action", "help"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(qemu, e))?;
    // `-action help` exits with status 1 even where it works: judge the text.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(WatchdogSyntax::from_action_help(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(nvram: Option<PathBuf>, snapshot: bool) -> QemuOptions {
        let mut o = QemuOptions::new(Path::new("disk.img"));
        o.nvram = nvram;
        o.snapshot = snapshot;
        o
    }

    #[test]
    fn variable_store_persists_only_with_nvram() {
        let d = tempfile::tempdir().unwrap();
        let template = d.path().join("template.fd");
        std::fs::write(&template, [7u8; 64]).unwrap();
        let work = d.path().join("work");
        std::fs::create_dir(&work).unwrap();

        // No --nvram: a private copy each run.
        let v = variable_store(&options(None, false), &template, &work).unwrap();
        assert!(v.starts_with(&work));
        assert_eq!(std::fs::read(&v).unwrap(), [7u8; 64]);

        // --nvram with --snapshot: a missing file stays missing.
        let nvram = d.path().join("nvram.fd");
        let v = variable_store(&options(Some(nvram.clone()), true), &template, &work).unwrap();
        assert!(v.starts_with(&work) && !nvram.exists());

        // --nvram: made from the template, then used as it is.
        let v = variable_store(&options(Some(nvram.clone()), false), &template, &work).unwrap();
        assert_eq!(v, nvram);
        std::fs::write(&nvram, [9u8; 64]).unwrap();
        let v = variable_store(&options(Some(nvram.clone()), false), &template, &work).unwrap();
        assert_eq!(
            (v.as_path(), std::fs::read(&v).unwrap()),
            (nvram.as_path(), vec![9u8; 64])
        );
        // With --snapshot a copy of it, the file untouched by the run.
        let v = variable_store(&options(Some(nvram.clone()), true), &template, &work).unwrap();
        assert!(v.starts_with(&work));
        assert_eq!(std::fs::read(&v).unwrap(), [9u8; 64]);

        // A store of another firmware's size is refused, naming the file.
        std::fs::write(&nvram, [9u8; 32]).unwrap();
        let e = variable_store(&options(Some(nvram.clone()), false), &template, &work).unwrap_err();
        assert!(matches!(e, QemuError::Unsupported(_)), "{e}");
        assert!(e.to_string().contains("nvram.fd"), "{e}");
    }
}
