//! The ringd process around the server: where the listening sockets come from (bound, or
//! inherited from systemd or a predecessor), the signals (SIGTERM/SIGINT drain, SIGUSR2 live
//! upgrade), the pid file and the service manager's notifications. `main` parses the command
//! line and calls [`run`]; everything else happens here.
//!
//! A live upgrade, from the old process's side: SIGUSR2 starts the successor with every
//! listening socket ([`crate::process::upgrade`]); the old process keeps accepting meanwhile, so
//! nothing is refused while the new one starts. Once the successor reports that all its
//! workers are up, the old process writes the pid file with its pid, tells systemd the new
//! main pid, stops accepting without disturbing the sockets (the successor accepts on them)
//! and drains like on SIGTERM. If the successor exits, is not ready within
//! `--upgrade-timeout` or cannot use the sockets, it is stopped and reaped, and the old
//! process serves on as if nothing happened.

pub mod activation;
pub mod listener;
pub mod notify;
mod reload;
pub mod server;
pub mod upgrade;
mod worker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
use tracing::{info, warn};

use crate::config::cli::Args;
use crate::config::file::FileInfo;
use crate::config::Config;
use crate::connection::WorkerStats;
use crate::error::Error;
use crate::metrics;
use activation::{InheritedSockets, Predecessor};
use server::{start_with, DrainTrigger};
use upgrade::{Executable, Readiness};

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Accepting.
    Serving,
    /// Accepting while a successor starts.
    Upgrading,
    /// A successor accepts; this process drains.
    HandedOver(u32),
    /// Draining after SIGTERM/SIGINT or a worker failure.
    Stopping,
}

/// What the signal thread and the upgrade threads share.
#[derive(Debug)]
struct Shared {
    /// Where the process is.
    phase: Mutex<Phase>,
    /// Drains or hands over the server.
    trigger: DrainTrigger,
    /// What a successor runs; `None` if it could not be told at start.
    exe: Option<Executable>,
    /// `--pid-file`.
    pid_file: Option<PathBuf>,
    /// `--upgrade-timeout`.
    upgrade_timeout: Duration,
    /// How long a successor that is stopped may take to drain.
    stop_grace: Duration,
    /// Upgrade threads, joined before the process exits (each reaps its failed successor).
    upgrades: Mutex<Vec<JoinHandle<()>>>,
    /// The workers' counters, handed to a successor with what this process carries.
    stats: Vec<Arc<WorkerStats>>,
    /// The configuration the server runs with (its upstreams' counters, in proxy mode).
    config: Arc<Config>,
    /// The counters of the process's other parts (the access log).
    series: Vec<Arc<dyn metrics::Series>>,
    /// `--access-log`, reopened on SIGHUP.
    access_log: Option<Arc<crate::access_log::AccessLog>>,
    /// SIGHUP.
    reload: reload::Reload,
    /// A SIGHUP came during an upgrade: the successor gets one too once it serves.
    reload_after_upgrade: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs ringd as a process until it has drained: after SIGTERM/SIGINT, after handing over
/// to a successor, or after a worker failed (an error). `file` is the configuration file
/// `args` were read from, if any.
pub fn run(args: &Args, file: Option<FileInfo>) -> Result<(), Error> {
    metrics::process_start_time();
    let exe = match Executable::current() {
        Ok(e) => Some(e),
        Err(e) => {
            warn!("live upgrades are unavailable: {e}");
            None
        }
    };
    let argv = exe
        .as_ref()
        .map_or_else(|| std::env::args_os().collect(), |e| e.args.clone());
    let activation = activation::take_from_env()?;
    let config = args
        .into_config(crate::engine::auto::pick)
        .map_err(Error::Usage)?;
    if let Some(refusal) = &config.engine_refusal {
        warn!("--engine auto: {refusal}; running {}", config.engine);
    }
    let (sockets, mut predecessor) = match activation {
        Some(a) => (Some(a.sockets), a.predecessor),
        None => (None, None),
    };
    if let Some(s) = &sockets {
        check_inherited(args, s, predecessor.as_ref())?;
        s.configure(&config.listen_options, args.backlog.is_some())?;
    }
    let taken = sockets
        .as_ref()
        .map_or(0, |s| s.listeners.len() + usize::from(s.metrics.is_some()));
    let counters = predecessor.as_mut().and_then(|p| p.counters.take());
    if let Some(p) = &predecessor {
        metrics::set_upgrades(p.upgrades);
    }
    if counters.is_some() {
        metrics::expect_carried();
    }
    // Registered before the server starts, so that a signal during the start is queued for
    // the loop below rather than ending the process.
    let signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR2, SIGHUP])
        .map_err(Error::Signals)?;
    let server = start_with(config.clone(), sockets)?;
    let shared = Arc::new(Shared {
        phase: Mutex::new(Phase::Serving),
        trigger: server.drain_trigger(),
        exe,
        pid_file: args.pid_file.clone(),
        upgrade_timeout: args.upgrade_timeout,
        stop_grace: config.shutdown_timeout + Duration::from_secs(2),
        upgrades: Mutex::new(Vec::new()),
        stats: server.stats().to_vec(),
        config: server.config().clone(),
        series: server.series(),
        access_log: server.access_log().cloned(),
        reload: reload::Reload::new(argv, args.clone(), file, server.reloader()),
        reload_after_upgrade: AtomicBool::new(false),
    });
    let announced = match predecessor {
        // The predecessor writes the pid file and tells systemd once it has handed over.
        Some(p) => report_ready(p, taken),
        None => false,
    };
    match counters {
        Some(pipe) if announced => receive_counters(pipe, server.stats().len()),
        Some(_) => metrics::set_carried(None),
        None => {}
    }
    serve(server, &shared, signals, announced)
}

