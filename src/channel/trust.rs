//! The client's trusted metadata and its update (TUF specification 1.0,
//! section 5 "Detailed client workflow"): root rotations first, then
//! timestamp, snapshot and targets, each checked for signatures, version
//! order and expiry before it replaces what was trusted, and persisted
//! (atomically, one file each) so version numbers never go down across
//! reboots.
//!
//! State directory layout: `roots/N.root.json` (every root accepted after
//! the image's own, re-verified as a chain on each load),
//! `timestamp.json`, `snapshot.json`, `targets.json`, `http.json` (the
//! timestamp's validators for conditional requests) and `clock.json` (the
//! newest time the device has used, a floor for a clock that goes back).

use super::TufError;
use super::metadata::{Envelope, MetaFile, Role, Root, Snapshot, TargetFile, Targets, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Bounds on metadata the referring metadata do not give a length for.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Each `N.root.json`.
    pub root: u64,
    /// `timestamp.json`.
    pub timestamp: u64,
    /// `snapshot.json` when the timestamp gives no length.
    pub snapshot: u64,
    /// `targets.json` when the snapshot gives no length.
    pub targets: u64,
    /// Root rotations followed in one update.
    pub max_rotations: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            root: 512 << 10,
            timestamp: 16 << 10,
            snapshot: 2 << 20,
            targets: 8 << 20,
            max_rotations: 32,
        }
    }
}

/// Validators of a previous response, for a conditional request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Validators {
    /// `ETag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// `Last-Modified`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

/// What a fetch returned.
#[derive(Debug)]
pub enum Fetched {
    /// The body (at most the bound asked for) and its validators.
    Body(Vec<u8>, Validators),
    /// 304: unchanged since the validators given.
    NotModified,
    /// 404 (or 403, as static hosts answer for missing files).
    NotFound,
}

/// Where metadata and targets come from.
pub trait Fetcher {
    /// Fetches metadata file `name`: at most `max` bytes (more is
    /// [`TufError::TooLong`]), conditionally when `validators` are given.
    fn metadata(
        &mut self,
        name: &str,
        max: u64,
        validators: Option<&Validators>,
    ) -> Result<Fetched, TufError>;

    /// Fetches target file `path` (as stored, hash-prefixed when the
    /// repository uses consistent snapshots): at most `max` bytes.
    fn target(&mut self, path: &str, max: u64) -> Result<Vec<u8>, TufError>;
}

/// A verified envelope and its typed view.
#[derive(Debug, Clone)]
pub struct Verified<T> {
    /// As received (what is persisted).
    pub envelope: Envelope,
    /// The typed signed object.
    pub signed: T,
}

/// What one update did, for reports.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Refresh {
    /// Root versions accepted (rotations followed).
    pub rotated_to: Vec<u64>,
    /// Whether the timestamp was unchanged (answered 304, or the same version).
    pub timestamp_unchanged: bool,
    /// Metadata files downloaded.
    pub fetched: Vec<String>,
    /// Body bytes downloaded.
    pub bytes: u64,
}

/// The trusted metadata of one channel on one device.
#[derive(Debug)]
pub struct TrustedSet {
    state: PathBuf,
    root: Verified<Root>,
    timestamp: Option<Verified<Timestamp>>,
    snapshot: Option<Verified<Snapshot>>,
    targets: Option<Verified<Targets>>,
    validators: Validators,
    limits: Limits,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Clock {
    floor: i64,
}

impl TrustedSet {
    /// Loads the trusted state from `state` (created when missing), starting
    /// from `image_root`, the root shipped in the image: persisted roots are
    /// trusted only as a chain of rotations from it; persisted timestamp,
    /// snapshot and targets only if the newest root signs them (otherwise
    /// they are dropped and fetched again).
    pub fn load(image_root: &[u8], state: &Path, limits: Limits) -> Result<TrustedSet, TufError> {
        std::fs::create_dir_all(state.join("roots"))
            .map_err(|e| TufError::io(format!("creating {}", state.display()), e))?;
        let env = Envelope::parse("root.json", image_root)?;
        let signed: Root = env.typed("root.json", Role::Root)?;
        env.verify("root.json", signed.role(Role::Root)?, &signed.keys)?;
        let mut set = TrustedSet {
            state: state.to_path_buf(),
            root: Verified {
                envelope: env,
                signed,
            },
            timestamp: None,
            snapshot: None,
            targets: None,
            validators: Validators::default(),
            limits,
        };
        loop {
            let v = set.root.signed.version + 1;
            let name = format!("{v}.root.json");
            let Some(bytes) = set.read(&format!("roots/{name}"))? else {
                break;
            };
            set.accept_root(&name, &bytes)?;
        }
        set.timestamp = set.load_local("timestamp.json", Role::Timestamp);
        set.snapshot = set.load_local("snapshot.json", Role::Snapshot);
        set.targets = set.load_local("targets.json", Role::Targets);
        if set.timestamp.is_some() {
            if let Some(b) = set.read("http.json")? {
                set.validators = serde_json::from_slice(&b).unwrap_or_default();
            }
        }
        Ok(set)
    }

