//! `slate verity`: the dm-verity hash tree of an image, as `veritysetup
//! format` makes it (docs/verity.md).

use crate::io::AtomicFile;
use crate::io::hash::hex;
use crate::reproducible::{derived_uuid, parse_uuid};
use crate::verity::{BLOCK_SIZE, MAX_SALT_LEN, VerityParams, VerityTree, format};
use anyhow::Context;
use clap::Args;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Arguments of `slate verity`.
#[derive(Debug, Args)]
pub struct VerityArgs {
    /// The image to protect (a whole number of 4096-byte blocks).
    pub data: PathBuf,
    /// Where to write the hash tree (replaced only when complete).
    pub hash: PathBuf,
    /// Salt, in hex, at most 256 bytes [default: the SHA-256 of the image,
    /// so the same image gets the same tree; costs one more read]
    #[arg(long, value_name = "HEX")]
    pub salt: Option<String>,
    /// UUID in the superblock [default: derived from the salt]
    #[arg(long, value_name = "UUID", conflicts_with = "no_superblock")]
    pub uuid: Option<String>,
    /// Write the tree alone, without the superblock (then the kernel and
    /// veritysetup need the parameters given to them).
    #[arg(long)]
    pub no_superblock: bool,
    /// Print the result as JSON (docs/json.md).
    #[arg(long)]
    pub json: bool,
}

/// Runs `slate verity`.
pub fn run(a: VerityArgs) -> anyhow::Result<()> {
    let shown = a.data.display();
    let len = std::fs::metadata(&a.data)
        .with_context(|| format!("reading {shown}"))?
        .len();
    if len == 0 || len % BLOCK_SIZE != 0 {
        return Err(invalid(format!(
            "{shown} is {len} bytes, not a whole number of {BLOCK_SIZE}-byte blocks"
        )));
    }
    let salt = match &a.salt {
        Some(s) => parse_salt(s)?,
        None => {
            let f = File::open(&a.data).with_context(|| format!("opening {shown}"))?;
            crate::io::hash::sha256_reader(f)
                .with_context(|| format!("reading {shown}"))?
                .0
                .to_vec()
        }
    };
    let uuid = match &a.uuid {
        Some(s) => Some(parse_uuid(s).ok_or_else(|| {
            invalid(format!(
                "--uuid {s:?} is not a UUID (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
            ))
        })?),
        None if a.no_superblock => None,
        None => Some(derived_uuid(&[b"slate verity", &salt])),
    };
    let p = VerityParams {
        data_blocks: len / BLOCK_SIZE,
        salt,
        superblock: uuid,
    };
    let tree = write_tree(&a.data, &a.hash, &p)?;
    if a.json {
        println!("{}", report_json(&p, &tree));
    } else {
        print!("{}", report_text(&p, &tree));
    }
    Ok(())
}

fn invalid(message: String) -> anyhow::Error {
    super::exit::InvalidInput(message).into()
}

fn parse_salt(s: &str) -> anyhow::Result<Vec<u8>> {
    let bytes = (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .filter(|_| s.len() % 2 == 0)
        .ok_or_else(|| invalid(format!("--salt {s:?} is not hex (two digits per byte)")))?;
    if bytes.len() > MAX_SALT_LEN {
        return Err(invalid(format!(
            "--salt is {} bytes, at most {MAX_SALT_LEN} fit a verity superblock",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// Hashes `data` into a temp file beside `hash`, then renames it there.
fn write_tree(data: &Path, hash: &Path, p: &VerityParams) -> anyhow::Result<VerityTree> {
    let input = File::open(data).with_context(|| format!("opening {}", data.display()))?;
    let writing = || format!("writing {}", hash.display());
    let mut out = AtomicFile::create(hash).with_context(writing)?;
    let tree = format(
        std::io::BufReader::with_capacity(1 << 20, input),
        p,
        out.file(),
    )
    .with_context(|| format!("hashing {}", data.display()))?;
    out.commit().with_context(writing)?;
    Ok(tree)
}

fn report_json(p: &VerityParams, t: &VerityTree) -> serde_json::Value {
    serde_json::json!({
        "schema": 1,
        "root_hash": hex(&t.root_hash),
        "salt": hex(&p.salt),
        "uuid": p.superblock.map(|u| crate::reproducible::format_uuid(&u)),
        "data_blocks": t.data_blocks,
        "data_block_size": BLOCK_SIZE,
        "hash_block_size": BLOCK_SIZE,
        "hash_blocks": t.hash_blocks,
        "tree_offset": t.tree_offset,
        "hash_len": t.hash_len(),
    })
}

fn report_text(p: &VerityParams, t: &VerityTree) -> String {
    format!(
        "root hash   {}\nsalt        {}\ndata blocks {} of {BLOCK_SIZE} bytes\nhash blocks {} (tree at byte {} of the hash file{})\n",
        hex(&t.root_hash),
        hex(&p.salt),
        t.data_blocks,
        t.hash_blocks,
        t.tree_offset,
        if p.superblock.is_some() {
            ", after the superblock"
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salts_are_hex() {
        assert_eq!(parse_salt("00ff11").unwrap(), [0, 255, 17]);
        assert_eq!(parse_salt("").unwrap(), Vec::<u8>::new());
        for bad in ["0", "zz", "0g"] {
            assert!(parse_salt(bad).is_err(), "{bad}");
        }
        assert!(parse_salt(&"00".repeat(257)).is_err());
    }
}
