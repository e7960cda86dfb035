//! The `tokio-uring` engine: a tokio-uring runtime per worker. Accept, recv and send are
//! io_uring operations that take ownership of their buffer and hand it back with the
//! completion, so each connection reuses one receive buffer and one output buffer for its
//! whole life; echo sends the received buffer itself.
//!
//! A dropped tokio-uring future leaves its operation in flight, so nothing here is cancelled
//! by dropping: timeouts and the drain shut the socket down, which completes the pending
//! recv with EOF. Output is sent in full before the next recv, so a connection never holds
//! more than one read's worth of output.

use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::mpsc;

use tokio_uring::net::{TcpListener, TcpStream};
use tracing::{debug, Instrument};

use super::{reject, report_ready, AcceptBackoff, EngineKind, WorkerCtx};
use crate::connection::{
    Clock, CloseReason, Conn, Registry, Timeouts, Times, Tracked, WorkerStats,
};
use crate::error::Error;

/// Submission queue entries per worker ring.
const SQ_ENTRIES: u32 = 1024;

/// Runs one worker on a tokio-uring runtime.
pub fn run(ctx: WorkerCtx, ready: mpsc::Sender<Result<(), Error>>) -> io::Result<()> {
    // A completion queue four times the submission queue absorbs bursts from many
    // connections; COOP_TASKRUN avoids interrupting the worker for task work it will run at
    // its next wait anyway (the ring is only used from this thread).
    let built = tokio_uring::Runtime::new(
        tokio_uring::builder().entries(SQ_ENTRIES).uring_builder(
            tokio_uring::uring_builder()
                .setup_cqsize(SQ_ENTRIES * 4)
                .setup_coop_taskrun(),
        ),
    );
    let Some(rt) = report_ready(&ready, ctx.id, EngineKind::TokioUring, built) else {
        return Ok(());
    };
    rt.block_on(serve(ctx))
}

/// The accept loop, then the drain.
async fn serve(ctx: WorkerCtx) -> io::Result<()> {
    let WorkerCtx {
        listener,
        config,
        mut drain,
        stats,
        limit,
        ..
    } = ctx;
    let listener = TcpListener::from_std(listener);
    let registry: Rc<Registry<TcpStream>> = Rc::default();
    let clock = Rc::new(Clock::default());
    let http = config.protocol.kind == crate::ProtocolKind::Http;
    let timeouts = Timeouts::new(config.idle_timeout, config.header_timeout, http);
    if let Some(every) = timeouts.sweep_every() {
        let (registry, clock) = (registry.clone(), clock.clone());
        tokio_uring::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let now = clock.advance();
                registry.sweep(now, &timeouts, |c, why| {
                    super::end_timed_out(c.io.as_raw_fd(), why)
                });
            }
        });
    }
    let mut backoff = AcceptBackoff::default();
    let mut draining = false;
    let mut accept = Box::pin(listener.accept());
    loop {
        let accepted = tokio::select! {
            biased;
            state = crate::shutdown::stopping(&mut drain), if !draining => {
                draining = true;
                if state.keeps_listeners() {
                    // The socket is a successor's now; the accept in flight stays until the
                    // runtime cancels it on the way out.
                    break;
                }
                // Shutting the listener down fails the accept in flight on the ring
                // (EINVAL) instead of leaving it to take one more connection.
                super::shut(listener.as_raw_fd());
                continue;
            }
            r = &mut accept => r,
        };
        if draining {
            // Either the failed accept we provoked or a connection that raced it: not served.
            break;
        }
        accept = Box::pin(listener.accept());
        let (stream, peer) = match accepted {
            Ok(s) => {
                backoff.on_success();
                s
            }
            Err(e) => {
                if let Some(pause) = backoff.on_error(&e, &stats) {
                    tokio::time::sleep(pause).await;
                }
                continue;
            }
        };
        if !limit.try_admit() {
            reject(stream.as_raw_fd(), http, &stats);
            continue;
        }
        WorkerStats::inc(&stats.accepted);
        let tracked = Rc::new(Tracked {
            io: stream,
            times: Times::new(clock.now()),
        });
        let guard = registry.insert(tracked.clone());
        let conn = Conn::new(&config.protocol);
        let buffer_size = config.buffer_size;
        let (stats, limit, clock) = (stats.clone(), limit.clone(), clock.clone());
        tokio_uring::spawn(
            async move {
                let reason = match connection(&tracked, conn, buffer_size, &stats, &clock).await {
                    Ok(reason) => tracked.times.reason.get().unwrap_or(reason),
                    Err(e) => {
                        debug!("connection error: {e}");
                        tracked.times.reason.get().unwrap_or(CloseReason::Error)
                    }
                };
                drop(guard);
                drop(tracked);
                stats.close(reason);
                limit.release();
            }
            .instrument(tracing::debug_span!("conn", %peer)),
        );
    }
    drop(accept);
    drop(listener);
    // A recv waiting on an idle connection completes with EOF once the read side is shut;
    // a connection in the middle of a request finishes it first.
    registry.for_each(|c| {
        c.times.reason.set(Some(CloseReason::Drain));
        let _ = c.io.shutdown(Shutdown::Read);
    });
    registry.wait_empty().await;
    Ok(())
}

/// Serves one connection until the peer or the protocol closes it; returns why it closed.
async fn connection(
    c: &Tracked<TcpStream>,
    mut conn: Conn,
    buffer_size: usize,
    stats: &WorkerStats,
    clock: &Clock,
) -> io::Result<CloseReason> {
    let stream = &c.io;
    let mut buf = Vec::with_capacity(buffer_size);
    loop {
        buf.clear();
        let (res, b) = stream.read(buf).await;
        buf = b;
        let n = res?;
        if n == 0 {
            conn.on_eof();
            flush(stream, &mut conn, stats).await?;
            return Ok(CloseReason::Peer);
        }
        WorkerStats::add(&stats.bytes_in, n as u64);
        if conn.is_echo() {
            c.times.touch(clock.now(), false);
            WorkerStats::add(&stats.bytes_out, n as u64);
            let (res, b) = stream.write_all(buf).await;
            buf = b;
            res?;
            continue;
        }
        let fed = conn.on_bytes(&buf[..n]);
        c.times.touch(clock.now(), conn.awaiting_header());
        WorkerStats::add(&stats.requests, fed.answered);
        flush(stream, &mut conn, stats).await?;
        if fed.close {
            return Ok(CloseReason::Protocol);
        }
    }
}

/// Sends the connection's pending output and gives the buffer back to it, emptied.
async fn flush(stream: &TcpStream, conn: &mut Conn, stats: &WorkerStats) -> io::Result<()> {
    if conn.out.is_empty() {
        return Ok(());
    }
    WorkerStats::add(&stats.bytes_out, conn.out.len() as u64);
    let (res, mut out) = stream.write_all(std::mem::take(&mut conn.out)).await;
    out.clear();
    conn.out = out;
    res
}
