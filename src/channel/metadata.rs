//! TUF metadata (specification 1.0): the four top-level roles, their
//! envelope of signatures, Ed25519 keys as TUF names them, and signing.
//!
//! A signature covers the canonical JSON of the `signed` object as it was
//! received ([`Envelope::signed`]), so fields this reader does not know
//! are still covered; the typed views ([`Root`], [`Timestamp`], ...) are
//! parsed only after the signatures were checked.

use super::TufError;
use super::canonical;
use crate::bundle::signing::{PublicKey, SecretKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The specification version slate writes.
pub const SPEC_VERSION: &str = "1.0.31";

/// The four top-level roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Signs the keys of every role.
    Root,
    /// Signs the targets (bundles, heads) and their custom data.
    Targets,
    /// Signs the versions of the targets metadata.
    Snapshot,
    /// Signs the current snapshot's version; short-lived.
    Timestamp,
}

impl Role {
    /// Every role, root first.
    pub const ALL: [Role; 4] = [Role::Root, Role::Targets, Role::Snapshot, Role::Timestamp];

    /// `root`, `targets`, `snapshot`, `timestamp`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Root => "root",
            Role::Targets => "targets",
            Role::Snapshot => "snapshot",
            Role::Timestamp => "timestamp",
        }
    }

    /// The role named `name`.
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One signature of an envelope.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Signature {
    /// The signing key's id.
    pub keyid: String,
    /// The signature, hex.
    pub sig: String,
}

/// Signed metadata as it travels: the `signed` object and its signatures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// The signed object, exactly as received.
    pub signed: Value,
    /// Signatures over its canonical form.
    pub signatures: Vec<Signature>,
}

impl Envelope {
    /// Parses metadata bytes named `name` (for messages).
    pub fn parse(name: &str, bytes: &[u8]) -> Result<Envelope, TufError> {
        serde_json::from_slice(bytes)
            .map_err(|e| TufError::bad(name, format!("not TUF metadata: {e}")))
    }

    /// Signs `signed` with each of `keys`.
    pub fn sign(signed: Value, keys: &[&SecretKey]) -> Result<Envelope, TufError> {
        let message = canonical::encode(&signed).map_err(|e| TufError::bad("metadata", e))?;
        let signatures = keys
            .iter()
            .map(|k| Signature {
                keyid: key_id(&k.public()),
                sig: hex(&k.sign(&message)),
            })
            .collect();
        Ok(Envelope { signed, signatures })
    }

    /// The serialised file: pretty JSON (what python-tuf writes too),
    /// newline-terminated.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("metadata serialise");
        out.push(b'\n');
        out
    }

    /// The `_type` field of the signed object.
    pub fn role_type(&self) -> Option<&str> {
        self.signed.get("_type").and_then(Value::as_str)
    }

    /// Checks that at least `role.threshold` distinct keys of `role`, as
    /// `keys` defines them, signed this envelope; `name` is for messages.
    pub fn verify(
        &self,
        name: &str,
        role: &RoleKeys,
        keys: &BTreeMap<String, Key>,
    ) -> Result<(), TufError> {
        let message = canonical::encode(&self.signed).map_err(|e| TufError::bad(name, e))?;
        let mut good: Vec<&str> = Vec::new();
        for s in &self.signatures {
            if good.contains(&s.keyid.as_str()) || !role.keyids.contains(&s.keyid) {
                continue;
            }
            let Some(key) = keys.get(&s.keyid).and_then(|k| k.public().ok()) else {
                continue;
            };
            let Some(sig) = unhex(&s.sig).and_then(|b| <[u8; 64]>::try_from(b).ok()) else {
                continue;
            };
            if key.verify(&message, &sig) {
                good.push(&s.keyid);
            }
        }
        if (good.len() as u64) < role.threshold.max(1) {
            return Err(TufError::Signatures {
                name: name.to_string(),
                good: good.len(),
                threshold: role.threshold,
            });
        }
        Ok(())
    }

    /// The typed view of the signed object, checked to be of `role`.
    pub fn typed<T: for<'de> Deserialize<'de>>(
        &self,
        name: &str,
        role: Role,
    ) -> Result<T, TufError> {
        if self.role_type() != Some(role.name()) {
            return Err(TufError::bad(
                name,
                format!("its _type is {:?}, not {:?}", self.role_type(), role.name()),
            ));
        }
        serde_json::from_value(self.signed.clone()).map_err(|e| TufError::bad(name, e))
    }
}

/// A public key as TUF metadata lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Key {
    /// `ed25519`.
    pub keytype: String,
    /// `ed25519`.
    pub scheme: String,
    /// `{"public": "<64 hex digits>"}`.
    pub keyval: BTreeMap<String, String>,
}

impl Key {
    /// The TUF form of an Ed25519 public key.
    pub fn ed25519(key: &PublicKey) -> Key {
        Key {
            keytype: "ed25519".into(),
            scheme: "ed25519".into(),
            keyval: BTreeMap::from([("public".to_string(), hex(&key.to_raw()))]),
        }
    }

    /// The Ed25519 key this names; other key types are unsupported.
    pub fn public(&self) -> Result<PublicKey, TufError> {
        if self.keytype != "ed25519" || self.scheme != "ed25519" {
            return Err(TufError::Unsupported(format!(
                "key type {}/{} (slate verifies ed25519 only)",
                self.keytype, self.scheme
            )));
        }
        let raw = self
            .keyval
            .get("public")
            .and_then(|h| unhex(h))
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| TufError::bad("key", "keyval.public is not 32 bytes of hex"))?;
        PublicKey::from_raw(&raw).map_err(|e| TufError::bad("key", e))
    }
}

