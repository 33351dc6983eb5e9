//! Copying host ELF executables into an image together with the shared
//! libraries they load (their `DT_NEEDED` closure and the program
//! interpreter), found the way the dynamic loader would.

use crate::elf::Elf;
use crate::tree::{FileData, Metadata, Node, NodeKind, Tree, TreeError};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Library directories searched after `DT_RUNPATH`, in the loader's order.
pub const DEFAULT_LIBRARY_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// Why a binary could not be copied.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    /// Reading a host file failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The host file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The file is not a usable ELF executable.
    #[error("{path}: {reason}")]
    NotElf {
        /// The host file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A needed library is not on the host.
    #[error("{binary}: shared library {library} not found (searched {searched})")]
    MissingLibrary {
        /// The binary or library needing it.
        binary: PathBuf,
        /// The soname.
        library: String,
        /// Directories searched.
        searched: String,
    },
    /// The image tree refused the file.
    #[error(transparent)]
    Tree(#[from] TreeError),
}

/// Whether [`add_binary`] copies the executable as it is or stripped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strip {
    /// Byte for byte (a recipe's own binaries).
    No,
    /// Without symbols and debug information ([`Elf::stripped`]): slate's
    /// own programs, whose test builds carry line tables.
    Executable,
}

/// Adds `host` to `tree` at `dest` with `mode`, plus every shared library it
/// needs at the path the loader will look for it (libraries are copied as
/// they are). Returns the image paths added.
pub fn add_binary(
    tree: &mut Tree,
    host: &Path,
    dest: &str,
    mode: u16,
    strip: Strip,
) -> Result<Vec<String>, BinaryError> {
    let top = dest.to_string();
    let mut added = Vec::new();
    let mut seen = BTreeSet::new();
    let mut queue: Vec<(PathBuf, String, u16)> = vec![(host.to_path_buf(), dest.to_string(), mode)];
    while let Some((host, dest, mode)) = queue.pop() {
        if !seen.insert(dest.clone()) {
            continue;
        }
        // Copy the content of what the path resolves to (libraries are
        // usually symlinks to versioned files).
        let real = std::fs::canonicalize(&host).map_err(|source| BinaryError::Io {
            path: host.clone(),
            source,
        })?;
        let data = std::fs::read(&real).map_err(|source| BinaryError::Io {
            path: real.clone(),
            source,
        })?;
        let elf = Elf::parse(&data).map_err(|e| BinaryError::NotElf {
            path: host.clone(),
            reason: e.to_string(),
        })?;
        let content = if strip == Strip::Executable && dest == top && elf.strippable() {
            FileData::from_bytes(elf.stripped())
        } else {
            FileData::host(real.clone(), data.len() as u64)
        };
        tree.put(
            dest.as_bytes(),
            Node {
                kind: NodeKind::File(content),
                meta: Metadata::root(mode),
            },
            &Metadata::root(0o755),
        )?;
        added.push(dest.clone());

        if let Some(interp) = elf.interpreter().map_err(|e| BinaryError::NotElf {
            path: host.clone(),
            reason: e.to_string(),
        })? {
            queue.push((PathBuf::from(&interp), interp, 0o755));
        }
        let (needed, runpath) = elf.dynamic().map_err(|e| BinaryError::NotElf {
            path: host.clone(),
            reason: e.to_string(),
        })?;
        let origin = real.parent().unwrap_or(Path::new("/")).to_path_buf();
        let dirs: Vec<PathBuf> = runpath
            .iter()
            .map(|p| PathBuf::from(p.replace("$ORIGIN", &origin.to_string_lossy())))
            .chain(DEFAULT_LIBRARY_DIRS.iter().map(PathBuf::from))
            .collect();
        for lib in needed {
            let found = dirs.iter().map(|d| d.join(&lib)).find(|p| p.exists());
            match found {
                Some(p) => {
                    let image_path = p.to_string_lossy().into_owned();
                    queue.push((p, image_path, 0o755));
                }
                None => {
                    return Err(BinaryError::MissingLibrary {
                        binary: host.clone(),
                        library: lib,
                        searched: dirs
                            .iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(":"),
                    });
                }
            }
        }
    }
    added.sort();
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_libc_closure_of_a_host_binary() {
        let mut tree = Tree::new(Metadata::root(0o755));
        let host = Path::new("/bin/ls");
        if !host.exists() {
            eprintln!("skipping: no /bin/ls");
            return;
        }
        let added = add_binary(&mut tree, host, "/bin/ls", 0o755, Strip::No).unwrap();
        assert!(added.iter().any(|p| p.ends_with("/libc.so.6")), "{added:?}");
        assert!(added.iter().any(|p| p.contains("ld-linux")), "{added:?}");
        assert!(tree.lookup(b"/bin/ls").is_some());
    }

    /// A stripped copy of this very test binary (which carries line tables)
    /// is much smaller and still runs.
    #[test]
    fn stripped_executable_runs() {
        use std::os::unix::fs::PermissionsExt;
        let exe = std::env::current_exe().unwrap();
        let data = std::fs::read(&exe).unwrap();
        let stripped = Elf::parse(&data).unwrap().stripped();
        assert!(stripped.len() < data.len(), "nothing stripped");
        assert_eq!(
            Elf::parse(&stripped).unwrap().section(".text").unwrap(),
            None
        );
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t");
        std::fs::write(&p, &stripped).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = std::process::Command::new(&p)
            .args(["--list", "stripped_executable_runs"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("stripped_executable_runs"));
        let mut tree = Tree::new(Metadata::root(0o755));
        add_binary(&mut tree, &exe, "/bin/t", 0o755, Strip::Executable).unwrap();
        let node = tree.node(tree.lookup(b"/bin/t").unwrap());
        let NodeKind::File(f) = &node.kind else {
            panic!("not a file")
        };
        assert_eq!(f.size, stripped.len() as u64);
    }

    #[test]
    fn non_elf_is_refused_by_name() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("script");
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        let mut tree = Tree::new(Metadata::root(0o755));
        let e = add_binary(&mut tree, &p, "/bin/script", 0o755, Strip::No)
            .unwrap_err()
            .to_string();
        assert!(e.contains("script") && e.contains("ELF"), "{e}");
    }
}
