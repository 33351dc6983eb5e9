//! Authenticode signatures for EFI images (Secure Boot), in Rust: the PE
//! image hash as UEFI firmware computes it, a PKCS#7 SignedData over an
//! `SpcIndirectDataContent` naming that hash, signed with RSA PKCS#1 v1.5
//! and SHA-256, and the result appended as the image's certificate table.
//!
//! RSA PKCS#1 v1.5 signatures are deterministic and the signed attributes
//! carry no signing time, so the same image, key and certificate always
//! give the same signed bytes.
//!
//! The image hash (Microsoft's "Windows Authenticode Portable Executable
//! Signature Format", and EDK2's `HashPeImage`): the headers without the
//! checksum field and the certificate-table directory entry, then each
//! section's raw data in file order, then any data after the last section
//! up to the certificate table.

pub mod der;
pub mod keys;

use crate::uki::Checksum;
use der::{NULL, OCTET_STRING, SEQUENCE, cons, oid, set_of, small_int, tlv};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Why an image could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// Reading or writing a file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: io::Error,
    },
    /// The private key is not usable.
    #[error("{0}")]
    Key(String),
    /// The certificate is not usable, or not the key's.
    #[error("{0}")]
    Cert(String),
    /// The image is not a PE32+ image slate can sign.
    #[error("{0}")]
    Image(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> SignError {
    let context = context.into();
    move |source| SignError::Io { context, source }
}

/// A signing key and its X.509 certificate (PEM files, e.g. `db.key` and
/// `db.crt` as `openssl req -x509` or `slate keygen --secure-boot` write
/// them).
pub struct SigningKey {
    key: RsaPrivateKey,
    cert: Vec<u8>,
    issuer: Vec<u8>,
    serial: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").finish_non_exhaustive()
    }
}

/// The parts of a certificate a signer names: issuer, serial number and
/// the subject public key info.
fn cert_parts(cert: &[u8]) -> Option<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let top = der::read(cert, 0).filter(|e| e.tag == SEQUENCE && e.end == cert.len())?;
    let tbs = *der::children(cert, &top)?.first()?;
    let fields = der::children(cert, &tbs)?;
    // [0] version is optional (v1 certificates omit it).
    let skip = usize::from(fields.first()?.tag == 0xA0);
    let serial = fields.get(skip)?;
    let issuer = fields.get(skip + 2)?;
    let spki = fields.get(skip + 5)?;
    (serial.tag == der::INTEGER && issuer.tag == SEQUENCE && spki.tag == SEQUENCE).then(|| {
        (
            issuer.bytes(cert).to_vec(),
            serial.bytes(cert).to_vec(),
            spki.bytes(cert).to_vec(),
        )
    })
}

impl SigningKey {
    /// Loads a PKCS#8 RSA private key and a PEM certificate, and checks
    /// that the certificate is the key's.
    pub fn load(key_path: &Path, cert_path: &Path) -> Result<Self, SignError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(io_err(format!("reading {}", p.display())))
        };
        let key = RsaPrivateKey::from_pkcs8_pem(&read(key_path)?).map_err(|e| {
            SignError::Key(format!(
                "{}: not a PKCS#8 RSA private key in PEM ({e})",
                key_path.display()
            ))
        })?;
        let cert_text = read(cert_path)?;
        let (label, cert) = pem_rfc7468::decode_vec(cert_text.trim().as_bytes())
            .ok()
            .filter(|(l, _)| *l == "CERTIFICATE")
            .ok_or_else(|| {
                SignError::Cert(format!(
                    "{}: not a PEM certificate (BEGIN CERTIFICATE)",
                    cert_path.display()
                ))
            })?;
        let _ = label;
        let (issuer, serial, spki) = cert_parts(&cert).ok_or_else(|| {
            SignError::Cert(format!("{}: not an X.509 certificate", cert_path.display()))
        })?;
        let public = RsaPublicKey::from_public_key_der(&spki).map_err(|e| {
            SignError::Cert(format!(
                "{}: its public key is not RSA ({e})",
                cert_path.display()
            ))
        })?;
        if public != key.to_public_key() {
            return Err(SignError::Cert(format!(
                "{} is not the certificate of {}",
                cert_path.display(),
                key_path.display()
            )));
        }
        Ok(SigningKey {
            key,
            cert,
            issuer,
            serial,
        })
    }
}