/// A key's TUF id: SHA-256 of the canonical JSON of its [`Key`] form.
pub fn key_id(key: &PublicKey) -> String {
    let v = serde_json::to_value(Key::ed25519(key)).expect("key serialise");
    hex(&Sha256::digest(
        canonical::encode(&v).expect("keys are canonical"),
    ))
}

/// The keys of one role and how many must sign.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoleKeys {
    /// Ids of the role's keys.
    pub keyids: Vec<String>,
    /// Signatures needed.
    pub threshold: u64,
}

/// The root role's signed object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Root {
    /// Version, from 1, +1 per new root.
    pub version: u64,
    /// Expiry, RFC 3339.
    pub expires: String,
    /// Whether snapshot and targets metadata (and targets) carry their
    /// version (hash) in their file names.
    pub consistent_snapshot: bool,
    /// Every key of every role, by id.
    pub keys: BTreeMap<String, Key>,
    /// Keys and threshold of each role.
    pub roles: BTreeMap<String, RoleKeys>,
}

impl Root {
    /// The keys and threshold of `role`.
    pub fn role(&self, role: Role) -> Result<&RoleKeys, TufError> {
        self.roles
            .get(role.name())
            .ok_or_else(|| TufError::bad("root", format!("no {role} role")))
    }

    /// Checks that `env` is signed by `role` as this root defines it.
    pub fn verify(&self, name: &str, role: Role, env: &Envelope) -> Result<(), TufError> {
        env.verify(name, self.role(role)?, &self.keys)
    }
}

/// A metadata file as timestamp and snapshot describe it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MetaFile {
    /// Its version.
    pub version: u64,
    /// Its length in bytes, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// Its hashes (`sha256`), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashes: Option<BTreeMap<String, String>>,
}

/// The timestamp role's signed object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timestamp {
    /// Version.
    pub version: u64,
    /// Expiry, RFC 3339.
    pub expires: String,
    /// `snapshot.json` only.
    pub meta: BTreeMap<String, MetaFile>,
}

/// The snapshot role's signed object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// Version.
    pub version: u64,
    /// Expiry, RFC 3339.
    pub expires: String,
    /// `targets.json` (and delegated roles, which slate does not use).
    pub meta: BTreeMap<String, MetaFile>,
}

/// One target file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetFile {
    /// Length in bytes.
    pub length: u64,
    /// Hashes; slate checks `sha256`.
    pub hashes: BTreeMap<String, String>,
    /// Application data (slate's: docs/channel.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Value>,
}

impl TargetFile {
    /// The SHA-256 hex digest, which slate requires.
    pub fn sha256(&self, name: &str) -> Result<&str, TufError> {
        self.hashes
            .get("sha256")
            .map(String::as_str)
            .ok_or_else(|| TufError::bad(name, "no sha256 hash"))
    }
}

/// The targets role's signed object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Targets {
    /// Version.
    pub version: u64,
    /// Expiry, RFC 3339.
    pub expires: String,
    /// The targets, by name.
    pub targets: BTreeMap<String, TargetFile>,
}

/// The signed object of `role` with the common fields, for writers.
pub fn signed_object(role: Role, version: u64, expires: i64, body: Value) -> Value {
    let mut v = json!({
        "_type": role.name(),
        "spec_version": SPEC_VERSION,
        "version": version,
        "expires": crate::utc::format(expires),
    });
    if let (Value::Object(m), Value::Object(b)) = (&mut v, body) {
        m.extend(b);
    }
    v
}

pub use crate::io::hash::hex;

/// Bytes of lowercase or uppercase hex; `None` if not hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_of(keys: &[&SecretKey], threshold: u64) -> Root {
        let ids: Vec<String> = keys.iter().map(|k| key_id(&k.public())).collect();
        Root {
            version: 1,
            expires: "2030-01-01T00:00:00Z".into(),
            consistent_snapshot: true,
            keys: keys
                .iter()
                .map(|k| (key_id(&k.public()), Key::ed25519(&k.public())))
                .collect(),
            roles: BTreeMap::from([(
                "timestamp".to_string(),
                RoleKeys {
                    keyids: ids,
                    threshold,
                },
            )]),
        }
    }

    #[test]
    fn threshold_counts_distinct_listed_keys() {
        let (a, b, c) = (
            SecretKey::from_seed(&[1; 32]),
            SecretKey::from_seed(&[2; 32]),
            SecretKey::from_seed(&[3; 32]),
        );
        let root = root_of(&[&a, &b], 2);
        let body = signed_object(Role::Timestamp, 1, 0, json!({"meta": {}}));
        let both = Envelope::sign(body.clone(), &[&a, &b]).unwrap();
        root.verify("t", Role::Timestamp, &both).unwrap();
        // One key twice, or a key the role does not list, is one signature.
        let twice = Envelope::sign(body.clone(), &[&a, &a]).unwrap();
        let e = root.verify("t", Role::Timestamp, &twice).unwrap_err();
        assert!(e.to_string().contains("1 valid signature"), "{e}");
        let foreign = Envelope::sign(body.clone(), &[&a, &c]).unwrap();
        assert!(root.verify("t", Role::Timestamp, &foreign).is_err());
        // A changed field breaks every signature.
        let mut changed = both.clone();
        changed.signed["version"] = json!(2);
        assert!(root.verify("t", Role::Timestamp, &changed).is_err());
    }

    #[test]
    fn key_ids_and_hex() {
        let k = SecretKey::from_seed(&[9; 32]);
        let id = key_id(&k.public());
        assert_eq!(id.len(), 64);
        assert_eq!(id, key_id(&k.public()));
        assert_eq!(unhex(&hex(&[0, 255, 16])), Some(vec![0, 255, 16]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }
}
