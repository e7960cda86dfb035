//! SIGHUP: the configuration file is read and checked again and put in force for new
//! connections ([`crate::process::server::Reloader`]); connections already open keep their
//! upstream and their accounting. A file that does not check, or a change that needs new
//! sockets or threads (a live upgrade, SIGUSR2, applies those), is refused in one log line
//! and the running configuration stays.

use std::ffi::OsString;
use std::sync::{Mutex, PoisonError};

use tracing::{info, warn};

use crate::config::cli::Args;
use crate::config::file::{self, FileInfo};
use crate::metrics;
use crate::process::server::Reloader;

/// What a reload needs.
#[derive(Debug)]
pub(crate) struct Reload {
    /// The command line ringd was started with (`--config` among it, or not).
    argv: Vec<OsString>,
    /// The arguments in force.
    args: Mutex<Args>,
    /// The file in force, if ringd runs with one.
    file: Option<FileInfo>,
    /// Applies a configuration to the server.
    reloader: Reloader,
}

impl Reload {
    /// Reloads of the server behind `reloader`, started with `argv` into `args`.
    pub(crate) fn new(
        argv: Vec<OsString>,
        args: Args,
        file: Option<FileInfo>,
        reloader: Reloader,
    ) -> Self {
        if let Some(f) = &file {
            metrics::config::loaded(&f.sha256);
        }
        Reload {
            argv,
            args: Mutex::new(args),
            file,
            reloader,
        }
    }

    /// Reads the file again and applies it, or says in one line why not.
    pub(crate) fn run(&self) {
        let Some(f) = &self.file else {
            info!("SIGHUP ignored: ringd runs without --config, there is no file to read again");
            return;
        };
        match self.apply() {
            Ok(sha256) => {
                metrics::config::count_reload(true);
                metrics::config::loaded(&sha256);
                info!("SIGHUP: {} reloaded (sha256 {sha256})", f.path.display());
            }
            Err(e) => {
                metrics::config::count_reload(false);
                warn!(
                    "SIGHUP: {} refused, the running configuration stays: {e}",
                    f.path.display()
                );
            }
        }
    }

    /// The hash of the file applied.
    fn apply(&self) -> Result<String, String> {
        let (args, info) = file::resolve(&self.argv).map_err(|p| p.join("; "))?;
        let info = info.ok_or("the command line names no --config any more")?;
        let mut running = self.args.lock().unwrap_or_else(PoisonError::into_inner);
        let keys: Vec<&str> = [
            ("pid-file", running.pid_file != args.pid_file),
            (
                "upgrade-timeout",
                running.upgrade_timeout != args.upgrade_timeout,
            ),
            ("log-level", running.log_level != args.log_level),
        ]
        .into_iter()
        .filter_map(|(k, d)| d.then_some(k))
        .collect();
        if !keys.is_empty() {
            return Err(format!(
                "{} cannot change on a reload: a live upgrade (SIGUSR2) applies it",
                keys.join(", ")
            ));
        }
        let config = args.into_config(crate::engine::auto::pick)?;
        self.reloader.apply(config)?;
        *running = args;
        Ok(info.sha256)
    }
}
