//! The publisher's side of a channel: a TUF repository of static files.
//!
//! `REPO/metadata/` holds `N.root.json`, `timestamp.json`,
//! `N.snapshot.json` and `N.targets.json` (consistent snapshots);
//! `REPO/targets/<channel>/<sha256>.<name>` the bundles and their signed
//! heads. Upload `REPO` anywhere. Keys live apart, in `KEYS/<role>.<i>.key`
//! (PKCS#8 PEM, mode 0600); the root keys are used only by `init` and
//! `rotate`, so they can stay offline.
//!
//! Every change writes the targets (new files first), then the new
//! targets and snapshot metadata, and the timestamp last: a client that
//! reads the repository halfway through sees the previous state whole.

use super::TufError;
use super::metadata::{
    Envelope, Key, MetaFile, Role, RoleKeys, Root, Snapshot, Targets, Timestamp, hex, key_id,
    signed_object,
};
use super::select::SlateTarget;
use crate::bundle::signing::SecretKey;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// How many keys a role has and how many must sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    /// Keys made.
    pub keys: u32,
    /// Signatures required.
    pub threshold: u32,
}

/// Expiry periods, seconds from the time of signing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// Root: 365 days.
    pub root: i64,
    /// Targets: 90 days.
    pub targets: i64,
    /// Snapshot: 30 days.
    pub snapshot: i64,
    /// Timestamp: 7 days (a device that cannot reach the repository for
    /// longer stops installing until it can).
    pub timestamp: i64,
}

impl Default for Expiry {
    fn default() -> Self {
        const DAY: i64 = 86_400;
        Expiry {
            root: 365 * DAY,
            targets: 90 * DAY,
            snapshot: 30 * DAY,
            timestamp: 7 * DAY,
        }
    }
}

impl Expiry {
    /// The period of `role`.
    pub fn of(&self, role: Role) -> i64 {
        match role {
            Role::Root => self.root,
            Role::Targets => self.targets,
            Role::Snapshot => self.snapshot,
            Role::Timestamp => self.timestamp,
        }
    }

    /// Sets the period of `role`.
    pub fn set(&mut self, role: Role, secs: i64) {
        match role {
            Role::Root => self.root = secs,
            Role::Targets => self.targets = secs,
            Role::Snapshot => self.snapshot = secs,
            Role::Timestamp => self.timestamp = secs,
        }
    }
}

/// An open repository and its signing keys.
#[derive(Debug)]
pub struct Repository {
    dir: PathBuf,
    keys_dir: PathBuf,
    root: Root,
    targets: Targets,
    snapshot_version: u64,
    timestamp_version: u64,
    /// Expiry periods for what this session signs.
    pub expiry: Expiry,
    /// The signing time (SOURCE_DATE_EPOCH or the clock).
    pub now: i64,
}

/// What a change did, for the command's report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Published {
    /// The new root version, when it changed.
    pub root: Option<u64>,
    /// The new targets version.
    pub targets: u64,
    /// The new snapshot version.
    pub snapshot: u64,
    /// The new timestamp version.
    pub timestamp: u64,
    /// Target names added or changed.
    pub changed: Vec<String>,
}