/// Where the image's signature-relevant header fields are.
struct PeLayout {
    checksum_at: u64,
    cert_dir_at: u64,
    size_of_headers: u64,
    /// `(file offset, raw size)` of every section with data, in file order.
    sections: Vec<(u64, u64)>,
    /// The certificate table's `(offset, size)` if the image has one.
    cert_table: (u64, u64),
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn pe_layout(r: &mut (impl Read + Seek)) -> Result<PeLayout, SignError> {
    let bad = |m: &str| SignError::Image(format!("not a PE32+ image: {m}"));
    let mut head = Vec::new();
    r.seek(SeekFrom::Start(0))
        .and_then(|_| r.by_ref().take(64 << 10).read_to_end(&mut head))
        .map_err(io_err("reading the image"))?;
    if head.len() < 0x40 || &head[..2] != b"MZ" {
        return Err(bad("no MZ header"));
    }
    let pe = le32(&head, 0x3C) as usize;
    if pe.checked_add(24).is_none_or(|e| e > head.len()) || &head[pe..pe + 4] != b"PE\0\0" {
        return Err(bad("no PE signature"));
    }
    let coff = pe + 4;
    let count = le16(&head, coff + 2) as usize;
    let opt = coff + 20;
    let table = opt + le16(&head, coff + 16) as usize;
    if table + count * 40 > head.len() || opt + 112 + 5 * 8 > table {
        return Err(bad("truncated headers"));
    }
    if le16(&head, opt) != 0x20B {
        return Err(bad("not PE32+"));
    }
    if le32(&head, opt + 108) < 5 {
        return Err(bad("no certificate table directory entry"));
    }
    let cert_dir_at = (opt + 112 + 4 * 8) as u64;
    let mut sections: Vec<(u64, u64)> = (0..count)
        .map(|i| {
            let s = table + i * 40;
            (
                u64::from(le32(&head, s + 20)),
                u64::from(le32(&head, s + 16)),
            )
        })
        .filter(|(_, size)| *size > 0)
        .collect();
    sections.sort();
    Ok(PeLayout {
        checksum_at: (opt + 64) as u64,
        cert_dir_at,
        size_of_headers: u64::from(le32(&head, opt + 60)),
        sections,
        cert_table: (
            u64::from(le32(&head, cert_dir_at as usize)),
            u64::from(le32(&head, cert_dir_at as usize + 4)),
        ),
    })
}

/// Feeds `len` bytes of `r` from `at` into `h`.
fn hash_range(
    r: &mut (impl Read + Seek),
    h: &mut Sha256,
    at: u64,
    len: u64,
) -> Result<(), SignError> {
    r.seek(SeekFrom::Start(at))
        .map_err(io_err("reading the image"))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = (left.min(buf.len() as u64)) as usize;
        r.read_exact(&mut buf[..n])
            .map_err(io_err("reading the image"))?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

/// The Authenticode SHA-256 of the PE image `r` of `len` bytes.
pub fn image_digest(r: &mut (impl Read + Seek), len: u64) -> Result<[u8; 32], SignError> {
    let l = pe_layout(r)?;
    let mut h = Sha256::new();
    hash_range(r, &mut h, 0, l.checksum_at)?;
    hash_range(
        r,
        &mut h,
        l.checksum_at + 4,
        l.cert_dir_at - l.checksum_at - 4,
    )?;
    if l.size_of_headers < l.cert_dir_at + 8 {
        return Err(SignError::Image(
            "headers end inside the data directory".into(),
        ));
    }
    hash_range(
        r,
        &mut h,
        l.cert_dir_at + 8,
        l.size_of_headers - l.cert_dir_at - 8,
    )?;
    let mut hashed = l.size_of_headers;
    for (at, size) in &l.sections {
        if at + size > len {
            return Err(SignError::Image(
                "a section lies beyond the end of the file".into(),
            ));
        }
        hash_range(r, &mut h, *at, *size)?;
        hashed += size;
    }
    let end = len - l.cert_table.1;
    if end > hashed {
        hash_range(r, &mut h, hashed, end - hashed)?;
    }
    Ok(h.finalize().into())
}

/// OIDs used in the signature.
mod oids {
    pub const SHA256: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 1];
    pub const RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 1];
    pub const SIGNED_DATA: &[u64] = &[1, 2, 840, 113549, 1, 7, 2];
    pub const CONTENT_TYPE: &[u64] = &[1, 2, 840, 113549, 1, 9, 3];
    pub const MESSAGE_DIGEST: &[u64] = &[1, 2, 840, 113549, 1, 9, 4];
    pub const SPC_INDIRECT_DATA: &[u64] = &[1, 3, 6, 1, 4, 1, 311, 2, 1, 4];
    pub const SPC_PE_IMAGE_DATA: &[u64] = &[1, 3, 6, 1, 4, 1, 311, 2, 1, 15];
    pub const SPC_SP_OPUS_INFO: &[u64] = &[1, 3, 6, 1, 4, 1, 311, 2, 1, 12];
}

