//! Ed25519 keys in the files openssl reads and writes, key ids, and the
//! signature check a reader runs before it parses a manifest.
//!
//! - Private keys: PKCS#8 v1 PEM (`-----BEGIN PRIVATE KEY-----`), exactly what
//!   `openssl genpkey -algorithm ed25519` writes. Encrypted keys are refused.
//! - Public keys: SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), what
//!   `openssl pkey -pubout` writes.
//! - Key id: SHA-256 of the public key's SPKI DER encoding (44 bytes: a fixed
//!   12-byte prefix, then the raw key), so
//!   `openssl pkey -pubin -in KEY.pub -outform DER | sha256sum` prints it.

use super::error::BundleError;
use super::format::SignatureRecord;
use super::manifest::Digest;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use std::fmt;
use std::path::{Path, PathBuf};

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE {
/// SEQUENCE { OID 1.3.101.112 }, BIT STRING (0 unused bits) }; the 32-byte key follows.
pub const SPKI_ED25519_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Identifies a public key: SHA-256 of its SPKI DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 32]);

impl KeyId {
    /// The id of a raw 32-byte Ed25519 public key (valid point or not).
    pub fn of_raw(raw: &[u8; 32]) -> KeyId {
        let mut der = [0u8; 44];
        der[..12].copy_from_slice(&SPKI_ED25519_PREFIX);
        der[12..].copy_from_slice(raw);
        KeyId(Digest::of(&der).0)
    }

    /// The first 16 hex digits, for messages.
    pub fn short(&self) -> String {
        self.to_string()[..16].to_string()
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&Digest(self.0), f)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Why a key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The file is not a key of the expected kind.
    #[error("{}: {reason}", .path.display())]
    Invalid {
        /// The key file (empty for keys given as bytes).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The operating system gave no randomness.
    #[error("reading random bytes from the OS: {0}")]
    Random(std::io::Error),
    /// The threshold cannot be met by the trusted keys.
    #[error(
        "threshold {threshold} must be between 1 and the number of distinct trusted keys ({keys})"
    )]
    Threshold {
        /// Requested.
        threshold: usize,
        /// Distinct trusted keys.
        keys: usize,
    },
}

fn invalid(path: &Path, reason: impl Into<String>) -> KeyError {
    KeyError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_text(path: &Path) -> Result<String, KeyError> {
    let bytes = std::fs::read(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // Key files are tiny; anything large is the wrong file.
    if bytes.len() > 64 * 1024 {
        return Err(invalid(path, "too large to be a PEM key"));
    }
    String::from_utf8(bytes).map_err(|_| invalid(path, "not a PEM file (not text)"))
}

/// The PEM label of the first block, for precise messages.
fn pem_label(pem: &str) -> Option<&str> {
    let start = pem.find("-----BEGIN ")? + "-----BEGIN ".len();
    let rest = &pem[start..];
    Some(&rest[..rest.find("-----")?])
}

/// An Ed25519 public key, checked to be a valid, non-weak curve point.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    id: KeyId,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id)
    }
}

impl PublicKey {
    /// From the raw 32-byte RFC 8032 encoding.
    pub fn from_raw(raw: &[u8; 32]) -> Result<PublicKey, KeyError> {
        Self::from_raw_at(raw, Path::new(""))
    }

    fn from_raw_at(raw: &[u8; 32], path: &Path) -> Result<PublicKey, KeyError> {
        let key = VerifyingKey::from_bytes(raw)
            .map_err(|_| invalid(path, "not a valid Ed25519 public key"))?;
        if key.is_weak() {
            return Err(invalid(path, "weak (small-order) Ed25519 public key"));
        }
        Ok(PublicKey {
            key,
            id: KeyId::of_raw(raw),
        })
    }