    /// The trusted root.
    pub fn root(&self) -> &Root {
        &self.root.signed
    }

    /// The trusted timestamp, snapshot and targets versions, when present.
    pub fn versions(&self) -> (u64, Option<u64>, Option<u64>, Option<u64>) {
        (
            self.root.signed.version,
            self.timestamp.as_ref().map(|t| t.signed.version),
            self.snapshot.as_ref().map(|t| t.signed.version),
            self.targets.as_ref().map(|t| t.signed.version),
        )
    }

    /// The trusted targets (after a successful [`TrustedSet::update`]).
    pub fn targets(&self) -> Option<&Targets> {
        self.targets.as_ref().map(|t| &t.signed)
    }

    /// The time to check expiry against: the newest of `clock`, `floor`
    /// (the image's build time) and every time used before on this device
    /// (so a clock reset to 1970 does not make expired metadata valid
    /// again, and a clock that goes back does not either). Persisted.
    pub fn effective_now(&self, clock: i64, floor: i64) -> Result<i64, TufError> {
        let seen = self
            .read("clock.json")?
            .and_then(|b| serde_json::from_slice::<Clock>(&b).ok())
            .map_or(i64::MIN, |c| c.floor);
        let now = clock.max(floor).max(seen);
        if now != seen {
            let bytes = serde_json::to_vec(&Clock { floor: now }).expect("clock serialise");
            self.write("clock.json", &bytes)?;
        }
        Ok(now)
    }

    /// Brings the trusted metadata up to date from `fetcher`, checked at
    /// time `now`. On any error nothing already trusted is replaced by
    /// what failed.
    pub fn update(&mut self, fetcher: &mut dyn Fetcher, now: i64) -> Result<Refresh, TufError> {
        let mut r = Refresh::default();
        let name = "timestamp.json";
        let conditional = self.timestamp.as_ref().map(|_| self.validators.clone());
        let first = fetcher.metadata(name, self.limits.timestamp, conditional.as_ref())?;
        let root_valid = check_expiry("root.json", &self.root.signed.expires, now).is_ok();
        match first {
            // Nothing new is signed: no root probe (a publisher that rotates
            // keys signs a new timestamp too), one request per idle poll.
            Fetched::NotModified if self.timestamp.is_some() && root_valid => {
                r.timestamp_unchanged = true;
                let t = self.timestamp.as_ref().expect("checked");
                check_expiry(name, &t.signed.expires, now)?;
            }
            first => {
                self.update_root(fetcher, now, &mut r)?;
                let (bytes, validators) = match first {
                    Fetched::Body(b, v) => (b, v),
                    _ => match fetcher.metadata(name, self.limits.timestamp, None)? {
                        Fetched::Body(b, v) => (b, v),
                        Fetched::NotFound => return Err(not_found(name)),
                        Fetched::NotModified => {
                            return Err(TufError::bad(
                                name,
                                "answered 304 to an unconditional request",
                            ));
                        }
                    },
                };
                self.accept_timestamp(bytes, validators, now, &mut r)?;
            }
        }
        self.update_snapshot(fetcher, now, &mut r)?;
        self.update_targets(fetcher, now, &mut r)?;
        Ok(r)
    }

