//! A whole run: checks limits and reachability, starts the pinned event-loop threads, samples
//! CPU time at the edges of the measured window, shows progress, passes signals on as a
//! stop, and merges what every thread recorded, including threads that gave up.

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;

use crate::clock::{now_ns, pid_cpu_secs, process_cpu_secs, tighten_timer_slack};
use crate::plan::Plan;
use crate::source;
use crate::stats::{histogram, ThreadStats};
use crate::worker::{self, Interval, Shared, ThreadPlan};

/// How often the main thread looks at signals, the clock and the threads' intervals. A
/// millisecond costs little CPU, and it keeps the load generator's CPU from idling deeply
/// between responses: on a VM an idle vCPU is slow to wake, and with 100 ms here closed-loop
/// HTTP throughput against a latency-bound server measured 10-40% lower on this machine.
/// loadgen has always woken this often (the progress timer did it before, unintended).
const MAIN_WAKE_NS: u64 = 1_000_000;

/// File descriptors kept free beyond one per connection (epoll, timerfd, stdio, files).
const SPARE_FDS: u64 = 64;

/// What a run measured.
#[derive(Debug)]
pub struct RunResult {
    /// The plan it ran.
    pub plan: Plan,
    /// All threads' stats, merged.
    pub stats: ThreadStats,
    /// Length of the measured window: the duration asked for (cut short if the run was
    /// stopped), or in count mode from the end of the warm-up to the last measured response.
    pub measured: Duration,
    /// Corrected latency per second of the measured window.
    pub intervals: Vec<Histogram<u64>>,
    /// Measured completions and error events per second of the measured window.
    pub per_second: Vec<(u64, u64)>,
    /// Wall-clock time the measured window began.
    pub started: SystemTime,
    /// loadgen's CPU seconds over the measured window.
    pub loadgen_cpu: f64,
    /// The server's CPU seconds over the measured window (with `--server-pid`).
    pub server_cpu: Option<f64>,
    /// The server pid asked for.
    pub server_pid: Option<u32>,
    /// Threads that gave up, with why.
    pub thread_errors: Vec<String>,
    /// The run was stopped by a signal.
    pub interrupted: bool,
}

/// How to run, beyond the plan.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Report this process's CPU time per request.
    pub server_pid: Option<u32>,
    /// Show a live progress line on stderr.
    pub progress: bool,
    /// Signals received (SIGINT/SIGTERM): the first stops the run (it then reports what it
    /// measured), the second stops waiting for responses still in flight.
    pub interrupts: Option<Arc<AtomicUsize>>,
}

/// Runs `plan`. Fails only when the run cannot start (a target does not answer, the
/// server pid cannot be read); once it has started, whatever happens is in the result.
pub fn run(plan: Plan, opts: &RunOptions) -> anyhow::Result<RunResult> {
    preflight(&plan, opts)?;
    let plan = Arc::new(plan);
    let shared = Arc::new(shared_from_now(plan.clone()));
    let (tx, rx) = mpsc::channel::<Interval>();
    let handles = spawn_threads(&shared, tx)?;
    let watch = Watch::new(opts, shared.start).until_threads_end(&shared, &rx);
    let (loadgen_cpu, server_cpu) = watch.cpu_over_window();
    let (stats, thread_errors) = join(handles);
    let window_end = match shared.end {
        Some(end) => end.min(stats.stopped_ns),
        None if stats.last_completion_ns > 0 => stats.last_completion_ns,
        None => stats.stopped_ns,
    };
    let warmup_end = shared.warmup_end;
    let measured = Duration::from_nanos(window_end.saturating_sub(warmup_end));
    let started = SystemTime::now() - Duration::from_nanos(now_ns().saturating_sub(warmup_end));
    drop(shared);
    let plan = Arc::try_unwrap(plan).unwrap_or_else(|p| (*p).clone());
    Ok(RunResult {
        plan,
        stats,
        measured,
        intervals: watch.seconds.hists,
        per_second: watch.seconds.counts,
        started,
        loadgen_cpu,
        server_cpu,
        server_pid: opts.server_pid,
        thread_errors,
        interrupted: watch.interrupted,
    })
}

/// What must hold before anything starts: file descriptors for every connection, every
/// target reachable, the server's CPU time readable; then waits for `--start-at`.
fn preflight(plan: &Plan, opts: &RunOptions) -> anyhow::Result<()> {
    ensure_fd_limit(plan.connections).map_err(anyhow::Error::msg)?;
    check_reachable(plan)?;
    if let Some(pid) = opts.server_pid {
        pid_cpu_secs(pid).map_err(|e| {
            anyhow::anyhow!("--server-pid {pid}: cannot read /proc/{pid}/stat: {e}")
        })?;
    }
    if let Some(at) = plan.start_at_unix_s {
        wait_until(at, opts)?;
    }
    Ok(())
}

