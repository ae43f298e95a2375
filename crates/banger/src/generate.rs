//! `banger completions SHELL` and the hidden `banger man DIR`: shell
//! completion scripts and man pages, generated from the same clap
//! definitions the command line parses with, so they cannot drift from
//! it. `scripts/package` puts their output into the Debian package.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{CommandFactory, Subcommand};
use clap_complete::Shell;

#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// Print the shell completion script for SHELL.
    ///
    /// For example `banger completions bash >
    /// ~/.local/share/bash-completion/completions/banger`; the Debian
    /// package installs bash's, zsh's and fish's.
    Completions { shell: Shell },
    /// Write a man page for banger and each of its commands into DIR.
    #[command(hide = true)]
    Man { dir: PathBuf },
}

pub fn run(command: GenerateCommand) -> Result<()> {
    match command {
        GenerateCommand::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut crate::Cli::command(), "banger", &mut script);
            std::io::stdout()
                .write_all(&script)
                .context("cannot write the completion script to stdout")
        }
        GenerateCommand::Man { dir } => man_pages(&dir).map(|pages| {
            for page in pages {
                println!("{}", page.display());
            }
        }),
    }
}

/// Writes `banger.1`, `banger-vm.1`, `banger-vm-create.1`, ... (every
/// command but hidden ones) into `dir`, made when missing, and returns
/// their paths, sorted. As `clap_mangen::generate_to`, which says nothing
/// of what it wrote.
pub fn man_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    fn generate(cmd: clap::Command, dir: &Path, pages: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            generate(sub.clone(), dir, pages)?;
        }
        pages.push(clap_mangen::Man::new(cmd).generate_to(dir)?);
        Ok(())
    }
    let context = || format!("cannot write man pages into {}", dir.display());
    std::fs::create_dir_all(dir).with_context(context)?;
    let mut cli = crate::Cli::command().disable_help_subcommand(true);
    cli.build();
    let mut pages = Vec::new();
    generate(cli, dir, &mut pages).with_context(context)?;
    pages.sort();
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_visible_command_gets_a_page_and_the_hidden_one_none() {
        let dir = tempfile::tempdir().unwrap();
        let pages = man_pages(dir.path()).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for page in [
            "banger.1",
            "banger-vm.1",
            "banger-vm-create.1",
            "banger-completions.1",
        ] {
            assert!(names.iter().any(|n| n == page), "{page} in {names:?}");
        }
        assert!(!names.iter().any(|n| n == "banger-man.1"), "{names:?}");
        let text = std::fs::read_to_string(dir.path().join("banger-vm-create.1")).unwrap();
        assert!(text.contains(".TH banger-vm-create 1"), "{text}");
        assert!(text.contains("\\-\\-memory"), "{text}");
    }

    #[test]
    fn completions_name_the_commands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut crate::Cli::command(), "banger", &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.contains("snapshot") && text.contains("completions"),
                "{shell}"
            );
        }
    }
}