/// `AlgorithmIdentifier` with NULL parameters.
fn algorithm(arcs: &[u64]) -> Vec<u8> {
    cons(SEQUENCE, &[&oid(arcs), &tlv(NULL, &[])])
}

/// `SpcIndirectDataContent` naming the image digest.
fn indirect_data(digest: &[u8; 32]) -> Vec<u8> {
    // SpcPeImageData: no flags, and the conventional "<<<Obsolete>>>" file
    // link (a [0] BMPString inside [2] inside [0]).
    let obsolete: Vec<u8> = "<<<Obsolete>>>"
        .encode_utf16()
        .flat_map(|c| c.to_be_bytes())
        .collect();
    let link = tlv(0xA0, &tlv(0xA2, &tlv(0x80, &obsolete)));
    let pe_image_data = cons(SEQUENCE, &[&tlv(0x03, &[0]), &link]);
    let value = cons(SEQUENCE, &[&oid(oids::SPC_PE_IMAGE_DATA), &pe_image_data]);
    let digest_info = cons(
        SEQUENCE,
        &[&algorithm(oids::SHA256), &tlv(OCTET_STRING, digest)],
    );
    cons(SEQUENCE, &[&value, &digest_info])
}

/// The DER `SHA-256` DigestInfo prefix of a PKCS#1 v1.5 signature.
const SHA256_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// The PKCS#7 `ContentInfo` (SignedData) of an image with `digest`.
pub fn signed_data(digest: &[u8; 32], key: &SigningKey) -> Result<Vec<u8>, SignError> {
    let content = indirect_data(digest);
    // The message digest covers the content's value, without its own
    // SEQUENCE header (as Authenticode defines it).
    let inner = der::read(&content, 0).expect("own encoding");
    let message_digest: [u8; 32] = Sha256::digest(&content[inner.content..]).into();
    let attribute =
        |arcs: &[u64], value: Vec<u8>| cons(SEQUENCE, &[&oid(arcs), &set_of(vec![value])]);
    let attributes = vec![
        attribute(oids::CONTENT_TYPE, oid(oids::SPC_INDIRECT_DATA)),
        attribute(oids::SPC_SP_OPUS_INFO, cons(SEQUENCE, &[])),
        attribute(oids::MESSAGE_DIGEST, tlv(OCTET_STRING, &message_digest)),
    ];
    // Signed as a SET OF; stored with the [0] IMPLICIT tag.
    let as_set = set_of(attributes);
    let signature = key
        .key
        .sign(
            Pkcs1v15Sign {
                hash_len: Some(32),
                prefix: SHA256_PREFIX.to_vec().into_boxed_slice(),
            },
            &Sha256::digest(&as_set),
        )
        .map_err(|e| SignError::Key(format!("signing: {e}")))?;
    let mut authenticated = as_set.clone();
    authenticated[0] = 0xA0;
    let signer = cons(
        SEQUENCE,
        &[
            &small_int(1),
            &cons(SEQUENCE, &[&key.issuer, &key.serial]),
            &algorithm(oids::SHA256),
            &authenticated,
            &algorithm(oids::RSA),
            &tlv(OCTET_STRING, &signature),
        ],
    );
    let encapsulated = cons(
        SEQUENCE,
        &[&oid(oids::SPC_INDIRECT_DATA), &tlv(0xA0, &content)],
    );
    let signed = cons(
        SEQUENCE,
        &[
            &small_int(1),
            &set_of(vec![algorithm(oids::SHA256)]),
            &encapsulated,
            &tlv(0xA0, &key.cert),
            &set_of(vec![signer]),
        ],
    );
    Ok(cons(
        SEQUENCE,
        &[&oid(oids::SIGNED_DATA), &tlv(0xA0, &signed)],
    ))
}