/// Serves until the server has drained: announces the process (unless its predecessor does),
/// handles signals on a thread of their own, and joins what an upgrade left.
fn serve(
    server: server::ServerHandle,
    shared: &Arc<Shared>,
    signals: signal_hook::iterator::Signals,
    announced: bool,
) -> Result<(), Error> {
    let me = std::process::id();
    if !announced {
        if let Some(path) = &shared.pid_file {
            if let Err(e) = notify::write_pid_file(path, me) {
                shared.trigger.fire();
                let _ = server.wait();
                return Err(e);
            }
        }
        notify::notify("READY=1");
    }
    let signal_side = shared.clone();
    std::thread::Builder::new()
        .name("ringd-signals".into())
        .spawn(move || {
            let mut signals = signals;
            for sig in signals.forever() {
                on_signal(&signal_side, sig);
            }
        })
        .map_err(Error::Spawn)?;
    let result = server.wait();
    if result.is_err() {
        // A worker failed: the server drained itself.
        let mut phase = lock(&shared.phase);
        if matches!(*phase, Phase::Serving | Phase::Upgrading) {
            *phase = Phase::Stopping;
        }
    }
    let threads = std::mem::take(&mut *lock(&shared.upgrades));
    for t in threads {
        let _ = t.join();
    }
    if let Some(path) = &shared.pid_file {
        // After a handover the file names the successor, which keeps it.
        notify::remove_pid_file_if(path, me);
    }
    result.map(drop)
}

/// `--listen` names the address itself; inherited sockets already have one. A successor
/// runs with its predecessor's arguments, so there `--listen` must agree with the sockets.
fn check_inherited(
    args: &Args,
    sockets: &InheritedSockets,
    predecessor: Option<&Predecessor>,
) -> Result<(), Error> {
    match (args.listen, predecessor) {
        (Some(addr), Some(_)) => sockets.check_listen(addr),
        (Some(addr), None) => Err(Error::Inherited(format!(
            "--listen {addr} cannot be used with the {} listening socket(s) passed by the \
             service manager (LISTEN_FDS): the socket unit sets the address; remove --listen",
            sockets.listeners.len()
        ))),
        (None, _) => Ok(()),
    }
}

/// Tells the predecessor that every worker is up (it hands over on this byte); false if it
/// cannot be told (it is gone: this process serves alone and announces itself).
fn report_ready(p: Predecessor, taken: usize) -> bool {
    use std::io::Write;
    rejoin_group_of(p.pid);
    let mut pipe = std::fs::File::from(p.ready);
    match pipe.write_all(b"R") {
        Ok(()) => {
            info!(
                upgrades = p.upgrades,
                "took over {taken} listening sockets from pid {}", p.pid
            );
            true
        }
        Err(e) => {
            warn!(
                "took over {taken} listening sockets, but cannot tell pid {} that this process is ready ({e}): serving alone",
                p.pid
            );
            false
        }
    }
}

/// How long a successor waits for its predecessor's counters (they are sent right after the
/// handover, which takes at most the workers' second to stop accepting).
const COUNTERS_WAIT: Duration = Duration::from_secs(10);