/// The run's clock starts now: warm-up, then the measured duration (none in count mode).
fn shared_from_now(plan: Arc<Plan>) -> Shared {
    let start = now_ns();
    let warmup_end = start + plan.warmup.as_nanos() as u64;
    let end = plan
        .requests
        .is_none()
        .then(|| warmup_end + plan.duration.as_nanos() as u64);
    Shared {
        start,
        warmup_end,
        end,
        stop: AtomicBool::new(false),
        abort: AtomicBool::new(false),
        progress: (0..plan.threads).map(|_| AtomicU64::new(0)).collect(),
        plan,
    }
}

/// An event-loop thread; it ends with what it measured, and why it gave up if it did.
type EventLoop = JoinHandle<(ThreadStats, Option<String>)>;

/// Starts one event-loop thread per `--threads`, each with every n-th connection and its
/// share of a `--requests` quota, pinned when `--pin` says so.
fn spawn_threads(
    shared: &Arc<Shared>,
    tx: mpsc::Sender<Interval>,
) -> std::io::Result<Vec<EventLoop>> {
    let plan = &shared.plan;
    let mut handles = Vec::new();
    for index in 0..plan.threads {
        let conn_ids: Vec<u64> = (index..plan.connections)
            .step_by(plan.threads)
            .map(|i| i as u64)
            .collect();
        let quota = plan.requests.map(|n| {
            let base = n / plan.threads as u64;
            base + u64::from((index as u64) < n % plan.threads as u64)
        });
        let tp = ThreadPlan {
            index,
            conn_ids,
            quota,
            interval_ns: plan.interval_ns(),
        };
        let shared = shared.clone();
        let tx = tx.clone();
        let cpu = (!plan.pin.is_empty()).then(|| plan.pin[index % plan.pin.len()]);
        handles.push(
            std::thread::Builder::new()
                .name(format!("loadgen-{index}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                    }
                    tighten_timer_slack();
                    worker::run(&shared, tp, tx)
                })?,
        );
    }
    Ok(handles)
}

/// Every thread's stats merged, and why threads gave up (a panic included).
fn join(handles: Vec<EventLoop>) -> (ThreadStats, Vec<String>) {
    let mut stats = ThreadStats::new();
    let mut thread_errors = Vec::new();
    for h in handles {
        match h.join() {
            Ok((s, error)) => {
                stats.merge(&s);
                thread_errors.extend(error);
            }
            Err(_) => thread_errors.push("an event-loop thread panicked".into()),
        }
    }
    (stats, thread_errors)
}

/// loadgen's CPU seconds, and the server's when it can be read.
type CpuSample = (f64, Option<f64>);

/// The main thread while the event loops run: it samples CPU time at the edges of the
/// measured window, passes signals on as a stop, collects the threads' seconds and shows
/// progress, until every thread has hung up its interval channel.
#[derive(Debug)]
struct Watch<'a> {
    opts: &'a RunOptions,
    seconds: Seconds,
    cpu_at_warmup: Option<CpuSample>,
    /// At the end of the duration or at the first signal, whichever came first.
    cpu_at_end: Option<CpuSample>,
    progress: Option<Progress>,
    interrupted: bool,
}

impl<'a> Watch<'a> {
    fn new(opts: &'a RunOptions, start: u64) -> Self {
        Watch {
            opts,
            seconds: Seconds::default(),
            cpu_at_warmup: None,
            cpu_at_end: None,
            progress: opts.progress.then(|| Progress::new(start)),
            interrupted: false,
        }
    }

    fn cpu_now(&self) -> CpuSample {
        let server = self.opts.server_pid.and_then(|p| pid_cpu_secs(p).ok());
        (process_cpu_secs(), server)
    }

