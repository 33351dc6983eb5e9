//! Secure Boot key material: an RSA-2048 key and a self-signed X.509 v3
//! certificate (SHA-256 with RSA) for each of the platform key (PK), the
//! key exchange key (KEK) and the signature database key (db).
//!
//! The certificates are valid from 2000-01-01 and never expire (RFC 5280's
//! 99991231235959Z), so a device without a real-time clock never sees them
//! out of date.

use super::SignError;
use super::der::{self, NULL, SEQUENCE, cons, oid, small_int, tlv};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use sha2::{Digest, Sha256};

/// The three roles of a Secure Boot key hierarchy, in enrollment order.
pub const ROLES: [&str; 3] = ["PK", "KEK", "db"];

/// One generated key: PKCS#8 PEM private key and PEM certificate.
pub struct KeyPair {
    /// `-----BEGIN PRIVATE KEY-----` (PKCS#8).
    pub key_pem: String,
    /// `-----BEGIN CERTIFICATE-----`.
    pub cert_pem: String,
}

const SHA256_WITH_RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 11];
const COMMON_NAME: &[u64] = &[2, 5, 4, 3];
const BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];

fn name(common_name: &str) -> Vec<u8> {
    let atv = cons(
        SEQUENCE,
        &[&oid(COMMON_NAME), &tlv(0x0C, common_name.as_bytes())],
    );
    cons(SEQUENCE, &[&der::set_of(vec![atv])])
}

/// Generates an RSA-2048 key and its self-signed certificate named
/// `common_name`.
pub fn generate(common_name: &str) -> Result<KeyPair, SignError> {
    let mut rng = rsa::rand_core::OsRng;
    let key = RsaPrivateKey::new(&mut rng, 2048)
        .map_err(|e| SignError::Key(format!("generating an RSA key: {e}")))?;
    let spki = key
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| SignError::Key(format!("encoding the public key: {e}")))?;
    let mut serial = [0u8; 16];
    rustix::rand::getrandom(&mut serial, rustix::rand::GetRandomFlags::empty())
        .map_err(|e| SignError::Key(format!("reading random bytes: {e}")))?;
    serial[0] = (serial[0] & 0x7F) | 0x40; // positive, 16 bytes
    let algorithm = cons(SEQUENCE, &[&oid(SHA256_WITH_RSA), &tlv(NULL, &[])]);
    let validity = cons(
        SEQUENCE,
        &[&tlv(0x17, b"000101000000Z"), &tlv(0x18, b"99991231235959Z")],
    );
    let ca = cons(SEQUENCE, &[&tlv(0x01, &[0xFF])]);
    let extension = cons(
        SEQUENCE,
        &[
            &oid(BASIC_CONSTRAINTS),
            &tlv(0x01, &[0xFF]),
            &tlv(der::OCTET_STRING, &ca),
        ],
    );
    let tbs = cons(
        SEQUENCE,
        &[
            &tlv(0xA0, &small_int(2)),
            &tlv(der::INTEGER, &serial),
            &algorithm,
            &name(common_name),
            &validity,
            &name(common_name),
            spki.as_bytes(),
            &tlv(0xA3, &cons(SEQUENCE, &[&extension])),
        ],
    );
    let signature = key
        .sign(
            Pkcs1v15Sign {
                hash_len: Some(32),
                prefix: super::SHA256_PREFIX.to_vec().into_boxed_slice(),
            },
            &Sha256::digest(&tbs),
        )
        .map_err(|e| SignError::Key(format!("signing the certificate: {e}")))?;
    let mut bits = vec![0u8];
    bits.extend_from_slice(&signature);
    let cert = cons(SEQUENCE, &[&tbs, &algorithm, &tlv(0x03, &bits)]);
    let key_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| SignError::Key(format!("encoding the private key: {e}")))?
        .to_string();
    let cert_pem = pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, &cert)
        .map_err(|e| SignError::Key(format!("encoding the certificate: {e}")))?;
    Ok(KeyPair { key_pem, cert_pem })
}
