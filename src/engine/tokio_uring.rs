//! The `tokio-uring` engine: a tokio-uring runtime per worker. Accept, recv and send are
//! io_uring operations that take ownership of their buffer and hand it back with the
//! completion, so each connection reuses one receive buffer and one output buffer for its
//! whole life; echo sends the received buffer itself.

use std::io;
use std::net::Shutdown;
use std::rc::Rc;
use std::sync::mpsc;

use tokio_uring::net::{TcpListener, TcpStream};
use tracing::{debug, warn, Instrument};

use super::{accept_pause, report_ready, EngineKind, WorkerCtx};
use crate::connection::{Conn, Registry, WorkerStats};
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
        ..
    } = ctx;
    // A second handle on the same socket, to shut it down when draining: that fails the
    // accept in flight on the ring (EINVAL) instead of leaving it to take one more connection.
    let control = listener.try_clone()?;
    let listener = TcpListener::from_std(listener);
    let registry: Rc<Registry<TcpStream>> = Rc::default();
    let mut errors_in_a_row = 0u32;
    let mut draining = false;
    let mut accept = Box::pin(listener.accept());
    loop {
        let accepted = tokio::select! {
            biased;
            _ = drain.wait_for(|d| *d), if !draining => {
                draining = true;
                let _ = socket2::SockRef::from(&control).shutdown(Shutdown::Read);
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
                errors_in_a_row = 0;
                s
            }
            Err(e) => {
                WorkerStats::inc(&stats.accept_errors);
                if let Some(pause) = accept_pause(&e, errors_in_a_row) {
                    errors_in_a_row += 1;
                    warn!("accept failed: {e}; pausing accepts for {pause:?}");
                    tokio::time::sleep(pause).await;
                } else {
                    debug!("accept failed: {e}");
                }
                continue;
            }
        };
        WorkerStats::inc(&stats.accepted);
        let _ = stream.set_nodelay(true);
        let stream = Rc::new(stream);
        let guard = registry.insert(stream.clone());
        let conn = Conn::new(&config.protocol);
        let buffer_size = config.buffer_size;
        let stats = stats.clone();
        tokio_uring::spawn(
            async move {
                if let Err(e) = connection(&stream, conn, buffer_size).await {
                    debug!("connection error: {e}");
                }
                drop(guard);
                WorkerStats::inc(&stats.closed);
            }
            .instrument(tracing::debug_span!("conn", %peer)),
        );
    }
    drop(accept);
    drop(listener);
    // A recv waiting on an idle connection completes with EOF once the read side is shut;
    // a connection in the middle of a request finishes it first.
    registry.for_each(|s| {
        let _ = s.shutdown(Shutdown::Read);
    });
    registry.wait_empty().await;
    Ok(())
}

/// Serves one connection until the peer or the protocol closes it.
async fn connection(stream: &TcpStream, mut conn: Conn, buffer_size: usize) -> io::Result<()> {
    let mut buf = Vec::with_capacity(buffer_size);
    loop {
        buf.clear();
        let (res, b) = stream.read(buf).await;
        buf = b;
        let n = res?;
        if n == 0 {
            conn.on_eof();
            return flush(stream, &mut conn).await;
        }
        if conn.is_echo() {
            let (res, b) = stream.write_all(buf).await;
            buf = b;
            res?;
            continue;
        }
        let close = conn.on_bytes(&buf[..n]);
        flush(stream, &mut conn).await?;
        if close {
            return Ok(());
        }
    }
}

/// Sends the connection's pending output and gives the buffer back to it, emptied.
async fn flush(stream: &TcpStream, conn: &mut Conn) -> io::Result<()> {
    if conn.out.is_empty() {
        return Ok(());
    }
    let (res, mut out) = stream.write_all(std::mem::take(&mut conn.out)).await;
    out.clear();
    conn.out = out;
    res
}
