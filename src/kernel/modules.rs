//! Kernel modules for the initramfs: which files to include and the order to
//! load them in. Debian's kernel package ships no modules.dep (depmod makes
//! it at install time), so dependencies are read from each module's own
//! `.modinfo` section (`depends=a,b`, `softdep=pre: c`).

use crate::elf::Elf;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One loadable module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Canonical name (`-` replaced by `_`).
    pub name: String,
    /// Path below `lib/modules/<version>/`, e.g. `kernel/drivers/block/virtio_blk.ko`.
    pub rel_path: String,
    /// Where the file is on the build host.
    pub host_path: PathBuf,
    /// Hard dependencies.
    pub depends: Vec<String>,
    /// Modules to load first if they exist (`softdep pre:`).
    pub soft_pre: Vec<String>,
}

/// Why the module set could not be worked out.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// A module file could not be read.
    #[error("reading kernel module {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// A module file is not valid ELF.
    #[error("kernel module {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A requested module (or a dependency) does not exist.
    #[error("no module {name:?} in kernel {kernel}{via}")]
    Unknown {
        /// Module name.
        name: String,
        /// Kernel version.
        kernel: String,
        /// ` (needed by x)` when it is a dependency.
        via: String,
    },
}

/// All modules of one kernel.
#[derive(Debug, Clone, Default)]
pub struct ModuleIndex {
    /// Kernel release, e.g. `6.1.0-56-cloud-amd64`.
    pub kernel: String,
    modules: BTreeMap<String, ModuleInfo>,
    builtin: BTreeSet<String>,
}

/// `kernel/fs/fat/vfat.ko` -> `vfat`.
fn name_from_path(p: &str) -> String {
    let file = p.rsplit('/').next().unwrap_or(p);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Parses the NUL-separated `key=value` strings of a `.modinfo` section.
pub fn parse_modinfo(section: &[u8]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for item in section.split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let s = String::from_utf8_lossy(item);
        if let Some((k, v)) = s.split_once('=') {
            out.entry(k.to_string()).or_default().push(v.to_string());
        }
    }
    out
}

impl ModuleIndex {
    /// Builds the index from `(path below lib/modules/<ver>/, host file)`
    /// pairs and the text of `modules.builtin`.
    pub fn new(
        kernel: &str,
        files: impl IntoIterator<Item = (String, PathBuf)>,
        builtin: &str,
    ) -> Result<Self, ModuleError> {
        let mut modules = BTreeMap::new();
        for (rel_path, host_path) in files {
            if !rel_path.ends_with(".ko") {
                continue;
            }
            let data = std::fs::read(&host_path).map_err(|source| ModuleError::Io {
                path: host_path.clone(),
                source,
            })?;
            let corrupt = |reason: String| ModuleError::Corrupt {
                path: host_path.clone(),
                reason,
            };
            let elf = Elf::parse(&data).map_err(|e| corrupt(e.to_string()))?;
            let info = parse_modinfo(
                elf.section(".modinfo")
                    .map_err(|e| corrupt(e.to_string()))?
                    .unwrap_or(&[]),
            );
            let name = info
                .get("name")
                .and_then(|v| v.first())
                .map(|n| n.replace('-', "_"))
                .unwrap_or_else(|| name_from_path(&rel_path));
            let list = |key: &str| -> Vec<String> {
                info.get(key)
                    .into_iter()
                    .flatten()
                    .flat_map(|v| v.split(','))
                    .map(|d| d.trim().replace('-', "_"))
                    .filter(|d| !d.is_empty())
                    .collect()
            };
            let soft_pre = info
                .get("softdep")
                .into_iter()
                .flatten()
                .flat_map(|v| {
                    // "pre: a b post: c"
                    let mut pre = Vec::new();
                    let mut in_pre = false;
                    for w in v.split_whitespace() {
                        match w {
                            "pre:" => in_pre = true,
                            "post:" => in_pre = false,
                            w if in_pre => pre.push(w.replace('-', "_")),
                            _ => {}
                        }
                    }
                    pre
                })
                .collect();
            modules.insert(
                name.clone(),
                ModuleInfo {
                    name,
                    depends: list("depends"),
                    soft_pre,
                    rel_path,
                    host_path,
                },
            );
        }
        let builtin = builtin
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(name_from_path)
            .collect();
        Ok(Self {
            kernel: kernel.to_string(),
            modules,
            builtin,
        })
    }

