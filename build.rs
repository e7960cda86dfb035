//! Build script: names the git commit the binaries are built from, for `--version`.
//!
//! Sets `RINGD_COMMIT` to `RINGD_COMMIT` from the environment when that is set (a build from
//! a source archive or a container context without `.git` that knows its commit), else to the
//! short hash of `HEAD`, else to `unknown` (no git, or no repository). Uncommitted changes are
//! not marked: the script reruns when `HEAD` moves, not on every edit, so such a mark would go
//! stale. loadgen's build script is this file too.

use std::path::PathBuf;
use std::process::Command;

pub fn main() {
    println!("cargo:rerun-if-env-changed=RINGD_COMMIT");
    let commit = match std::env::var("RINGD_COMMIT") {
        Ok(c) if !c.is_empty() => c,
        _ => from_git().unwrap_or_else(|| "unknown".to_string()),
    };
    println!("cargo:rustc-env=RINGD_COMMIT={commit}");
}

/// The commit from git, and the files whose change means a new commit was checked out.
fn from_git() -> Option<String> {
    let hash = git(&["rev-parse", "--short=12", "HEAD"])?;
    // HEAD moves on checkout; the branch it names moves on commit (loose or packed ref).
    // A worktree keeps its HEAD apart from the repository's refs: ask git for each path.
    let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(branch);
    }
    for name in watch {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]).map(PathBuf::from) {
            // A path that does not exist would make cargo rerun this script on every build.
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    Some(hash)
}

/// `git ARGS`' output, trimmed, if it ran and succeeded.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}
