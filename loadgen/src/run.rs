//! A whole run: checks limits and reachability, starts the pinned event-loop threads, samples
//! CPU time at the edges of the measured window, shows progress, and merges what the threads
//! recorded.

use std::io::{IsTerminal, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;

use crate::args::Plan;
use crate::clock::{now_ns, pid_cpu_secs, process_cpu_secs, tighten_timer_slack};
use crate::stats::{histogram, ThreadStats};
use crate::worker::{self, Interval, Shared, ThreadPlan};

/// File descriptors kept free beyond one per connection (epoll, timerfd, stdio, files).
const SPARE_FDS: u64 = 64;

/// What a run measured.
#[derive(Debug)]
pub struct RunResult {
    /// The plan it ran.
    pub plan: Plan,
    /// All threads' stats, merged.
    pub stats: ThreadStats,
    /// Length of the measured window (end of warm-up to the last thread's end).
    pub measured: Duration,
    /// Corrected latency per second of the measured window.
    pub intervals: Vec<Histogram<u64>>,
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
}

/// Runs `plan`. `progress` shows a live line on stdout.
pub fn run(plan: Plan, server_pid: Option<u32>, progress: bool) -> anyhow::Result<RunResult> {
    ensure_fd_limit(plan.connections)?;
    for t in &plan.targets {
        TcpStream::connect_timeout(t, Duration::from_secs(3)).map_err(|e| {
            anyhow::anyhow!(
                "cannot connect to {t}: {e} (is the server running and listening there?)"
            )
        })?;
    }
    if let Some(pid) = server_pid {
        pid_cpu_secs(pid).map_err(|e| {
            anyhow::anyhow!("--server-pid {pid}: cannot read /proc/{pid}/stat: {e}")
        })?;
    }
    let plan = Arc::new(plan);
    let start = now_ns();
    let warmup_end = start + plan.warmup.as_nanos() as u64;
    let shared = Arc::new(Shared {
        plan: plan.clone(),
        warmup_end,
        end: plan
            .requests
            .is_none()
            .then(|| warmup_end + plan.duration.as_nanos() as u64),
        stop: AtomicBool::new(false),
        progress: (0..plan.threads).map(|_| AtomicU64::new(0)).collect(),
    });
    let interval_ns = plan.rate.map(|rate| {
        // Each connection sends every connections/rate seconds.
        ((plan.connections as f64 / rate) * 1e9).max(1.0) as u64
    });
    let (tx, rx) = mpsc::channel::<Interval>();
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
            interval_ns,
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
    drop(tx);

    let mut intervals: Vec<Histogram<u64>> = Vec::new();
    let mut cpu_at_warmup: Option<(f64, Option<f64>)> = None;
    let mut last_progress = (start, 0u64);
    let mut next_progress = start + 1_000_000_000;
    loop {
        let now = now_ns();
        if cpu_at_warmup.is_none() && now >= warmup_end {
            cpu_at_warmup = Some((
                process_cpu_secs(),
                server_pid.and_then(|p| pid_cpu_secs(p).ok()),
            ));
        }
        let wake = if cpu_at_warmup.is_none() {
            warmup_end
        } else {
            next_progress
        };
        let wait = Duration::from_nanos(wake.saturating_sub(now).clamp(1_000_000, 200_000_000));
        match rx.recv_timeout(wait) {
            Ok(iv) => {
                let i = iv.index as usize;
                if intervals.len() <= i {
                    intervals.resize_with(i + 1, histogram);
                }
                let _ = intervals[i].add(&iv.hist);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let now = now_ns();
        if progress && now >= next_progress {
            next_progress = now + 1_000_000_000;
            let done: u64 = shared
                .progress
                .iter()
                .map(|p| p.load(Ordering::Relaxed))
                .sum();
            let rate = (done.saturating_sub(last_progress.1)) as f64
                / ((now - last_progress.0) as f64 / 1e9);
            last_progress = (now, done);
            let p99 = intervals
                .iter()
                .rev()
                .find(|h| !h.is_empty())
                .map(|h| format!("{:.1} µs", h.value_at_quantile(0.99) as f64 / 1e3))
                .unwrap_or_else(|| "-".into());
            let phase = if now < warmup_end {
                "warm-up"
            } else {
                "measuring"
            };
            let mut out = std::io::stdout();
            let _ = write!(
                out,
                "\r\x1b[K{phase} {:6.1} s  {:>10.0} req/s  p99 {p99}",
                (now - start) as f64 / 1e9,
                rate
            );
            let _ = out.flush();
        }
    }
    if progress {
        print!("\r\x1b[K");
    }
    let end_cpu = (
        process_cpu_secs(),
        server_pid.and_then(|p| pid_cpu_secs(p).ok()),
    );
    let (cpu0, server0) = cpu_at_warmup.unwrap_or((end_cpu.0, end_cpu.1));

    let mut stats = ThreadStats::new();
    let mut thread_errors = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(s)) => stats.merge(&s),
            Ok(Err(e)) => thread_errors.push(e),
            Err(_) => thread_errors.push("an event-loop thread panicked".into()),
        }
    }
    if thread_errors.len() == plan.threads {
        anyhow::bail!("the run failed: {}", thread_errors[0]);
    }
    let measured = Duration::from_nanos(stats.end_ns.saturating_sub(warmup_end).max(1));
    let started = SystemTime::now() - Duration::from_nanos(now_ns().saturating_sub(warmup_end));
    let plan = Arc::try_unwrap(plan).unwrap_or_else(|p| (*p).clone());
    Ok(RunResult {
        plan,
        stats,
        measured,
        intervals,
        started,
        loadgen_cpu: end_cpu.0 - cpu0,
        server_cpu: match (server0, end_cpu.1) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        },
        server_pid,
        thread_errors,
    })
}

/// Makes sure `connections` sockets fit under RLIMIT_NOFILE, raising the soft limit to the
/// hard one if needed.
fn ensure_fd_limit(connections: usize) -> anyhow::Result<()> {
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
    anyhow::bail!(
        "{connections} connections need {need} file descriptors but the limit is {} (hard {}): lower --connections to at most {} or raise the limit (ulimit -n)",
        lim.rlim_cur,
        lim.rlim_max,
        lim.rlim_max.saturating_sub(SPARE_FDS)
    )
}

/// True when a progress line makes sense.
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}