    /// From SPKI PEM text (`-----BEGIN PUBLIC KEY-----`); `path` names it in errors.
    pub fn from_pem(pem: &str, path: &Path) -> Result<PublicKey, KeyError> {
        match pem_label(pem) {
            Some("PUBLIC KEY") => {}
            Some("PRIVATE KEY") | Some("ENCRYPTED PRIVATE KEY") => {
                return Err(invalid(
                    path,
                    "is a private key; give the public key (openssl pkey -in KEY -pubout)",
                ));
            }
            Some(other) => {
                return Err(invalid(
                    path,
                    format!("PEM block {other:?} is not an SPKI public key"),
                ));
            }
            None => return Err(invalid(path, "not a PEM public key")),
        }
        let key = VerifyingKey::from_public_key_pem(pem)
            .map_err(|e| invalid(path, format!("not an Ed25519 public key ({e})")))?;
        Self::from_raw_at(key.as_bytes(), path)
    }

    /// Reads an SPKI PEM file.
    pub fn read_pem_file(path: &Path) -> Result<PublicKey, KeyError> {
        Self::from_pem(&read_text(path)?, path)
    }

    /// SPKI PEM text with LF line endings.
    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }

    /// The key id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The raw 32-byte encoding.
    pub fn to_raw(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Verifies a signature with the strict rules of `verify_strict` (no
    /// small-order components, canonical S).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let sig = Signature::from_bytes(signature);
        self.key.verify_strict(message, &sig).is_ok()
    }
}

/// An Ed25519 private key.
pub struct SecretKey {
    key: SigningKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public().id())
    }
}

impl SecretKey {
    /// A new key from 32 bytes of OS randomness (getrandom, which waits until
    /// the kernel's pool is initialised).
    pub fn generate() -> Result<SecretKey, KeyError> {
        let mut seed = [0u8; 32];
        let mut filled = 0;
        while filled < seed.len() {
            let n =
                rustix::rand::getrandom(&mut seed[filled..], rustix::rand::GetRandomFlags::empty())
                    .map_err(|e| KeyError::Random(e.into()))?;
            filled += n;
        }
        let key = SecretKey::from_seed(&seed);
        seed.fill(0);
        Ok(key)
    }

    /// From a 32-byte seed (the RFC 8032 private key).
    pub fn from_seed(seed: &[u8; 32]) -> SecretKey {
        SecretKey {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// From PKCS#8 PEM text; `path` names it in errors.
    pub fn from_pem(pem: &str, path: &Path) -> Result<SecretKey, KeyError> {
        match pem_label(pem) {
            Some("PRIVATE KEY") => {}
            Some("ENCRYPTED PRIVATE KEY") => {
                return Err(invalid(
                    path,
                    "encrypted private keys are not supported (decrypt with openssl pkey)",
                ));
            }
            Some("PUBLIC KEY") => {
                return Err(invalid(
                    path,
                    "is a public key; signing needs the private key",
                ));
            }
            Some(other) => {
                return Err(invalid(
                    path,
                    format!("PEM block {other:?} is not a PKCS#8 private key"),
                ));
            }
            None => return Err(invalid(path, "not a PEM private key")),
        }
        let key = SigningKey::from_pkcs8_pem(pem)
            .map_err(|e| invalid(path, format!("not an Ed25519 private key ({e})")))?;
        Ok(SecretKey { key })
    }

    /// Reads a PKCS#8 PEM file.
    pub fn read_pem_file(path: &Path) -> Result<SecretKey, KeyError> {
        Self::from_pem(&read_text(path)?, path)
    }

    /// PKCS#8 v1 PEM text (no embedded public key, as openssl writes it).
    /// The caller should not keep the text longer than needed.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        let bytes = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.key.to_bytes(),
            public_key: None,
        };
        bytes
            .to_pkcs8_pem(LineEnding::LF)
            .map(|z| z.as_str().to_string())
            .map_err(|e| invalid(Path::new(""), format!("encoding the private key: {e}")))
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        let key = self.key.verifying_key();
        PublicKey {
            id: KeyId::of_raw(key.as_bytes()),
            key,
        }
    }

    /// Signs `message` (pure Ed25519, deterministic).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// A signature record for `manifest`.
    pub fn sign_record(&self, manifest: &[u8]) -> SignatureRecord {
        SignatureRecord {
            public_key: self.public().to_raw(),
            signature: self.sign(manifest),
        }
    }
}

