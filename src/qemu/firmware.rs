//! Finding the OVMF firmware: its code (read-only) and the template for the
//! per-run copy of its variable store.

use super::QemuError;
use std::path::{Path, PathBuf};

/// Directory of Debian's `ovmf` package.
pub const DEFAULT_DIR: &str = "/usr/share/OVMF";
/// Environment variable naming another directory.
pub const DIR_ENV: &str = "SLATE_OVMF_DIR";
/// Firmware code, mapped read-only as pflash unit 0.
pub const CODE_FILE: &str = "OVMF_CODE_4M.fd";
/// Variable store template, copied per run and mapped as pflash unit 1.
pub const VARS_FILE: &str = "OVMF_VARS_4M.fd";
/// Firmware code with Secure Boot (needs SMM and a secure pflash).
pub const SECURE_CODE_FILE: &str = "OVMF_CODE_4M.secboot.fd";

/// The two OVMF files a run needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    /// `OVMF_CODE_4M.fd`.
    pub code: PathBuf,
    /// `OVMF_VARS_4M.fd` (never written: each run uses a copy).
    pub vars_template: PathBuf,
    /// Whether `code` is the Secure Boot build.
    pub secure_boot: bool,
}

impl Firmware {
    /// Looks in `$SLATE_OVMF_DIR` if set (and non-empty), else in
    /// `/usr/share/OVMF`.
    pub fn locate() -> Result<Self, QemuError> {
        match std::env::var_os(DIR_ENV) {
            Some(dir) if !dir.is_empty() => Self::in_dir(Path::new(&dir)),
            _ => Self::in_dir(Path::new(DEFAULT_DIR)),
        }
    }

    /// The firmware files in `dir`; an error names the first one missing.
    pub fn in_dir(dir: &Path) -> Result<Self, QemuError> {
        let code = dir.join(CODE_FILE);
        let vars_template = dir.join(VARS_FILE);
        for path in [&code, &vars_template] {
            if !path.is_file() {
                return Err(QemuError::FirmwareMissing { path: path.clone() });
            }
        }
        Ok(Self {
            code,
            vars_template,
            secure_boot: false,
        })
    }

    /// The Secure Boot firmware of the same directory, with `vars` (a store
    /// with keys enrolled) as the template.
    pub fn secure_boot(self, vars: &Path) -> Result<Self, QemuError> {
        let code = self.code.with_file_name(SECURE_CODE_FILE);
        for path in [&code, &vars.to_path_buf()] {
            if !path.is_file() {
                return Err(QemuError::FirmwareMissing { path: path.clone() });
            }
        }
        Ok(Self {
            code,
            vars_template: vars.to_path_buf(),
            secure_boot: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_both_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(CODE_FILE), b"code").unwrap();
        std::fs::write(d.path().join(VARS_FILE), b"vars").unwrap();
        let fw = Firmware::in_dir(d.path()).unwrap();
        assert_eq!(fw.code, d.path().join(CODE_FILE));
        assert_eq!(fw.vars_template, d.path().join(VARS_FILE));
    }

    #[test]
    fn names_the_missing_file_and_package() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(CODE_FILE), b"code").unwrap();
        let err = Firmware::in_dir(d.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&d.path().join(VARS_FILE).display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("ovmf") && msg.contains(DIR_ENV), "{msg}");
    }
}