impl Repository {
    /// Creates a repository in `dir` (which must not hold one) with new
    /// keys in `keys_dir` (outside `dir`, created, must not hold keys).
    pub fn init(
        dir: &Path,
        keys_dir: &Path,
        specs: &BTreeMap<Role, KeySpec>,
        expiry: Expiry,
        now: i64,
    ) -> Result<Published, TufError> {
        let metadata = dir.join("metadata");
        if metadata.exists() {
            return Err(TufError::bad(
                &dir.display().to_string(),
                "already holds a repository (metadata/ exists)",
            ));
        }
        refuse_keys_inside(dir, keys_dir)?;
        for sub in [&metadata, &dir.join("targets")] {
            std::fs::create_dir_all(sub)
                .map_err(|e| TufError::io(format!("creating {}", sub.display()), e))?;
        }
        private_dir(keys_dir)?;
        let mut keys = BTreeMap::new();
        let mut roles = BTreeMap::new();
        for role in Role::ALL {
            let spec = specs.get(&role).copied().unwrap_or(KeySpec {
                keys: 1,
                threshold: 1,
            });
            if spec.threshold == 0 || spec.threshold > spec.keys {
                return Err(TufError::bad(
                    role.name(),
                    format!("threshold {} of {} keys", spec.threshold, spec.keys),
                ));
            }
            let made = make_keys(keys_dir, role, 1, spec.keys)?;
            roles.insert(
                role.name().to_string(),
                RoleKeys {
                    keyids: made.iter().map(|k| key_id(&k.public())).collect(),
                    threshold: u64::from(spec.threshold),
                },
            );
            for k in made {
                keys.insert(key_id(&k.public()), Key::ed25519(&k.public()));
            }
        }
        let root = Root {
            version: 1,
            expires: crate::utc::format(now + expiry.root),
            consistent_snapshot: true,
            keys,
            roles,
        };
        let mut repo = Repository {
            dir: dir.to_path_buf(),
            keys_dir: keys_dir.to_path_buf(),
            root,
            targets: Targets {
                version: 0,
                expires: String::new(),
                targets: BTreeMap::new(),
            },
            snapshot_version: 0,
            timestamp_version: 0,
            expiry,
            now,
        };
        repo.write_root(&[])?;
        let mut p = repo.commit(Vec::new())?;
        p.root = Some(1);
        Ok(p)
    }

    /// Opens the repository in `dir` with the keys in `keys_dir`.
    pub fn open(dir: &Path, keys_dir: &Path, now: i64) -> Result<Repository, TufError> {
        let metadata = dir.join("metadata");
        let mut v = 1;
        while metadata.join(format!("{}.root.json", v + 1)).exists() {
            v += 1;
        }
        let root: Root =
            read_envelope(&metadata.join(format!("{v}.root.json")))?.typed("root", Role::Root)?;
        let ts: Timestamp =
            read_envelope(&metadata.join("timestamp.json"))?.typed("timestamp", Role::Timestamp)?;
        let snap_v = ts
            .meta
            .get("snapshot.json")
            .map(|m| m.version)
            .ok_or_else(|| TufError::bad("timestamp.json", "it does not name snapshot.json"))?;
        let snap: Snapshot = read_envelope(&metadata.join(format!("{snap_v}.snapshot.json")))?
            .typed("snapshot", Role::Snapshot)?;
        let targets_v = snap
            .meta
            .get("targets.json")
            .map(|m| m.version)
            .ok_or_else(|| TufError::bad("snapshot.json", "it does not list targets.json"))?;
        let targets: Targets = read_envelope(&metadata.join(format!("{targets_v}.targets.json")))?
            .typed("targets", Role::Targets)?;
        Ok(Repository {
            dir: dir.to_path_buf(),
            keys_dir: keys_dir.to_path_buf(),
            root,
            targets,
            snapshot_version: snap.version,
            timestamp_version: ts.version,
            expiry: Expiry::default(),
            now,
        })
    }

