//! Directory overlays: a host tree copied over the root filesystem. The
//! build runs unprivileged, so owners do not come from the host: every entry
//! gets the overlay's declared owner, and an mtree-like manifest can set the
//! owner, group and mode of single paths.
//!
//! Manifest lines: `PATH key=value...`, keys `uname`/`uid`, `gname`/`gid`
//! and `mode` (octal); `#` starts a comment. Every PATH must exist in the
//! overlay.

use super::ComposeError;
use super::rootfs::resolve;
use crate::recipe::{Overlay, Recipe};
use crate::tree::{Metadata, NodeId, NodeKind, Timestamp, Tree};
use crate::tree::{ScanOptions, scan_host_dir};
use std::collections::{BTreeMap, HashMap};

/// Owner, group and mode a manifest line sets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
    /// Permission bits.
    pub mode: Option<u16>,
}

/// Parses a manifest; `file` names it in messages (`file:line: ...`).
pub fn parse_manifest(
    recipe: &Recipe,
    text: &str,
    file: &str,
) -> Result<BTreeMap<String, Attributes>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = |m: String| format!("{file}:{}: {m}", n + 1);
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        let Some(path) = words.next() else { continue };
        let path = crate::packages::deb::normalize(path.as_bytes())
            .ok_or_else(|| at(format!("bad path {path:?}")))?;
        let mut a = Attributes::default();
        for w in words {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| at(format!("{w:?} is not key=value")))?;
            let number = || {
                v.parse::<u32>()
                    .map_err(|_| at(format!("{k}: not a number: {v:?}")))
            };
            match k {
                "uid" => a.uid = Some(number()?),
                "gid" => a.gid = Some(number()?),
                "uname" => {
                    a.uid = Some(
                        recipe
                            .uid_of(v)
                            .ok_or_else(|| at(format!("uname: no [[user]] named {v:?}")))?,
                    )
                }
                "gname" => {
                    a.gid = Some(
                        recipe
                            .gid_of(v)
                            .ok_or_else(|| at(format!("gname: no [[group]] named {v:?}")))?,
                    )
                }
                "mode" => {
                    a.mode = Some(
                        u16::from_str_radix(v, 8)
                            .ok()
                            .filter(|m| *m <= 0o7777)
                            .ok_or_else(|| at(format!("mode: invalid octal mode {v:?}")))?,
                    )
                }
                other => {
                    return Err(at(format!(
                        "unknown key {other:?} (uid, gid, uname, gname, mode)"
                    )));
                }
            }
        }
        if out.insert(path.clone(), a).is_some() {
            return Err(at(format!("{path} is listed twice")));
        }
    }
    Ok(out)
}

/// Copies `overlay` over `tree`. Directories the tree already has keep
/// their metadata unless the manifest names them; everything else takes the
/// overlay's owner and the host's permission bits, with `mtime`.
pub fn apply_overlay(
    recipe: &Recipe,
    overlay: &Overlay,
    tree: &mut Tree,
    mtime: i64,
) -> Result<(), ComposeError> {
    let field = overlay.field.replace('[', ".").replace(']', "");
    let bad = |m: String| ComposeError::Recipe(recipe.error(&field, m));
    let src = resolve(recipe, &overlay.src);
    let host = scan_host_dir(&src, &ScanOptions { xattrs: false })
        .map_err(|e| bad(format!("{}: {e}", src.display())))?;
    let manifest = match &overlay.manifest {
        Some(m) => {
            let path = resolve(recipe, m);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
            parse_manifest(recipe, &text, &m.display().to_string())
                .map_err(|e| ComposeError::Recipe(recipe.error(&format!("{field}.manifest"), e)))?
        }
        None => BTreeMap::new(),
    };
    let paths = graft(&host, tree, overlay, &manifest, mtime)?;
    if let Some(missing) = manifest.keys().find(|p| !paths.contains_key(*p)) {
        return Err(bad(format!(
            "the manifest names {missing}, which {} does not contain",
            src.display()
        )));
    }
    for (path, id) in paths {
        let is_dir = matches!(host.node(id).kind, NodeKind::Directory(_));
        if let Some((p, what)) = super::preflight::protected(&path, is_dir) {
            return Err(bad(format!(
                "{} holds {path}, which would replace {p} ({what}, placed by slate)",
                src.display()
            )));
        }
    }
    Ok(())
}