    fn update_root(
        &mut self,
        f: &mut dyn Fetcher,
        now: i64,
        r: &mut Refresh,
    ) -> Result<(), TufError> {
        let before = self.root.signed.clone();
        for _ in 0..self.limits.max_rotations {
            let v = self.root.signed.version + 1;
            let name = format!("{v}.root.json");
            let bytes = match f.metadata(&name, self.limits.root, None)? {
                Fetched::Body(b, _) => b,
                Fetched::NotFound => break,
                Fetched::NotModified => {
                    return Err(TufError::bad(
                        &name,
                        "answered 304 to an unconditional request",
                    ));
                }
            };
            r.fetched.push(name.clone());
            r.bytes += bytes.len() as u64;
            self.accept_root(&name, &bytes)?;
            self.write(&format!("roots/{name}"), &bytes)?;
            r.rotated_to.push(v);
        }
        check_expiry("root.json", &self.root.signed.expires, now)?;
        // A new timestamp or snapshot key voids what the old one signed
        // (fast-forward attack recovery, specification 5.3.11).
        for role in [Role::Timestamp, Role::Snapshot] {
            if before.role(role)? != self.root.signed.role(role)? {
                self.timestamp = None;
                self.validators = Validators::default();
                if role == Role::Snapshot {
                    self.snapshot = None;
                }
            }
        }
        Ok(())
    }

    /// Checks `bytes` as the next root: signed by the trusted root's root
    /// role and by its own, with the next version number.
    fn accept_root(&mut self, name: &str, bytes: &[u8]) -> Result<(), TufError> {
        let env = Envelope::parse(name, bytes)?;
        let signed: Root = env.typed(name, Role::Root)?;
        self.root.signed.verify(name, Role::Root, &env)?;
        env.verify(name, signed.role(Role::Root)?, &signed.keys)?;
        let expected = self.root.signed.version + 1;
        if signed.version != expected {
            return Err(TufError::VersionMismatch {
                name: name.to_string(),
                by: "its file name".into(),
                expected,
                got: signed.version,
            });
        }
        self.root = Verified {
            envelope: env,
            signed,
        };
        Ok(())
    }

    /// Checks a downloaded timestamp against the trusted root and the
    /// trusted timestamp, then trusts and persists it.
    fn accept_timestamp(
        &mut self,
        bytes: Vec<u8>,
        validators: Validators,
        now: i64,
        r: &mut Refresh,
    ) -> Result<(), TufError> {
        let name = "timestamp.json";
        r.fetched.push(name.into());
        r.bytes += bytes.len() as u64;
        let new: Verified<Timestamp> = self.verify_role(name, Role::Timestamp, &bytes)?;
        let snapshot_meta = timestamp_snapshot(&new.signed)?;
        if let Some(old) = &self.timestamp {
            if new.signed.version < old.signed.version {
                return Err(rollback(name, old.signed.version, new.signed.version));
            }
            let old_meta = timestamp_snapshot(&old.signed)?;
            if snapshot_meta.version < old_meta.version {
                return Err(rollback(
                    "snapshot.json",
                    old_meta.version,
                    snapshot_meta.version,
                ));
            }
            if new.signed.version == old.signed.version {
                r.timestamp_unchanged = true;
                return check_expiry(name, &old.signed.expires, now);
            }
        }
        check_expiry(name, &new.signed.expires, now)?;
        self.write(name, &bytes)?;
        self.validators = validators;
        let v = serde_json::to_vec(&self.validators).expect("validators serialise");
        self.write("http.json", &v)?;
        self.timestamp = Some(new);
        Ok(())
    }