    /// The current root.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// The current targets.
    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// Adds `bundle` to `channel` with `rollout` percent: the bundle and
    /// its signed head become targets `<channel>/<compatible>-<version>.slate`
    /// and `... .slate.head`.
    pub fn publish(
        &mut self,
        bundle: &Path,
        channel: &str,
        rollout: u32,
    ) -> Result<Published, TufError> {
        check_channel(channel)?;
        check_rollout(rollout)?;
        let shown = bundle.display().to_string();
        let mut file =
            std::fs::File::open(bundle).map_err(|e| TufError::io(format!("opening {shown}"), e))?;
        let head = crate::bundle::reader::read_head_unverified(&mut file)
            .map_err(|e| TufError::bad(&shown, format!("not a slate bundle: {e}")))?;
        let m = &head.manifest;
        let name = format!("{channel}/{}-{}.slate", m.compatible, m.version);
        let head_name = format!("{name}.head");
        let head_len = head.header.payload_offset();
        let mut head_bytes = vec![0; head_len as usize];
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.read_exact(&mut head_bytes))
            .map_err(|e| TufError::io(format!("reading {shown}"), e))?;
        let (length, sha) = hash_file(bundle)?;
        let custom = |kind: &str, pair: &str| {
            let s = SlateTarget {
                kind: kind.into(),
                compatible: m.compatible.clone(),
                version: m.version.clone(),
                security_version: m.security_version,
                channel: channel.into(),
                rollout,
                pair: pair.into(),
            };
            json!({ "slate": s })
        };
        if let Some(old) = self.targets.targets.get(&name) {
            if old.hashes.get("sha256") != Some(&sha) {
                return Err(TufError::bad(
                    &shown,
                    format!("{name} is already published with other contents (withdraw it first)"),
                ));
            }
        }
        self.store_target(&name, &sha, bundle)?;
        let head_sha = hex(&Sha256::digest(&head_bytes));
        self.store_bytes(&head_name, &head_sha, &head_bytes)?;
        self.targets.targets.insert(
            name.clone(),
            super::metadata::TargetFile {
                length,
                hashes: BTreeMap::from([("sha256".to_string(), sha)]),
                custom: Some(custom("bundle", &head_name)),
            },
        );
        self.targets.targets.insert(
            head_name.clone(),
            super::metadata::TargetFile {
                length: head_len,
                hashes: BTreeMap::from([("sha256".to_string(), head_sha)]),
                custom: Some(custom("head", &name)),
            },
        );
        self.commit(vec![name, head_name])
    }

    /// Sets the rollout of `version` in `channel` (both its targets).
    pub fn promote(
        &mut self,
        channel: &str,
        version: &str,
        rollout: u32,
    ) -> Result<Published, TufError> {
        check_rollout(rollout)?;
        let names = self.find(channel, version)?;
        for n in &names {
            let t = self.targets.targets.get_mut(n).expect("found");
            if let Some(Value::Object(s)) = t.custom.as_mut().and_then(|c| c.get_mut("slate")) {
                s.insert("rollout".into(), json!(rollout));
            }
        }
        self.commit(names)
    }

    /// Removes `version` from `channel`: devices that have not installed
    /// it yet will not (their files stay in targets/ for older snapshots).
    pub fn withdraw(&mut self, channel: &str, version: &str) -> Result<Published, TufError> {
        let names = self.find(channel, version)?;
        for n in &names {
            self.targets.targets.remove(n);
        }
        self.commit(names)
    }

    /// Re-signs snapshot and timestamp (and targets) with fresh expiry.
    pub fn refresh(&mut self) -> Result<Published, TufError> {
        self.commit(Vec::new())
    }

    /// Replaces the keys of `role` with `spec` new ones: a new root, signed
    /// by the threshold of the old root keys (and of the new, when root
    /// itself rotates), then everything re-signed.
    pub fn rotate(&mut self, role: Role, spec: KeySpec) -> Result<Published, TufError> {
        if spec.threshold == 0 || spec.threshold > spec.keys {
            return Err(TufError::bad(
                role.name(),
                format!("threshold {} of {} keys", spec.threshold, spec.keys),
            ));
        }
        let old_root_keys = self.role_keys(Role::Root)?;
        let generation = self.next_generation(role)?;
        let made = make_keys(&self.keys_dir, role, generation, spec.keys)?;
        let old_ids = self.root.role(role)?.keyids.clone();
        for id in &old_ids {
            let still_used = self
                .root
                .roles
                .iter()
                .any(|(r, k)| r != role.name() && k.keyids.contains(id));
            if !still_used {
                self.root.keys.remove(id);
            }
        }
        for k in &made {
            self.root
                .keys
                .insert(key_id(&k.public()), Key::ed25519(&k.public()));
        }
        self.root.roles.insert(
            role.name().to_string(),
            RoleKeys {
                keyids: made.iter().map(|k| key_id(&k.public())).collect(),
                threshold: u64::from(spec.threshold),
            },
        );
        self.root.version += 1;
        self.root.expires = crate::utc::format(self.now + self.expiry.root);
        self.write_root(&old_root_keys)?;
        retire_keys(&self.keys_dir, role, generation)?;
        let mut p = self.commit(Vec::new())?;
        p.root = Some(self.root.version);
        Ok(p)
    }

    fn find(&self, channel: &str, version: &str) -> Result<Vec<String>, TufError> {
        let names: Vec<String> = self
            .targets
            .targets
            .iter()
            .filter(|(_, t)| {
                SlateTarget::of(t).is_some_and(|s| s.channel == channel && s.version == version)
            })
            .map(|(n, _)| n.clone())
            .collect();
        if names.is_empty() {
            return Err(TufError::bad(
                &format!("{channel}/{version}"),
                "no such version in the channel (`slate channel list` shows what is)",
            ));
        }
        Ok(names)
    }

    /// Signs and writes targets, snapshot and timestamp, in that order.
    fn commit(&mut self, changed: Vec<String>) -> Result<Published, TufError> {
        let meta_dir = self.dir.join("metadata");
        self.targets.version += 1;
        self.targets.expires = crate::utc::format(self.now + self.expiry.targets);
        let targets_body = json!({ "targets": self.targets.targets });
        let targets = self.sign(Role::Targets, self.targets.version, targets_body)?;
        let targets_name = format!("{}.targets.json", self.targets.version);
        write_file(&meta_dir.join(&targets_name), &targets)?;

        self.snapshot_version += 1;
        let snapshot = self.sign(
            Role::Snapshot,
            self.snapshot_version,
            json!({ "meta": { "targets.json": meta_file(self.targets.version, &targets) } }),
        )?;
        write_file(
            &meta_dir.join(format!("{}.snapshot.json", self.snapshot_version)),
            &snapshot,
        )?;

        self.timestamp_version += 1;
        let timestamp = self.sign(
            Role::Timestamp,
            self.timestamp_version,
            json!({ "meta": { "snapshot.json": meta_file(self.snapshot_version, &snapshot) } }),
        )?;
        write_timestamp(&meta_dir.join("timestamp.json"), &timestamp)?;
        Ok(Published {
            root: None,
            targets: self.targets.version,
            snapshot: self.snapshot_version,
            timestamp: self.timestamp_version,
            changed,
        })
    }

    fn sign(&self, role: Role, version: u64, body: Value) -> Result<Vec<u8>, TufError> {
        let expires = self.now + self.expiry.of(role);
        let keys = self.role_keys(role)?;
        let refs: Vec<&SecretKey> = keys.iter().collect();
        Ok(Envelope::sign(signed_object(role, version, expires, body), &refs)?.to_bytes())
    }

    /// Writes `N.root.json`, signed by the current root keys and by
    /// `also` (the previous root's keys, after a rotation).
    fn write_root(&self, also: &[SecretKey]) -> Result<(), TufError> {
        let keys = self.role_keys(Role::Root)?;
        let mut refs: Vec<&SecretKey> = keys.iter().collect();
        for k in also {
            if !refs.iter().any(|m| m.public() == k.public()) {
                refs.push(k);
            }
        }
        let body = json!({
            "consistent_snapshot": self.root.consistent_snapshot,
            "keys": self.root.keys,
            "roles": self.root.roles,
        });
        let expires = crate::utc::parse(&self.root.expires).unwrap_or(self.now + self.expiry.root);
        let env = Envelope::sign(
            signed_object(Role::Root, self.root.version, expires, body),
            &refs,
        )?;
        write_file(
            &self
                .dir
                .join("metadata")
                .join(format!("{}.root.json", self.root.version)),
            &env.to_bytes(),
        )
    }

    /// The private keys of `role`'s current key ids, from the keys directory.
    fn role_keys(&self, role: Role) -> Result<Vec<SecretKey>, TufError> {
        let ids = &self.root.role(role)?.keyids;
        let mut found = Vec::new();
        for path in key_files(&self.keys_dir, role)? {
            let k = SecretKey::read_pem_file(&path)
                .map_err(|e| TufError::bad(&path.display().to_string(), e))?;
            if ids.contains(&key_id(&k.public())) {
                found.push(k);
            }
        }
        let need = self.root.role(role)?.threshold as usize;
        if found.len() < need {
            return Err(TufError::bad(
                &self.keys_dir.display().to_string(),
                format!(
                    "{} of the {role} role's keys are here, {need} needed to sign",
                    found.len()
                ),
            ));
        }
        Ok(found)
    }

    fn next_generation(&self, role: Role) -> Result<u32, TufError> {
        let mut g = 1;
        for p in key_files(&self.keys_dir, role)? {
            if let Some(n) = generation_of(&p, role) {
                g = g.max(n + 1);
            }
        }
        Ok(g)
    }

    fn store_target(&self, name: &str, sha: &str, src: &Path) -> Result<(), TufError> {
        let dest = self.target_path(name, sha);
        if dest.exists() {
            return Ok(());
        }
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| TufError::io(format!("creating {}", dir.display()), e))?;
        }
        let mut out = crate::io::atomic::AtomicFile::create(&dest)
            .map_err(|e| TufError::io(format!("creating {}", dest.display()), e))?;
        let mut input = std::fs::File::open(src)
            .map_err(|e| TufError::io(format!("opening {}", src.display()), e))?;
        std::io::copy(&mut input, out.file())
            .and_then(|_| out.commit())
            .map_err(|e| TufError::io(format!("writing {}", dest.display()), e))
    }

    fn store_bytes(&self, name: &str, sha: &str, bytes: &[u8]) -> Result<(), TufError> {
        write_file(&self.target_path(name, sha), bytes)
    }

    fn target_path(&self, name: &str, sha: &str) -> PathBuf {
        let (dir, base) = name.rsplit_once('/').unwrap_or(("", name));
        self.dir
            .join("targets")
            .join(dir)
            .join(format!("{sha}.{base}"))
    }
}

