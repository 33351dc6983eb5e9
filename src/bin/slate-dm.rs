//! `slate-dm`: the initramfs's device-mapper helper. busybox has no
//! dmsetup and the agent is too large to carry in every initramfs, so this
//! small program opens the slot's dm-verity device before the root is
//! mounted:
//!
//!     slate-dm open-verity NAME DEVICE ROOT:SALT:DATA_BLOCKS:HASH_BLOCK
//!
//! prints the new device node (`/dev/dm-N`) and links `/dev/mapper/NAME` to
//! it; any error is one line on stderr and exit status 1.

use slate::verity::{SlotVerity, dm};
use std::path::Path;
use std::process::ExitCode;

fn run(args: &[String]) -> Result<String, String> {
    match args {
        [cmd, name, dev, value] if cmd == "open-verity" => {
            let v = SlotVerity::parse_cmdline_value(value)
                .ok_or_else(|| format!("invalid verity parameters {value:?}"))?;
            let opened = dm::open_verity(name, Path::new(dev), &v)
                .map_err(|e| format!("opening {dev} as {name}: {e}"))?;
            let link = Path::new("/dev/mapper").join(name);
            let target = Path::new("..").join(opened.node.file_name().unwrap_or_default());
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&target, &link)
                .map_err(|e| format!("linking {}: {e}", link.display()))?;
            Ok(opened.node.display().to_string())
        }
        _ => Err("usage: slate-dm open-verity NAME DEVICE ROOT:SALT:DATA_BLOCKS:HASH_BLOCK".into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("slate-dm: {e}");
            ExitCode::FAILURE
        }
    }
}