/// Signs the unsigned PE image `input` into `output` (written to a temp
/// name beside it, fsynced and renamed): the image, zero-padded to 8 bytes,
/// then one `WIN_CERTIFICATE` (revision 2.0, PKCS#7) in the certificate
/// table, the directory entry pointing at it and the PE checksum redone.
pub fn sign_file(input: &Path, output: &Path, key: &SigningKey) -> Result<(), SignError> {
    let mut src = File::open(input).map_err(io_err(format!("opening {}", input.display())))?;
    let len = src
        .metadata()
        .map_err(io_err(format!("reading {}", input.display())))?
        .len();
    let layout = pe_layout(&mut src)?;
    if layout.cert_table != (0, 0) {
        return Err(SignError::Image(format!(
            "{} is signed already",
            input.display()
        )));
    }
    let padded = len.next_multiple_of(8);
    let tmp = output.with_extension("signing");
    let result = (|| {
        let mut out = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&tmp)
            .map_err(io_err(format!("creating {}", tmp.display())))?;
        src.seek(SeekFrom::Start(0))
            .and_then(|_| io::copy(&mut src, &mut out))
            .and_then(|_| out.write_all(&vec![0; (padded - len) as usize]))
            .map_err(io_err(format!("writing {}", tmp.display())))?;
        // Zero padding after the sections is data the hash covers.
        let digest = image_digest(&mut out, padded)?;
        let pkcs7 = signed_data(&digest, key)?;
        let cert_len = 8 + pkcs7.len();
        let table_len = cert_len.next_multiple_of(8);
        let mut table = Vec::with_capacity(table_len);
        table.extend_from_slice(&(cert_len as u32).to_le_bytes());
        table.extend_from_slice(&0x0200u16.to_le_bytes());
        table.extend_from_slice(&0x0002u16.to_le_bytes());
        table.extend_from_slice(&pkcs7);
        table.resize(table_len, 0);
        let mut dir = [0u8; 8];
        dir[..4].copy_from_slice(&(padded as u32).to_le_bytes());
        dir[4..].copy_from_slice(&(table_len as u32).to_le_bytes());
        let w = |e| SignError::Io {
            context: format!("writing {}", tmp.display()),
            source: e,
        };
        out.seek(SeekFrom::Start(padded))
            .and_then(|_| out.write_all(&table))
            .and_then(|()| out.seek(SeekFrom::Start(layout.cert_dir_at)))
            .and_then(|_| out.write_all(&dir))
            .map_err(w)?;
        // The checksum covers everything, the certificate table included.
        let mut sum = Checksum::new(layout.checksum_at);
        out.seek(SeekFrom::Start(0)).map_err(w)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = out.read(&mut buf).map_err(w)?;
            if n == 0 {
                break;
            }
            sum.update(&buf[..n]);
        }
        out.seek(SeekFrom::Start(layout.checksum_at))
            .and_then(|_| out.write_all(&sum.finish().to_le_bytes()))
            .and_then(|()| out.sync_all())
            .map_err(w)?;
        std::fs::rename(&tmp, output).map_err(io_err(format!("renaming {}", tmp.display())))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A trusted certificate: the one whose signatures an image accepts.
pub struct TrustedCert {
    issuer: Vec<u8>,
    serial: Vec<u8>,
    public: RsaPublicKey,
}

impl TrustedCert {
    /// Reads a PEM certificate with an RSA key.
    pub fn load(path: &Path) -> Result<Self, SignError> {
        let text =
            std::fs::read_to_string(path).map_err(io_err(format!("reading {}", path.display())))?;
        let bad = |m: &str| SignError::Cert(format!("{}: {m}", path.display()));
        let (label, cert) = pem_rfc7468::decode_vec(text.trim().as_bytes())
            .map_err(|_| bad("not a PEM certificate"))?;
        if label != "CERTIFICATE" {
            return Err(bad("not a PEM certificate"));
        }
        let (issuer, serial, spki) =
            cert_parts(&cert).ok_or_else(|| bad("not an X.509 certificate"))?;
        let public = RsaPublicKey::from_public_key_der(&spki)
            .map_err(|_| bad("its public key is not RSA"))?;
        Ok(TrustedCert {
            issuer,
            serial,
            public,
        })
    }
}

/// Checks that the PE image at `path` carries an Authenticode signature by
/// `trusted` over its current bytes, as the firmware's db check would:
/// the signer named by issuer and serial number, the RSA PKCS#1 v1.5
/// SHA-256 signature over the signed attributes, their message digest over
/// the `SpcIndirectDataContent`, and its image digest over the file.
pub fn verify_file(path: &Path, trusted: &TrustedCert) -> Result<(), SignError> {
    let bad = |m: &str| SignError::Image(format!("{}: {m}", path.display()));
    let mut f = File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
    let len = f
        .metadata()
        .map_err(io_err(format!("reading {}", path.display())))?
        .len();
    let layout = pe_layout(&mut f)?;
    let (at, size) = layout.cert_table;
    if size < 8 || at.checked_add(size).is_none_or(|e| e > len) || size > 1 << 20 {
        return Err(bad("it is not signed (no certificate table)"));
    }
    let mut table = vec![0u8; size as usize];
    f.seek(SeekFrom::Start(at))
        .and_then(|_| f.read_exact(&mut table))
        .map_err(io_err(format!("reading {}", path.display())))?;
    let cert_len = le32(&table, 0) as usize;
    if le16(&table, 4) != 0x0200
        || le16(&table, 6) != 0x0002
        || cert_len < 8
        || cert_len > table.len()
    {
        return Err(bad("its certificate table holds no PKCS#7 signature"));
    }
    let p7 = &table[8..cert_len];
    let signed = parse_signed_data(p7).ok_or_else(|| bad("its PKCS#7 signature does not parse"))?;
    if signed.issuer != trusted.issuer || signed.serial != trusted.serial {
        return Err(bad("it is signed by another certificate"));
    }
    let digest = image_digest(&mut f, len)?;
    if signed.image_digest != digest {
        return Err(bad("its bytes differ from what was signed"));
    }
    let content_digest: [u8; 32] = Sha256::digest(&signed.content).into();
    if signed.message_digest != content_digest {
        return Err(bad("its signed attributes do not match its content"));
    }
    trusted
        .public
        .verify(
            Pkcs1v15Sign {
                hash_len: Some(32),
                prefix: SHA256_PREFIX.to_vec().into_boxed_slice(),
            },
            &Sha256::digest(&signed.attributes_as_set),
            &signed.signature,
        )
        .map_err(|_| bad("its signature does not verify with the trusted certificate"))
}

/// What a verifier needs from a PKCS#7 Authenticode signature.
struct ParsedSignature {
    /// The value of the `SpcIndirectDataContent` (without its header).
    content: Vec<u8>,
    image_digest: [u8; 32],
    issuer: Vec<u8>,
    serial: Vec<u8>,
    /// The signed attributes re-tagged as a SET (what was signed).
    attributes_as_set: Vec<u8>,
    message_digest: [u8; 32],
    signature: Vec<u8>,
}

fn parse_signed_data(b: &[u8]) -> Option<ParsedSignature> {
    let kids = |e: &der::Element| der::children(b, e);
    let top = der::read(b, 0)?;
    let ci = kids(&top)?;
    if ci.first()?.bytes(b) != oid(oids::SIGNED_DATA).as_slice() {
        return None;
    }
    let signed = *kids(ci.get(1)?)?.first()?;
    let parts = kids(&signed)?;
    // version, digestAlgorithms, contentInfo, [0] certificates?, [1] crls?, signerInfos
    let encap = kids(parts.get(2)?)?;
    if encap.first()?.bytes(b) != oid(oids::SPC_INDIRECT_DATA).as_slice() {
        return None;
    }
    let indirect = *kids(encap.get(1)?)?.first()?;
    let digest_info = *kids(&indirect)?.get(1)?;
    let di = kids(&digest_info)?;
    if kids(di.first()?)?.first()?.bytes(b) != oid(oids::SHA256).as_slice() {
        return None;
    }
    let image_digest: [u8; 32] = b[di.get(1)?.content..di.get(1)?.end].try_into().ok()?;
    let signer_infos = parts.last()?;
    let signer = *kids(signer_infos)?.first()?;
    let si = kids(&signer)?;
    let ias = kids(si.get(1)?)?;
    let attrs = si.get(3).filter(|e| e.tag == 0xA0)?;
    let mut message_digest = None;
    for a in kids(attrs)? {
        let ak = kids(&a)?;
        if ak.first()?.bytes(b) == oid(oids::MESSAGE_DIGEST).as_slice() {
            let v = *kids(ak.get(1)?)?.first()?;
            message_digest = b[v.content..v.end].try_into().ok();
        }
    }
    let mut attributes_as_set = attrs.bytes(b).to_vec();
    attributes_as_set[0] = der::SET;
    let sig = si.get(5)?;
    Some(ParsedSignature {
        content: b[indirect.content..indirect.end].to_vec(),
        image_digest,
        issuer: ias.first()?.bytes(b).to_vec(),
        serial: ias.get(1)?.bytes(b).to_vec(),
        attributes_as_set,
        message_digest: message_digest?,
        signature: b[sig.content..sig.end].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indirect_data_has_the_conventional_shape() {
        let d = indirect_data(&[7; 32]);
        let top = der::read(&d, 0).unwrap();
        assert_eq!(top.end, d.len());
        let parts = der::children(&d, &top).unwrap();
        assert_eq!(parts.len(), 2);
        // The digest is the last 32 bytes, after the SHA-256 identifier.
        assert!(d.ends_with(&[&[4u8, 32][..], &[7; 32]].concat()));
        let oid_bytes = oid(oids::SPC_PE_IMAGE_DATA);
        assert_eq!(oid_bytes, [6, 10, 0x2b, 6, 1, 4, 1, 0x82, 0x37, 2, 1, 15]);
    }

    #[test]
    fn refuses_what_is_no_pe_image() {
        let mut c = io::Cursor::new(b"MZ but nothing else".to_vec());
        assert!(image_digest(&mut c, 19).is_err());
    }
}