fn meta_file(version: u64, bytes: &[u8]) -> MetaFile {
    MetaFile {
        version,
        length: Some(bytes.len() as u64),
        hashes: Some(BTreeMap::from([(
            "sha256".to_string(),
            hex(&Sha256::digest(bytes)),
        )])),
    }
}

fn check_channel(channel: &str) -> Result<(), TufError> {
    let ok = !channel.is_empty()
        && channel.len() <= 64
        && channel
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
        && !channel.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(TufError::bad(
            &format!("channel {channel:?}"),
            "use 1-64 of A-Z a-z 0-9 - _ . (not starting with .)",
        ))
    }
}

fn check_rollout(rollout: u32) -> Result<(), TufError> {
    if rollout > 100 {
        return Err(TufError::bad(
            "--rollout",
            format!("{rollout} is not a percentage (0-100)"),
        ));
    }
    Ok(())
}

fn hash_file(path: &Path) -> Result<(u64, String), TufError> {
    let f = std::fs::File::open(path)
        .map_err(|e| TufError::io(format!("opening {}", path.display()), e))?;
    let (digest, n) = crate::io::hash::sha256_reader(f)
        .map_err(|e| TufError::io(format!("reading {}", path.display()), e))?;
    Ok((n, hex(&digest)))
}

fn read_envelope(path: &Path) -> Result<Envelope, TufError> {
    let bytes =
        std::fs::read(path).map_err(|e| TufError::io(format!("reading {}", path.display()), e))?;
    Envelope::parse(&path.display().to_string(), &bytes)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), TufError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| TufError::io(format!("creating {}", dir.display()), e))?;
    }
    crate::io::atomic::write_atomic(path, bytes)
        .map_err(|e| TufError::io(format!("writing {}", path.display()), e))
}

