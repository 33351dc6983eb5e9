//! `slate completions SHELL` and the hidden `slate man DIR`: shell completion
//! scripts and man pages generated from the clap definitions.

use super::Cli;
use anyhow::Context;
use clap::{Args, CommandFactory};
use std::path::{Path, PathBuf};

/// Print a completion script on stdout, e.g. for bash:
/// `slate completions bash > ~/.local/share/bash-completion/completions/slate`
/// or `source <(slate completions bash)`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

/// Write slate.1 and one page per subcommand (slate-build.1, ...) into DIR.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Output directory (created if missing), e.g. docs/man.
    pub dir: PathBuf,
}

/// Runs `slate completions`.
pub fn run_completions(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cmd, "slate", &mut out);
    std::io::Write::flush(&mut out).context("writing the completion script")?;
    Ok(())
}

/// The man pages, `(file name, roff text)`, for the whole command tree. They
/// carry the package version only (not the commit), so they change only when
/// the interface does.
pub fn man_pages() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let cmd = Cli::command()
        .version(env!("CARGO_PKG_VERSION"))
        .long_version(env!("CARGO_PKG_VERSION"));
    let mut pages = Vec::new();
    collect(&cmd, "slate", &mut pages)?;
    Ok(pages)
}

fn collect(
    cmd: &clap::Command,
    name: &str,
    out: &mut Vec<(String, Vec<u8>)>,
) -> anyhow::Result<()> {
    let cmd = cmd
        .clone()
        .name(name.to_string())
        .bin_name(name.replace('-', " "));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut buf)
        .context("rendering a man page")?;
    out.push((format!("{name}.1"), buf));
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        collect(sub, &format!("{name}-{}", sub.get_name()), out)?;
    }
    Ok(())
}

/// Runs `slate man DIR`.
pub fn run_man(args: ManArgs) -> anyhow::Result<()> {
    write_man_pages(&args.dir)
}

fn write_man_pages(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in man_pages()? {
        let path = dir.join(&name);
        crate::io::atomic::write_atomic(&path, &text)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