    fn update_snapshot(
        &mut self,
        f: &mut dyn Fetcher,
        now: i64,
        r: &mut Refresh,
    ) -> Result<(), TufError> {
        let ts = self.timestamp.as_ref().expect("timestamp first");
        let meta = timestamp_snapshot(&ts.signed)?.clone();
        if let Some(s) = &self.snapshot {
            if s.signed.version == meta.version {
                return check_expiry("snapshot.json", &s.signed.expires, now);
            }
        }
        let (name, bytes, new) =
            self.fetch_named::<Snapshot>(f, Role::Snapshot, &meta, "timestamp.json", r)?;
        if let Some(old) = &self.snapshot {
            for (file, m) in &old.signed.meta {
                match new.signed.meta.get(file) {
                    None => return Err(TufError::bad(&name, format!("{file} is missing from it"))),
                    Some(n) if n.version < m.version => {
                        return Err(rollback(file, m.version, n.version));
                    }
                    Some(_) => {}
                }
            }
        }
        check_expiry(&name, &new.signed.expires, now)?;
        self.write("snapshot.json", &bytes)?;
        self.snapshot = Some(new);
        Ok(())
    }

    fn update_targets(
        &mut self,
        f: &mut dyn Fetcher,
        now: i64,
        r: &mut Refresh,
    ) -> Result<(), TufError> {
        let snap = self.snapshot.as_ref().expect("snapshot first");
        let meta = snap
            .signed
            .meta
            .get("targets.json")
            .cloned()
            .ok_or_else(|| TufError::bad("snapshot.json", "it does not list targets.json"))?;
        if let Some(t) = &self.targets {
            if t.signed.version == meta.version {
                return check_expiry("targets.json", &t.signed.expires, now);
            }
            if t.signed.version > meta.version {
                return Err(rollback("targets.json", t.signed.version, meta.version));
            }
        }
        let (name, bytes, new) =
            self.fetch_named::<Targets>(f, Role::Targets, &meta, "snapshot.json", r)?;
        check_expiry(&name, &new.signed.expires, now)?;
        self.write("targets.json", &bytes)?;
        self.targets = Some(new);
        Ok(())
    }

    /// Fetches target `name` as the trusted targets describe it: at most
    /// its length, then length and SHA-256 checked.
    pub fn fetch_target(
        &self,
        f: &mut dyn Fetcher,
        name: &str,
    ) -> Result<(Vec<u8>, TargetFile), TufError> {
        let target = self
            .targets()
            .and_then(|t| t.targets.get(name))
            .cloned()
            .ok_or_else(|| TufError::bad(name, "not a target of the trusted targets metadata"))?;
        let path = self.stored_path(name, target.sha256(name)?);
        let bytes = f.target(&path, target.length)?;
        check_file(name, &bytes, target.length, &target.hashes)?;
        Ok((bytes, target))
    }

    /// Where target `name` with SHA-256 `sha` is stored: hash-prefixed
    /// (`dir/<sha>.base`) under consistent snapshots.
    pub fn stored_path(&self, name: &str, sha: &str) -> String {
        if !self.root.signed.consistent_snapshot {
            return name.to_string();
        }
        match name.rsplit_once('/') {
            Some((dir, base)) => format!("{dir}/{sha}.{base}"),
            None => format!("{sha}.{name}"),
        }
    }

    fn verify_role<T: for<'de> Deserialize<'de>>(
        &self,
        name: &str,
        role: Role,
        bytes: &[u8],
    ) -> Result<Verified<T>, TufError> {
        let env = Envelope::parse(name, bytes)?;
        // Signatures before anything else is believed.
        self.root.signed.verify(name, role, &env)?;
        let signed = env.typed(name, role)?;
        Ok(Verified {
            envelope: env,
            signed,
        })
    }

    /// Fetches `N.<role>.json` for the version `meta` (from metadata
    /// `by`) names, verifies it and checks it is of that version.
    fn fetch_named<T: for<'de> Deserialize<'de> + HasVersion>(
        &self,
        f: &mut dyn Fetcher,
        role: Role,
        meta: &MetaFile,
        by: &str,
        r: &mut Refresh,
    ) -> Result<(String, Vec<u8>, Verified<T>), TufError> {
        let name = self.versioned(&format!("{role}.json"), meta.version);
        let default = match role {
            Role::Snapshot => self.limits.snapshot,
            _ => self.limits.targets,
        };
        let bytes = self.fetch_meta(f, &name, meta, default, r)?;
        let new: Verified<T> = self.verify_role(&name, role, &bytes)?;
        if new.signed.version() != meta.version {
            return Err(TufError::VersionMismatch {
                name,
                by: by.into(),
                expected: meta.version,
                got: new.signed.version(),
            });
        }
        Ok((name, bytes, new))
    }