/// Writes `timestamp.json` so that its modification time is later than
/// the one it replaces: static servers derive `ETag` and `Last-Modified`
/// from the time (nginx: whole seconds) and the size, and a new timestamp
/// of the same size within the same second would otherwise be answered
/// `304 Not Modified` to a device that asks conditionally.
fn write_timestamp(path: &Path, bytes: &[u8]) -> Result<(), TufError> {
    let before = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    write_file(path, bytes)?;
    let Some(before) = before else {
        return Ok(());
    };
    let whole = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let f = std::fs::File::options()
        .write(true)
        .open(path)
        .map_err(|e| TufError::io(format!("opening {}", path.display()), e))?;
    let now = f
        .metadata()
        .and_then(|m| m.modified())
        .map_err(|e| TufError::io(format!("reading {}", path.display()), e))?;
    if whole(now) <= whole(before) {
        let later = std::time::UNIX_EPOCH + std::time::Duration::from_secs(whole(before) + 1);
        f.set_modified(later)
            .and_then(|()| f.sync_all())
            .map_err(|e| TufError::io(format!("setting the time of {}", path.display()), e))?;
    }
    Ok(())
}

fn refuse_keys_inside(dir: &Path, keys: &Path) -> Result<(), TufError> {
    let abs = |p: &Path| -> PathBuf { std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()) };
    if abs(keys).starts_with(abs(dir)) {
        return Err(TufError::bad(
            &keys.display().to_string(),
            "the keys directory must not be inside the repository (it would be uploaded)",
        ));
    }
    Ok(())
}