    /// Whether `name` is compiled into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&name.replace('-', "_"))
    }

    /// Number of loadable modules.
    pub fn len(&self) -> usize {
        self.modules.len()
    }

    /// Whether there are no loadable modules.
    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// The modules to load for `requested`, dependencies first; built-in
    /// modules are skipped. The order is deterministic: requested order,
    /// each preceded by its (sorted) dependencies.
    pub fn load_order(&self, requested: &[String]) -> Result<Vec<&ModuleInfo>, ModuleError> {
        let mut out = Vec::new();
        let mut done = BTreeSet::new();
        for r in requested {
            let name = r.replace('-', "_");
            self.visit(&name, None, &mut done, &mut BTreeSet::new(), &mut out)?;
        }
        Ok(out)
    }

    fn visit<'a>(
        &'a self,
        name: &str,
        parent: Option<&str>,
        done: &mut BTreeSet<String>,
        active: &mut BTreeSet<String>,
        out: &mut Vec<&'a ModuleInfo>,
    ) -> Result<(), ModuleError> {
        if done.contains(name) || self.is_builtin(name) || active.contains(name) {
            return Ok(());
        }
        let Some(m) = self.modules.get(name) else {
            return Err(ModuleError::Unknown {
                name: name.to_string(),
                kernel: self.kernel.clone(),
                via: parent
                    .map(|p| format!(" (needed by {p})"))
                    .unwrap_or_default(),
            });
        };
        active.insert(name.to_string());
        for s in &m.soft_pre {
            // Soft dependencies are optional by definition.
            if self.modules.contains_key(s) {
                self.visit(s, Some(name), done, active, out)?;
            }
        }
        let mut deps = m.depends.clone();
        deps.sort();
        for d in &deps {
            self.visit(d, Some(name), done, active, out)?;
        }
        active.remove(name);
        done.insert(name.to_string());
        out.push(m);
        Ok(())
    }
}

/// Path of a module below a `lib/modules/<version>` directory, for tests and
/// host kernels: walks the directory and pairs relative paths with files.
pub fn scan_modules_dir(root: &Path) -> Result<Vec<(String, PathBuf)>, ModuleError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|source| ModuleError::Io {
            path: dir.clone(),
            source,
        })?;
        for e in rd {
            let e = e.map_err(|source| ModuleError::Io {
                path: dir.clone(),
                source,
            })?;
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(root) {
                out.push((rel.to_string_lossy().into_owned(), p.clone()));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_parsing() {
        let m = parse_modinfo(b"license=GPL\0depends=virtio,virtio_ring\0name=virtio_blk\0softdep=pre: crc32c post: x\0");
        assert_eq!(m["depends"], ["virtio,virtio_ring"]);
        assert_eq!(m["name"], ["virtio_blk"]);
        assert_eq!(name_from_path("kernel/fs/nls/nls-ascii.ko"), "nls_ascii");
    }

    fn index(mods: &[(&str, &[&str])], builtin: &[&str]) -> ModuleIndex {
        let modules = mods
            .iter()
            .map(|(n, deps)| {
                (
                    n.to_string(),
                    ModuleInfo {
                        name: n.to_string(),
                        rel_path: format!("kernel/{n}.ko"),
                        host_path: PathBuf::from(format!("/x/{n}.ko")),
                        depends: deps.iter().map(|d| d.to_string()).collect(),
                        soft_pre: vec![],
                    },
                )
            })
            .collect();
        ModuleIndex {
            kernel: "6.1-test".into(),
            modules,
            builtin: builtin.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn orders_dependencies_first() {
        let idx = index(
            &[
                ("virtio_ring", &[]),
                ("virtio", &[]),
                ("virtio_pci_modern_dev", &[]),
                (
                    "virtio_pci",
                    &["virtio", "virtio_ring", "virtio_pci_modern_dev"],
                ),
                ("virtio_blk", &["virtio", "virtio_ring"]),
            ],
            &["ext4"],
        );
        let order: Vec<_> = idx
            .load_order(&["virtio_blk".into(), "virtio-pci".into(), "ext4".into()])
            .unwrap()
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(
            order,
            [
                "virtio",
                "virtio_ring",
                "virtio_blk",
                "virtio_pci_modern_dev",
                "virtio_pci"
            ]
        );
    }

    #[test]
    fn unknown_module_names_its_parent() {
        let idx = index(&[("a", &["missing"])], &[]);
        let e = idx.load_order(&["a".into()]).unwrap_err().to_string();
        assert_eq!(e, "no module \"missing\" in kernel 6.1-test (needed by a)");
        let e = idx.load_order(&["nope".into()]).unwrap_err().to_string();
        assert_eq!(e, "no module \"nope\" in kernel 6.1-test");
    }

    #[test]
    fn real_kernel_modules_if_present() {
        // The Debian kernel unpacked by a previous build, when available.
        let Some(dir) = std::fs::read_dir("/lib/modules")
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| e.path())
        else {
            eprintln!("skipping: no /lib/modules on this host");
            return;
        };
        let files = scan_modules_dir(&dir).unwrap();
        let builtin = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
        let idx = ModuleIndex::new("host", files, &builtin).unwrap();
        if idx.modules.contains_key("virtio_blk") {
            let order = idx.load_order(&["virtio_blk".into()]).unwrap();
            assert_eq!(order.last().unwrap().name, "virtio_blk");
        }
    }
}