/// Puts every entry of `host` into `tree`; returns the image paths written
/// (directories that already existed included) with their node in `host`.
fn graft(
    host: &Tree,
    tree: &mut Tree,
    overlay: &Overlay,
    manifest: &BTreeMap<String, Attributes>,
    mtime: i64,
) -> Result<BTreeMap<String, NodeId>, ComposeError> {
    let mut path_of: HashMap<NodeId, String> = HashMap::new();
    let mut placed: HashMap<NodeId, NodeId> = HashMap::new();
    let mut written = BTreeMap::new();
    let parent_meta = Metadata::root(0o755);
    for e in host.walk().into_iter().skip(1) {
        let parent = path_of.get(&e.parent).map(String::as_str).unwrap_or("");
        let path = format!("{parent}/{}", String::from_utf8_lossy(e.name));
        path_of.insert(e.id, path.clone());
        written.insert(path.clone(), e.id);
        let node = host.node(e.id);
        let attrs = manifest.get(&path).copied().unwrap_or_default();
        let meta = Metadata {
            mode: attrs.mode.unwrap_or(node.meta.mode),
            uid: attrs.uid.unwrap_or(overlay.uid),
            gid: attrs.gid.unwrap_or(overlay.gid),
            mtime: Timestamp::from_secs(mtime),
            xattrs: BTreeMap::new(),
        };
        if let NodeKind::Directory(_) = node.kind {
            match tree.lookup(path.as_bytes()) {
                Some(id) if matches!(tree.node(id).kind, NodeKind::Directory(_)) => {
                    if manifest.contains_key(&path) {
                        tree.node_mut(id).meta = meta;
                    }
                }
                _ => {
                    let id = tree.put(
                        path.as_bytes(),
                        crate::tree::Node {
                            kind: NodeKind::empty_dir(),
                            meta,
                        },
                        &parent_meta,
                    )?;
                    placed.insert(e.id, id);
                }
            }
            continue;
        }
        // A second name of a hard-linked host file links to the first.
        if let Some(&first) = placed.get(&e.id) {
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
            let dir_id = tree.mkdir_p(dir.as_bytes(), &parent_meta)?;
            if tree.child(dir_id, name.as_bytes()).is_some() {
                tree.unlink(dir_id, name.as_bytes());
            }
            tree.link(dir_id, name.as_bytes(), first)?;
            continue;
        }
        let id = tree.put(
            path.as_bytes(),
            crate::tree::Node {
                kind: node.kind.clone(),
                meta,
            },
            &parent_meta,
        )?;
        placed.insert(e.id, id);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn recipe(dir: &Path) -> Recipe {
        let text = "[image]\nname = \"t\"\nversion = \"1.0.0\"\n\
                    [kernel]\npackage = \"linux-image-cloud-amd64\"\n\
                    [update]\nenabled = false\n\
                    [[user]]\nname = \"app\"\nuid = 1000\n";
        Recipe::parse(&dir.join("r.toml"), text).unwrap()
    }

    #[test]
    fn manifest_lines_set_owner_group_and_mode() {
        let d = tempfile::tempdir().unwrap();
        let r = recipe(d.path());
        let m = parse_manifest(
            &r,
            "# c\n./etc/app.conf uname=app gname=app mode=0640\n\n/x uid=7\n",
            "m",
        )
        .unwrap();
        assert_eq!(
            m["/etc/app.conf"],
            Attributes {
                uid: Some(1000),
                gid: Some(1000),
                mode: Some(0o640)
            }
        );
        assert_eq!(m["/x"].uid, Some(7));
        for (bad, want) in [
            ("/a owner=app\n", "m:1: unknown key \"owner\""),
            (
                "/a\n/b uname=nobody\n",
                "m:2: uname: no [[user]] named \"nobody\"",
            ),
            ("/a mode=999\n", "m:1: mode: invalid octal mode"),
            ("../a mode=0644\n", "m:1: bad path"),
            ("/a\n/a\n", "m:2: /a is listed twice"),
        ] {
            let e = parse_manifest(&r, bad, "m").unwrap_err();
            assert!(e.starts_with(want), "{bad:?}: {e}");
        }
    }
}