/// The keys a verifier trusts and how many of them must have signed.
#[derive(Debug, Clone)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
    threshold: usize,
}

impl TrustedKeys {
    /// Trusts `keys` (duplicates count once) and requires signatures by
    /// `threshold` distinct ones of them.
    pub fn new(
        keys: impl IntoIterator<Item = PublicKey>,
        threshold: usize,
    ) -> Result<TrustedKeys, KeyError> {
        let mut distinct: Vec<PublicKey> = Vec::new();
        for k in keys {
            if !distinct.iter().any(|d| d.id == k.id) {
                distinct.push(k);
            }
        }
        if threshold == 0 || threshold > distinct.len() {
            return Err(KeyError::Threshold {
                threshold,
                keys: distinct.len(),
            });
        }
        Ok(TrustedKeys {
            keys: distinct,
            threshold,
        })
    }

    /// Reads SPKI PEM files.
    pub fn from_pem_files<P: AsRef<Path>>(
        paths: &[P],
        threshold: usize,
    ) -> Result<TrustedKeys, KeyError> {
        let keys = paths
            .iter()
            .map(|p| PublicKey::read_pem_file(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(keys, threshold)
    }

    /// From raw 32-byte public keys (e.g. built into a device image).
    pub fn from_raw(raw: &[[u8; 32]], threshold: usize) -> Result<TrustedKeys, KeyError> {
        let keys = raw
            .iter()
            .map(PublicKey::from_raw)
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(keys, threshold)
    }

    /// The distinct trusted keys.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// How many distinct trusted keys must have signed.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// The trusted key with exactly these raw bytes.
    fn find(&self, raw: &[u8; 32]) -> Option<&PublicKey> {
        self.keys.iter().find(|k| k.key.as_bytes() == raw)
    }
}

/// What the reader found for one signature record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureStatus {
    /// Key id of the embedded public key.
    pub key_id: KeyId,
    /// Whether the key is one of the trusted keys (always false when reading
    /// without trusted keys).
    pub trusted: bool,
    /// Whether the signature verifies over the manifest with its embedded key.
    pub valid: bool,
}

fn check_record(manifest: &[u8], r: &SignatureRecord) -> bool {
    PublicKey::from_raw(&r.public_key).is_ok_and(|k| k.verify(manifest, &r.signature))
}

/// Checks the signature records against the trusted keys: every signature by
/// a trusted key must verify, and at least `threshold` distinct trusted keys
/// must have signed. Signatures by other keys are reported, not counted.
pub(crate) fn verify_trusted(
    manifest: &[u8],
    records: &[SignatureRecord],
    trusted: &TrustedKeys,
) -> Result<Vec<SignatureStatus>, BundleError> {
    let mut statuses = Vec::with_capacity(records.len());
    let mut counted: Vec<KeyId> = Vec::new();
    for r in records {
        let key_id = KeyId::of_raw(&r.public_key);
        match trusted.find(&r.public_key) {
            Some(k) => {
                if !k.verify(manifest, &r.signature) {
                    return Err(BundleError::BadSignature { key_id });
                }
                if !counted.contains(&key_id) {
                    counted.push(key_id);
                }
                statuses.push(SignatureStatus {
                    key_id,
                    trusted: true,
                    valid: true,
                });
            }
            None => statuses.push(SignatureStatus {
                key_id,
                trusted: false,
                valid: check_record(manifest, r),
            }),
        }
    }
    if counted.len() < trusted.threshold {
        return Err(BundleError::Untrusted {
            valid: counted.len(),
            threshold: trusted.threshold,
            signers: statuses.iter().map(|s| s.key_id).collect(),
        });
    }
    Ok(statuses)
}

/// Checks each record against its own embedded key only: integrity, not
/// trust. At least one must verify before the manifest is parsed.
pub(crate) fn verify_embedded(
    manifest: &[u8],
    records: &[SignatureRecord],
) -> Result<Vec<SignatureStatus>, BundleError> {
    let statuses: Vec<SignatureStatus> = records
        .iter()
        .map(|r| SignatureStatus {
            key_id: KeyId::of_raw(&r.public_key),
            trusted: false,
            valid: check_record(manifest, r),
        })
        .collect();
    match statuses.iter().find(|s| !s.valid) {
        Some(bad) if !statuses.iter().any(|s| s.valid) => {
            Err(BundleError::BadSignature { key_id: bad.key_id })
        }
        None if statuses.is_empty() => Err(BundleError::NoSignature),
        _ => Ok(statuses),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed(&[n; 32])
    }

    #[test]
    fn pem_round_trip_and_key_id() {
        let k = key(7);
        let pem = k.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let back = SecretKey::from_pem(&pem, Path::new("k")).unwrap();
        assert_eq!(back.public(), k.public());
        let pub_pem = k.public().to_pem();
        assert!(pub_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let p = PublicKey::from_pem(&pub_pem, Path::new("p")).unwrap();
        assert_eq!(p, k.public());
        // The key id is the SHA-256 of the SPKI DER, which is the PEM's base64 body.
        let der: Vec<u8> = SPKI_ED25519_PREFIX
            .iter()
            .copied()
            .chain(p.to_raw())
            .collect();
        assert_eq!(p.id().0, Digest::of(&der).0);
        // Swapping public and private files is named.
        let e = SecretKey::from_pem(&pub_pem, Path::new("p.pub")).unwrap_err();
        assert!(e.to_string().contains("public key"), "{e}");
        let e = PublicKey::from_pem(&pem, Path::new("k.key")).unwrap_err();
        assert!(e.to_string().contains("private key"), "{e}");
    }

    #[test]
    fn threshold_counts_distinct_trusted_keys() {
        let (a, b, c) = (key(1), key(2), key(3));
        let m = b"manifest";
        let trusted = TrustedKeys::new([a.public(), b.public()], 2).unwrap();
        let both = [a.sign_record(m), b.sign_record(m)];
        assert_eq!(verify_trusted(m, &both, &trusted).unwrap().len(), 2);
        // The same key twice is one signer.
        let twice = [a.sign_record(m), a.sign_record(m)];
        let e = verify_trusted(m, &twice, &trusted).unwrap_err();
        assert!(
            matches!(
                e,
                BundleError::Untrusted {
                    valid: 1,
                    threshold: 2,
                    ..
                }
            ),
            "{e}"
        );
        // An untrusted signer does not count.
        let other = [a.sign_record(m), c.sign_record(m)];
        assert!(verify_trusted(m, &other, &trusted).is_err());
        // A bad signature by a trusted key is an error even above threshold.
        let mut bad = both;
        bad[1].signature[0] ^= 1;
        let trusted1 = TrustedKeys::new([a.public(), b.public()], 1).unwrap();
        assert!(matches!(
            verify_trusted(m, &bad, &trusted1).unwrap_err(),
            BundleError::BadSignature { .. }
        ));
        // Duplicates among trusted keys collapse, so the threshold cannot be met.
        assert!(TrustedKeys::new([a.public(), a.public()], 2).is_err());
        assert!(TrustedKeys::new([a.public()], 0).is_err());
    }

    #[test]
    fn embedded_check_needs_one_valid_signature() {
        let a = key(1);
        let m = b"manifest";
        let ok = [a.sign_record(m)];
        assert!(verify_embedded(m, &ok).unwrap()[0].valid);
        let mut bad = ok;
        bad[0].signature[5] ^= 0x10;
        assert!(verify_embedded(m, &bad).is_err());
        let mut bad_key = ok;
        bad_key[0].public_key[0] ^= 1;
        assert!(verify_embedded(m, &bad_key).is_err());
    }

    #[test]
    fn generated_keys_differ() {
        let a = SecretKey::generate().unwrap();
        let b = SecretKey::generate().unwrap();
        assert_ne!(a.public(), b.public());
    }
}