    fn fetch_meta(
        &self,
        f: &mut dyn Fetcher,
        name: &str,
        meta: &MetaFile,
        default_max: u64,
        r: &mut Refresh,
    ) -> Result<Vec<u8>, TufError> {
        let bytes = match f.metadata(name, meta.length.unwrap_or(default_max), None)? {
            Fetched::Body(b, _) => b,
            Fetched::NotFound => return Err(not_found(name)),
            Fetched::NotModified => {
                return Err(TufError::bad(
                    name,
                    "answered 304 to an unconditional request",
                ));
            }
        };
        r.fetched.push(name.to_string());
        r.bytes += bytes.len() as u64;
        if let Some(len) = meta.length {
            if bytes.len() as u64 != len {
                return Err(TufError::Mismatch {
                    name: name.into(),
                    reason: format!("{} bytes, the metadata say {len}", bytes.len()),
                });
            }
        }
        if let Some(h) = &meta.hashes {
            check_file(name, &bytes, bytes.len() as u64, h)?;
        }
        Ok(bytes)
    }

    fn versioned(&self, name: &str, version: u64) -> String {
        if self.root.signed.consistent_snapshot {
            format!("{version}.{name}")
        } else {
            name.to_string()
        }
    }

    fn load_local<T: for<'de> Deserialize<'de>>(
        &self,
        name: &str,
        role: Role,
    ) -> Option<Verified<T>> {
        let bytes = self.read(name).ok()??;
        self.verify_role(name, role, &bytes).ok()
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, TufError> {
        let path = self.state.join(name);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(TufError::io(format!("reading {}", path.display()), e)),
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), TufError> {
        let path = self.state.join(name);
        crate::io::atomic::write_atomic(&path, bytes)
            .map_err(|e| TufError::io(format!("writing {}", path.display()), e))
    }
}

/// Metadata with a version number.
trait HasVersion {
    fn version(&self) -> u64;
}

impl HasVersion for Snapshot {
    fn version(&self) -> u64 {
        self.version
    }
}

impl HasVersion for Targets {
    fn version(&self) -> u64 {
        self.version
    }
}

fn timestamp_snapshot(t: &Timestamp) -> Result<&MetaFile, TufError> {
    t.meta
        .get("snapshot.json")
        .ok_or_else(|| TufError::bad("timestamp.json", "it does not name snapshot.json"))
}

fn check_expiry(name: &str, expires: &str, now: i64) -> Result<(), TufError> {
    let at = crate::utc::parse(expires).ok_or_else(|| {
        TufError::bad(
            name,
            format!("expires {expires:?} is not YYYY-MM-DDTHH:MM:SSZ"),
        )
    })?;
    if now >= at {
        return Err(TufError::Expired {
            name: name.to_string(),
            expires: expires.to_string(),
            now: crate::utc::format(now),
        });
    }
    Ok(())
}

/// Checks `bytes` against a length and the sha256 of `hashes` (which must
/// be there).
pub fn check_file(
    name: &str,
    bytes: &[u8],
    length: u64,
    hashes: &std::collections::BTreeMap<String, String>,
) -> Result<(), TufError> {
    if bytes.len() as u64 != length {
        return Err(TufError::Mismatch {
            name: name.into(),
            reason: format!("{} bytes, the metadata say {length}", bytes.len()),
        });
    }
    let want = hashes
        .get("sha256")
        .ok_or_else(|| TufError::bad(name, "no sha256 hash"))?;
    let got = super::metadata::hex(&Sha256::digest(bytes));
    if !got.eq_ignore_ascii_case(want) {
        return Err(TufError::Mismatch {
            name: name.into(),
            reason: format!("sha256 {got}, the metadata say {want}"),
        });
    }
    Ok(())
}

fn rollback(name: &str, trusted: u64, got: u64) -> TufError {
    TufError::Rollback {
        name: name.to_string(),
        trusted,
        got,
    }
}

fn not_found(name: &str) -> TufError {
    TufError::bad(name, "the repository does not have it (HTTP 404)")
}