fn private_dir(dir: &Path) -> Result<(), TufError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| TufError::io(format!("creating {}", dir.display()), e))
}

/// `KEYS/<role>.<generation>-<i>.key`: generation 1 from `init`, +1 per
/// rotation.
fn make_keys(
    dir: &Path,
    role: Role,
    generation: u32,
    count: u32,
) -> Result<Vec<SecretKey>, TufError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut out = Vec::new();
    for i in 1..=count {
        let path = dir.join(format!("{}.{generation}-{i}.key", role.name()));
        let key = SecretKey::generate().map_err(|e| TufError::bad(role.name(), e))?;
        let pem = key.to_pem().map_err(|e| TufError::bad(role.name(), e))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| TufError::io(format!("creating {}", path.display()), e))?;
        std::io::Write::write_all(&mut f, pem.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| TufError::io(format!("writing {}", path.display()), e))?;
        out.push(key);
    }
    Ok(out)
}

/// Renames the older generations' key files of `role` to `*.key.retired`
/// (kept, never used to sign again).
fn retire_keys(dir: &Path, role: Role, current: u32) -> Result<(), TufError> {
    for p in key_files(dir, role)? {
        if generation_of(&p, role).is_some_and(|g| g < current) {
            let to = p.with_extension("key.retired");
            std::fs::rename(&p, &to)
                .map_err(|e| TufError::io(format!("retiring {}", p.display()), e))?;
        }
    }
    Ok(())
}

fn key_files(dir: &Path, role: Role) -> Result<Vec<PathBuf>, TufError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| TufError::io(format!("reading {}", dir.display()), e))?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| generation_of(p, role).is_some())
        .collect();
    out.sort();
    Ok(out)
}

fn generation_of(path: &Path, role: Role) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    let rest = name
        .strip_prefix(role.name())?
        .strip_prefix('.')?
        .strip_suffix(".key")?;
    rest.split_once('-')?.0.parse().ok()
}
