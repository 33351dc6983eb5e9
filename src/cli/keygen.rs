//! `slate keygen`: make an Ed25519 signing key pair in openssl's formats,
//! or (`--secure-boot`) the RSA keys and certificates of a Secure Boot key
//! hierarchy.

use crate::bundle::SecretKey;
use anyhow::{Context, bail};
use clap::Args;
use std::ffi::OsString;
use std::fs::Permissions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Make a signing key pair: PREFIX.key (PKCS#8 PEM, mode 0600) and
/// PREFIX.pub (SPKI PEM), creating PREFIX's directory if needed. Existing
/// files are kept unless --force is given.
///
/// With --secure-boot, PREFIX is a directory that gets PK, KEK and db:
/// RSA-2048 keys (NAME.key, PKCS#8 PEM, mode 0600) and self-signed X.509
/// certificates (NAME.crt, PEM). Sign images with db ([secure_boot] key =
/// "DIR/db.key", cert = "DIR/db.crt"); enroll PK, KEK and db in the
/// firmware.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Path prefix of the two key files (a directory with --secure-boot).
    pub prefix: PathBuf,
    /// Replace existing key files.
    #[arg(long)]
    pub force: bool,
    /// Make the Secure Boot keys and certificates PK, KEK and db.
    #[arg(long)]
    pub secure_boot: bool,
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes `text` beside `dest` with `mode`, fsyncs it, and moves it into
/// place: over an existing file only with `replace`, else failing if one
/// exists (link-based, so two racing runs cannot both win).
fn place(dest: &Path, text: &str, mode: u32, replace: bool) -> anyhow::Result<()> {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".slate-key.")
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    // The umask may have narrowed the mode; set it exactly.
    tmp.as_file()
        .set_permissions(Permissions::from_mode(mode))
        .and_then(|()| tmp.write_all(text.as_bytes()))
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", dest.display()))?;
    let placed = if replace {
        tmp.persist(dest).map(|_| ())
    } else {
        tmp.persist_noclobber(dest).map(|_| ())
    };
    placed.map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!("{} already exists (--force replaces it)", dest.display())
        } else {
            anyhow::Error::new(e.error).context(format!("writing {}", dest.display()))
        }
    })?;
    crate::io::sync_dir(dir).with_context(|| format!("syncing {}", dir.display()))
}

/// Creates `dir` (mode 0700) if it does not exist.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.as_os_str().is_empty() && !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

/// `slate keygen --secure-boot DIR`.
fn secure_boot(args: &KeygenArgs) -> anyhow::Result<()> {
    let dir = &args.prefix;
    let files: Vec<(PathBuf, PathBuf)> = crate::authenticode::keys::ROLES
        .iter()
        .map(|r| (dir.join(format!("{r}.key")), dir.join(format!("{r}.crt"))))
        .collect();
    if !args.force {
        for p in files.iter().flat_map(|(k, c)| [k, c]) {
            if p.symlink_metadata().is_ok() {
                bail!("{} already exists (--force replaces it)", p.display());
            }
        }
    }
    private_dir(dir)?;
    for (role, (key, cert)) in crate::authenticode::keys::ROLES.iter().zip(&files) {
        let pair = crate::authenticode::keys::generate(&format!("slate Secure Boot {role}"))?;
        place(key, &pair.key_pem, 0o600, args.force)?;
        place(cert, &pair.cert_pem, 0o644, args.force)?;
        println!("wrote {} and {}", key.display(), cert.display());
    }
    Ok(())
}

/// Runs `slate keygen`.
pub fn run(args: KeygenArgs) -> anyhow::Result<()> {
    if args.secure_boot {
        return secure_boot(&args);
    }
    let key_path = with_suffix(&args.prefix, ".key");
    let pub_path = with_suffix(&args.prefix, ".pub");
    if !args.force {
        for p in [&key_path, &pub_path] {
            if p.symlink_metadata().is_ok() {
                bail!("{} already exists (--force replaces it)", p.display());
            }
        }
    }
    // `slate keygen keys/dev` in a fresh checkout: make keys/ (private to
    // its owner, as it holds the signing key).
    if let Some(dir) = key_path.parent() {
        private_dir(dir)?;
    }
    let key = SecretKey::generate()?;
    let public = key.public();
    place(&key_path, &key.to_pem()?, 0o600, args.force)?;
    if let Err(e) = place(&pub_path, &public.to_pem(), 0o644, args.force) {
        // Leave no private key without its public half.
        if !args.force {
            let _ = std::fs::remove_file(&key_path);
        }
        return Err(e);
    }
    println!(
        "wrote {} and {} (key id {})",
        key_path.display(),
        pub_path.display(),
        public.id()
    );
    Ok(())
}