    fn until_threads_end(mut self, shared: &Shared, rx: &mpsc::Receiver<Interval>) -> Self {
        loop {
            let now = now_ns();
            if self.cpu_at_warmup.is_none() && now >= shared.warmup_end {
                self.cpu_at_warmup = Some(self.cpu_now());
            }
            if self.cpu_at_end.is_none() && shared.end.is_some_and(|e| now >= e) {
                self.cpu_at_end = Some(self.cpu_now());
            }
            self.pass_on_signals(shared);
            let wake = match (self.cpu_at_warmup, shared.end) {
                (None, _) => shared.warmup_end,
                (Some(_), Some(e)) if self.cpu_at_end.is_none() => e,
                _ => now + MAIN_WAKE_NS,
            };
            let wait = Duration::from_nanos(wake.saturating_sub(now).clamp(1_000, MAIN_WAKE_NS));
            match rx.recv_timeout(wait) {
                Ok(iv) => self.seconds.add(iv),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if let Some(p) = self.progress.as_mut() {
                p.show(shared, &self.seconds.hists);
            }
        }
        if self.progress.is_some() {
            eprint!("\r\x1b[K");
        }
        self
    }

    /// The first signal stops the run (and ends its CPU window), the second aborts it.
    fn pass_on_signals(&mut self, shared: &Shared) {
        let signals = (self.opts.interrupts.as_ref()).map_or(0, |n| n.load(Ordering::Relaxed));
        if signals >= 1 && !self.interrupted {
            self.interrupted = true;
            shared.stop.store(true, Ordering::Relaxed);
            if self.cpu_at_end.is_none() {
                self.cpu_at_end = Some(self.cpu_now());
            }
        }
        if signals >= 2 {
            shared.abort.store(true, Ordering::Relaxed);
        }
    }

    /// loadgen's and the server's CPU seconds over the measured window; a window never
    /// reached counts as empty, one never closed ends now.
    fn cpu_over_window(&self) -> CpuSample {
        let end = self.cpu_at_end.unwrap_or_else(|| self.cpu_now());
        let (loadgen0, server0) = self.cpu_at_warmup.unwrap_or(end);
        let server = match (server0, end.1) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        (end.0 - loadgen0, server)
    }
}

/// Sleeps until `at` (seconds since the Unix epoch), against the wall clock each time so
/// that a clock stepped meanwhile is followed; a signal cancels the run.
fn wait_until(at: f64, opts: &RunOptions) -> anyhow::Result<()> {
    loop {
        let left = crate::plan::start::wait(at, SystemTime::now());
        if left.is_zero() {
            return Ok(());
        }
        let signalled = opts
            .interrupts
            .as_ref()
            .is_some_and(|n| n.load(Ordering::Relaxed) > 0);
        if signalled {
            anyhow::bail!("stopped by a signal before --start-at");
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Every target answers a connect, from the first source; and every source reaches the
/// first target (sources × targets connects would be too many to try).
fn check_reachable(plan: &Plan) -> anyhow::Result<()> {
    let first_source = plan.sources.first().copied();
    let mut pairs: Vec<(Option<IpAddr>, SocketAddr)> =
        plan.targets.iter().map(|&t| (first_source, t)).collect();
    pairs.extend(
        plan.sources
            .iter()
            .skip(1)
            .map(|&s| (Some(s), plan.targets[0])),
    );
    for (src, t) in pairs {
        source::connect_timeout(src, t, Duration::from_secs(3)).map_err(|e| {
            let from = src.map(|s| format!(" from {s}")).unwrap_or_default();
            anyhow::anyhow!(
                "cannot connect to {t}{from}: {e} (is the server running and listening there?)"
            )
        })?;
    }
    Ok(())
}

/// The threads' intervals, merged second by second.
#[derive(Debug, Default)]
struct Seconds {
    hists: Vec<Histogram<u64>>,
    counts: Vec<(u64, u64)>,
}

impl Seconds {
    fn add(&mut self, iv: Interval) {
        let i = iv.index as usize;
        if self.hists.len() <= i {
            self.hists.resize_with(i + 1, histogram);
            self.counts.resize(i + 1, (0, 0));
        }
        // Same bounds everywhere, so adding cannot fail.
        let _ = self.hists[i].add(&iv.hist);
        self.counts[i].0 += iv.completed;
        self.counts[i].1 += iv.errors;
    }
}

/// The live progress line (stderr, once a second).
#[derive(Debug)]
struct Progress {
    start: u64,
    next: u64,
    last: (u64, u64),
}

impl Progress {
    fn new(start: u64) -> Self {
        Progress {
            start,
            next: start + 1_000_000_000,
            last: (start, 0),
        }
    }

    fn show(&mut self, shared: &Shared, hists: &[Histogram<u64>]) {
        let (warmup_end, end) = (shared.warmup_end, shared.end);
        let now = now_ns();
        if now < self.next {
            return;
        }
        self.next = now + 1_000_000_000;
        let done: u64 = shared
            .progress
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .sum();
        let rate = done.saturating_sub(self.last.1) as f64 / ((now - self.last.0) as f64 / 1e9);
        self.last = (now, done);
        let p99 = hists
            .iter()
            .rev()
            .find(|h| !h.is_empty())
            .map(|h| crate::human::fmt_ns(h.value_at_quantile(0.99)))
            .unwrap_or_else(|| "-".into());
        let phase = if now < warmup_end {
            "warm-up"
        } else if shared.stop.load(Ordering::Relaxed) || end.is_some_and(|e| now >= e) {
            "finishing"
        } else {
            "measuring"
        };
        let mut out = std::io::stderr();
        let _ = write!(
            out,
            "\r\x1b[K{phase} {:6.1} s  {:>10.0} req/s  p99 {p99}",
            (now - self.start) as f64 / 1e9,
            rate
        );
        let _ = out.flush();
    }
}

/// Makes sure `connections` sockets fit under RLIMIT_NOFILE, raising the soft limit to the
/// hard one if needed.
pub fn ensure_fd_limit(connections: usize) -> Result<(), String> {
    let need = connections as u64 + SPARE_FDS;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Ok(());
    }
    if lim.rlim_cur >= need {
        return Ok(());
    }
    if lim.rlim_max >= need {
        let raised = libc::rlimit {
            rlim_cur: need,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: a valid rlimit within the hard limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(());
        }
    }
    Err(format!(
        "{connections} connections need {need} file descriptors but the limit is {} (hard {}): lower --connections to at most {} or raise the limit (ulimit -n)",
        lim.rlim_cur,
        lim.rlim_max,
        lim.rlim_max.saturating_sub(SPARE_FDS)
    ))
}

/// True when a progress line makes sense (it goes to stderr).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}
