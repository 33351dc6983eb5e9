//! `slate diff OLD NEW`: what a device running OLD would download of the
//! bundle NEW, planned exactly as the device plans it (docs/updates.md,
//! "Delta updates"): the chunks of NEW it holds in its running slot and its
//! boot files are reused (and, with `--target`, the slot being installed,
//! ahead of the writer), chunks repeated inside an artifact are copied, and
//! the rest is fetched with merged range requests after the signed head.

use crate::build_manifest::BuildManifest;
use crate::bundle::delta::{Counts, DeltaPlan, Seed, SeedIndex, plan};
use crate::bundle::format::MAGIC;
use crate::bundle::{BundleHead, read_head_unverified};
use anyhow::{Context, bail};
use clap::Args;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Arguments of `slate diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// What the device runs: a build directory, a bundle, or a slot image.
    pub old: PathBuf,
    /// The new bundle.
    pub new: PathBuf,
    /// What the slot being installed holds now (a build directory, a bundle
    /// or a slot image), for a device that stored its manifest: its chunks
    /// are reused only at or after their own offset, as the device's writer
    /// overwrites that slot front to back.
    #[arg(long, value_name = "OLD_TARGET")]
    pub target: Option<PathBuf>,
    /// Plan only this artifact (repeatable); default: every artifact, as a
    /// device running slot A installs them (all but `uki-a`).
    #[arg(long = "artifact", value_name = "NAME")]
    pub artifacts: Vec<String>,
    /// Print the counts as JSON (docs/json.md).
    #[arg(long)]
    pub json: bool,
}

/// Which seed label the device has for each artifact of an image. Of an
/// image whose slots boot unified kernel images, the device holds the
/// running slot's: the model is a device running slot A (slot B's image
/// differs from it in a few bytes of its command line).
const DEVICE_SEEDS: [(&str, &str); 4] = [
    ("rootfs", "slot"),
    ("kernel", "kernel"),
    ("initrd", "initrd"),
    ("uki-a", "uki"),
];

/// Runs `slate diff`.
pub fn run(args: DiffArgs) -> anyhow::Result<()> {
    let new = read_head(&args.new)?;
    for want in &args.artifacts {
        if !new.manifest.artifacts.iter().any(|a| &a.name == want) {
            bail!(
                "bundle {} has no artifact named {want:?}",
                args.new.display()
            );
        }
    }
    let mut seeds = SeedIndex::new();
    add_old_seeds(&mut seeds, &args.old, Role::Running, &new)?;
    if let Some(t) = &args.target {
        add_old_seeds(&mut seeds, t, Role::Target, &new)?;
    }
    // A device running slot A does not fetch slot A's unified kernel image.
    let select = |n: &str| {
        if args.artifacts.is_empty() {
            n != "uki-a"
        } else {
            args.artifacts.iter().any(|a| a == n)
        }
    };
    let p = plan(&new.header, &new.manifest, &seeds, &select);
    if args.json {
        println!("{}", report_json(&args, &p)?);
    } else {
        print!("{}", report_text(&args, &p.counts));
    }
    Ok(())
}

fn read_head(path: &Path) -> anyhow::Result<BundleHead> {
    let f =
        std::fs::File::open(path).with_context(|| format!("opening bundle {}", path.display()))?;
    read_head_unverified(std::io::BufReader::new(f))
        .with_context(|| format!("reading bundle {}", path.display()))
}

fn is_bundle(path: &Path) -> bool {
    let mut m = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut m))
        .is_ok_and(|()| m == MAGIC)
}

/// Which of OLD's artifacts seed the plan, under which label.
#[derive(Clone, Copy)]
enum Role {
    /// The running slot: its rootfs, kernel and initrd.
    Running,
    /// The target slot's old content: its rootfs, ahead of the writer only.
    Target,
}

impl Role {
    fn seeds(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Role::Running => &DEVICE_SEEDS,
            Role::Target => &[("rootfs", "target")],
        }
    }
}

/// Adds to `ix` the chunks the device holds in `old` (a build directory, a
/// bundle or a slot image) in `role`.
fn add_old_seeds(
    ix: &mut SeedIndex,
    old: &Path,
    role: Role,
    new: &BundleHead,
) -> anyhow::Result<()> {
    let shown = old.display();
    let ahead_only = matches!(role, Role::Target);
    let seed = |ix: &mut SeedIndex, label: &str, path: &Path| {
        ix.add_seed(Seed {
            label: label.into(),
            path: path.to_path_buf(),
            ahead_only,
        })
    };
    if old.is_dir() {
        let m =
            BuildManifest::load(old).with_context(|| format!("reading build directory {shown}"))?;
        for &(artifact, label) in role.seeds() {
            let Some(a) = m.artifacts.iter().find(|a| a.name == artifact) else {
                continue;
            };
            let path = old.join(&a.file);
            let s = seed(ix, label, &path);
            ix.index_file(s, &new.manifest)
                .with_context(|| format!("reading {}", path.display()))?;
        }
    } else if is_bundle(old) {
        let head = read_head(old)?;
        for &(artifact, label) in role.seeds() {
            let Some(a) = head.manifest.artifacts.iter().find(|a| a.name == artifact) else {
                continue;
            };
            if !new
                .manifest
                .artifacts
                .iter()
                .any(|n| n.chunk_size == a.chunk_size)
            {
                bail!(
                    "{shown}: its {artifact} has {}-byte chunks, the new bundle others; \
                     pass OLD's build directory or slot image instead",
                    a.chunk_size
                );
            }
            let s = seed(ix, label, old);
            ix.index_artifact(s, a);
        }
    } else {
        std::fs::File::open(old).with_context(|| format!("opening slot image {shown}"))?;
        let s = seed(ix, role.seeds()[0].1, old);
        ix.index_file(s, &new.manifest)
            .with_context(|| format!("reading {shown}"))?;
    }
    Ok(())
}

fn report_json(args: &DiffArgs, p: &DeltaPlan) -> anyhow::Result<serde_json::Value> {
    let mut v = serde_json::to_value(&p.counts)?;
    v["schema"] = 1.into();
    v["old"] = args.old.display().to_string().into();
    v["new"] = args.new.display().to_string().into();
    v["artifacts"] = p
        .artifacts
        .iter()
        .map(|a| {
            serde_json::json!({
                "name": a.name,
                "requests": a.requests.len(),
                "downloaded": a.requests.iter().map(|r| r.len).sum::<u64>(),
            })
        })
        .collect::<Vec<_>>()
        .into();
    Ok(v)
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn report_text(args: &DiffArgs, c: &Counts) -> String {
    let mut s = format!(
        "{} -> {}\ndownload   {} bytes in {} requests ({:.2}% of the {}-byte bundle)\n",
        args.old.display(),
        args.new.display(),
        c.downloaded,
        c.requests,
        percent(c.downloaded, c.full),
        c.full
    );
    s.push_str(&format!(
        "fetched    {} bytes of artifacts\nreused     {} bytes\n",
        c.fetched, c.reused
    ));
    for (label, n) in &c.reused_by_source {
        s.push_str(&format!("  from {label:<8} {n} bytes\n"));
    }
    s.push_str(&format!("holes      {} bytes\n", c.holes));
    s
}
