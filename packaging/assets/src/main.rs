//! `ringd-assets DIR`: writes the man pages and shell completions of `ringd` and `loadgen`
//! into DIR, from the same clap definitions the binaries parse, so they cannot drift from
//! `--help`. Run before `cargo deb`, which packages DIR's files (see `[package.metadata.deb]`
//! in the root Cargo.toml):
//!
//! ```text
//! DIR/man/ringd.1  DIR/man/loadgen.1  DIR/man/loadgen-merge.1
//! DIR/completions/{ringd,loadgen}.bash  DIR/completions/_{ringd,loadgen}  DIR/completions/{ringd,loadgen}.fish
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Command, CommandFactory};
use clap_complete::Shell;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir] = args.as_slice() else {
        eprintln!("usage: ringd-assets DIR");
        return ExitCode::from(2);
    };
    match write_all(Path::new(dir)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringd-assets: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes every page and completion into `dir`; the paths written.
fn write_all(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let ringd = ringd::config::cli::Args::command();
    let loadgen = loadgen::args::Args::command();
    let merge = loadgen::merge::MergeArgs::command();
    let mut written = vec![
        man_page(&ringd, "ringd", &man)?,
        man_page(&loadgen, "loadgen", &man)?,
        man_page(&merge, "loadgen-merge", &man)?,
    ];
    // `loadgen merge` is recognised by the binary before clap parses a run's arguments (a
    // target can never be called `merge`); for completion it is the subcommand it looks like.
    let loadgen_completion = loadgen
        .clone()
        .subcommand(merge.name("merge").bin_name("loadgen merge"));
    for (cmd, name) in [(ringd, "ringd"), (loadgen_completion, "loadgen")] {
        for (shell, file) in [
            (Shell::Bash, format!("{name}.bash")),
            (Shell::Zsh, format!("_{name}")),
            (Shell::Fish, format!("{name}.fish")),
        ] {
            let path = completions.join(file);
            let mut cmd = cmd.clone();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, name, &mut out);
            write(&path, &out)?;
            written.push(path);
        }
    }
    Ok(written)
}

/// Renders `cmd`'s man page (section 1) as `dir/NAME.1`.
fn man_page(cmd: &Command, name: &'static str, dir: &Path) -> anyhow::Result<PathBuf> {
    let cmd = cmd.clone().name(name);
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .with_context(|| format!("rendering the man page of {name}"))?;
    let path = dir.join(format!("{name}.1"));
    write(&path, &out)?;
    Ok(path)
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