/// Reads the predecessor's counters, sent when it hands over (the end of the pipe ends
/// them), on a thread of its own: the scrapes wait for them, the connections do not.
fn receive_counters(pipe: std::os::fd::OwnedFd, workers: usize) {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let read = move || {
        // A predecessor that never sends (stopped, or stuck) must not hold the scrapes, or
        // the next upgrade, for ever.
        let mut pfd = libc::pollfd {
            fd: pipe.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let wait_ms = i32::try_from(COUNTERS_WAIT.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: poll(2) on one pollfd naming a descriptor this thread owns.
        if unsafe { libc::poll(&mut pfd, 1, wait_ms) } <= 0 {
            warn!(
                "the previous process's counters did not come within {COUNTERS_WAIT:?}: counting from zero"
            );
            metrics::set_carried(None);
            return;
        }
        let mut text = String::new();
        let got = std::fs::File::from(pipe).read_to_string(&mut text);
        match got.ok().and_then(|_| metrics::Counters::decode(&text)) {
            Some(c) => metrics::set_carried(Some(c.for_workers(workers))),
            None => {
                warn!("the previous process's counters did not come whole: counting from zero");
                metrics::set_carried(None);
            }
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("ringd-counters".into())
        .spawn(read)
    {
        warn!("cannot start a thread to read the previous process's counters ({e}): counting from zero");
        metrics::set_carried(None);
    }
}

/// A successor starts in a process group of its own, so that a failed start can be stopped
/// with everything it spawned; once it serves, it rejoins its predecessor's group, so that
/// whoever stops ringd by its group (a terminal's Ctrl-C, `timeout`, a supervisor) still
/// reaches it after an upgrade.
fn rejoin_group_of(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: getpgid(2) and setpgid(2) take and change nothing but process group ids; the
    // predecessor waits for this process's readiness, so its group still exists.
    let rejoined = unsafe {
        let group = libc::getpgid(pid);
        group > 0 && libc::setpgid(0, group) == 0
    };
    if !rejoined {
        warn!(
            "cannot rejoin the process group of pid {pid} ({}): a signal to that group will not reach this process",
            std::io::Error::last_os_error()
        );
    }
}

fn on_signal(shared: &Arc<Shared>, sig: i32) {
    let name = signal_name(sig);
    if sig == SIGHUP {
        if let Some(log) = &shared.access_log {
            // Whatever becomes of the reload: logrotate sends SIGHUP after moving the file.
            log.reopen();
        }
    }
    let mut phase = lock(&shared.phase);
    match (sig, *phase) {
        (SIGHUP, Phase::Serving) => {
            drop(phase);
            shared.reload.run();
        }
        (SIGHUP, Phase::Upgrading) => {
            // The successor may have read the file before it changed: it is told again
            // once it serves (or, if the upgrade fails, this process has it).
            shared.reload_after_upgrade.store(true, Ordering::Release);
            drop(phase);
            shared.reload.run();
        }
        (SIGHUP, Phase::HandedOver(pid)) => forward_sighup(pid),
        (SIGHUP, Phase::Stopping) => info!("SIGHUP ignored: draining"),
        (SIGUSR2, Phase::Serving) if metrics::counters_pending() => {
            // A successor handed only this process's own counts would report less than
            // was scraped: the predecessor's must have arrived first.
            warn!("{name} ignored: the previous process's counters have not arrived yet; send it again in a moment");
        }
        (SIGUSR2, Phase::Serving) => {
            *phase = Phase::Upgrading;
            // From here on a drain must leave the listening sockets to the successor: set
            // under the phase lock, so that a SIGTERM handled next already sees it.
            shared.trigger.expect_successor(true);
            drop(phase);
            let side = shared.clone();
            match std::thread::Builder::new()
                .name("ringd-upgrade".into())
                .spawn(move || upgrade(&side))
            {
                Ok(t) => lock(&shared.upgrades).push(t),
                Err(e) => upgrade_failed(shared, format!("cannot start a thread for it: {e}")),
            }
        }
        (SIGUSR2, Phase::Upgrading) => {
            info!("SIGUSR2 ignored: an upgrade is already in progress")
        }
        (SIGUSR2, Phase::HandedOver(pid)) => {
            info!("SIGUSR2 ignored: already handed over to pid {pid}, draining")
        }
        (SIGUSR2, Phase::Stopping) => info!("SIGUSR2 ignored: draining"),
        (_, Phase::Serving | Phase::Upgrading) => {
            let upgrading = *phase == Phase::Upgrading;
            *phase = Phase::Stopping;
            drop(phase);
            // Drain first: nothing, not even a failing log write, may stand in its way.
            shared.trigger.fire();
            notify::notify("STOPPING=1");
            if upgrading {
                info!("signal {name} received during an upgrade: stopping the new process and draining");
            } else {
                info!("signal {name} received: draining");
            }
        }
        (_, Phase::HandedOver(_) | Phase::Stopping) => {
            info!("signal {name} received: already draining")
        }
    }
}

/// A reload asked of this process after it handed over goes to the one that serves now.
fn forward_sighup(pid: u32) {
    // SAFETY: kill(2) with a pid this process started and has not reaped (it serves).
    let sent = unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) } == 0;
    match sent {
        true => info!("SIGHUP forwarded to pid {pid}, which serves now"),
        false => warn!(
            "SIGHUP: cannot forward it to pid {pid}, which serves now: {}",
            std::io::Error::last_os_error()
        ),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGUSR2 => "SIGUSR2",
        SIGHUP => "SIGHUP",
        _ => "?",
    }
}

/// One live upgrade attempt, on its own thread (the signal thread stays responsive).
fn upgrade(shared: &Shared) {
    let Some(exe) = &shared.exe else {
        return upgrade_failed(shared, "the executable's path is unknown".into());
    };
    let sockets = match shared.trigger.sockets_for_successor() {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => return upgrade_failed(shared, "the listening sockets are closed".into()),
        Err(e) => return upgrade_failed(shared, format!("cannot duplicate the sockets: {e}")),
    };
    info!(
        "SIGUSR2: starting {} with {} listening sockets",
        exe.path.display(),
        sockets.len()
    );
    let mut child = match upgrade::spawn(exe, &sockets, metrics::upgrades() + 1) {
        Ok(c) => c,
        Err(e) => {
            return upgrade_failed(shared, format!("cannot start {}: {e}", exe.path.display()))
        }
    };
    drop(sockets);
    let pid = child.pid();
    let deadline = Instant::now() + shared.upgrade_timeout;
    let stopping = || *lock(&shared.phase) == Phase::Stopping;
    let readiness = child.wait_ready(deadline, stopping);
    let mut phase = lock(&shared.phase);
    if readiness == Readiness::Ready && *phase == Phase::Upgrading {
        if let Some(path) = &shared.pid_file {
            if let Err(e) = notify::write_pid_file(path, pid) {
                warn!("{e}");
            }
        }
        notify::notify(&format!("MAINPID={pid}"));
        let n = metrics::count_upgrade();
        *phase = Phase::HandedOver(pid);
        if shared.reload_after_upgrade.swap(false, Ordering::AcqRel) {
            forward_sighup(pid);
        }
        // Stops this process's metrics endpoint first: the snapshot below is then at least
        // what any scrape of this process saw.
        shared.trigger.hand_over();
        drop(phase);
        let counters = metrics::totals(&shared.stats, &shared.config, &shared.series);
        if let Err(e) = child.send_counters(&counters.encode()) {
            warn!("cannot send the counters to pid {pid} ({e}): its counters start from zero");
        }
        info!(upgrades = n, "handed over to pid {pid}, draining");
        return;
    }
    let was = *phase;
    drop(phase);
    if was == Phase::Stopping {
        let how = child.terminate(shared.stop_grace);
        info!("stopped the new process (pid {pid}) because this one is stopping: it {how}");
        return;
    }
    let reason = match readiness {
        Readiness::Closed => {
            let how = match child.exited_within(Duration::from_secs(2)) {
                Some(how) => how,
                None => format!(
                    "closed its readiness pipe and was stopped: it {}",
                    child.terminate(shared.stop_grace)
                ),
            };
            format!("the new process (pid {pid}) {how} before it was ready")
        }
        _ => format!(
            "the new process (pid {pid}) was not ready within {:?} (--upgrade-timeout); stopped it: it {}",
            shared.upgrade_timeout,
            child.terminate(shared.stop_grace)
        ),
    };
    upgrade_failed(shared, reason);
}

/// Back to serving alone (unless stopping meanwhile); one line saying why.
fn upgrade_failed(shared: &Shared, reason: String) {
    let mut phase = lock(&shared.phase);
    let serving = *phase == Phase::Upgrading;
    if serving {
        *phase = Phase::Serving;
        // No successor holds the sockets (it was reaped): they are this process's alone
        // again. A drain already under way keeps them as it started.
        shared.trigger.expect_successor(false);
    }
    drop(phase);
    if serving {
        warn!("upgrade failed: {reason}; still serving");
    } else {
        warn!("upgrade abandoned: {reason}; this process is stopping");
    }
}
