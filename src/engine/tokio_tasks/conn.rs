//! The task of one connection: moves bytes for its [`Connection`] and sleeps on an
//! [`Alarm`] besides its read or write, in the call order the connection documents. Output
//! is written in full before the next read, so a connection holds at most one read's worth
//! of output (`--max-pending-output` is met by construction).

use std::future::Future;
use std::ops::Range;
use std::pin::pin;

use tracing::debug;

use super::registry::{Alarm, Entry, Registered};
use super::shared::Shared;
use super::stream::Stream;
use crate::access_log::Ended;
use crate::connection::{Action, Clock, Connection, Input, Limits, Phase, WorkerStats};

/// Serves one connection until it is closed; returns why.
pub(super) async fn connection<S: Stream>(
    sock: &S,
    conn: Connection,
    registered: &Registered,
    shared: &Shared,
) -> Ended {
    let mut task = Task {
        sock,
        conn,
        entry: registered.entry(),
        shared,
        buf: None,
        abandoned: false,
    };
    loop {
        wake(&mut task.conn, task.entry, &shared.clock, &shared.limits);
        match task.act().await {
            Acted::Closed => break,
            Acted::Yes => continue,
            Acted::No => {}
        }
        if task.conn.reading() {
            task.read().await;
        } else {
            // Nothing to read or send until the time or the drain changes something.
            task.entry.alarm.wait().await;
        }
    }
    if task.abandoned {
        task.sock.end_pending();
    }
    task.conn.count_tls(&shared.stats);
    let (bytes_in, bytes_out) = task.conn.bytes();
    Ended {
        reason: task.conn.close_reason(),
        bytes_in,
        bytes_out,
        upstream: None,
    }
}

/// One connection task's state.
struct Task<'a, S> {
    sock: &'a S,
    conn: Connection,
    entry: &'a Entry,
    shared: &'a Shared,
    /// The read buffer, between reads.
    buf: Option<Vec<u8>>,
    /// An operation was left in flight (a read abandoned when the connection stopped
    /// reading, or a write when it was aborted).
    abandoned: bool,
}

/// What [`Task::act`] did.
enum Acted {
    /// The connection is closed.
    Closed,
    /// Sent output or the FIN.
    Yes,
    /// Nothing to do but read or wait.
    No,
}

impl<S: Stream> Task<'_, S> {
    /// Carries out the connection's next action.
    async fn act(&mut self) -> Acted {
        let (clock, limits) = (&self.shared.clock, &self.shared.limits);
        match self.conn.poll_action() {
            Some(Action::Close { reset }) => {
                if reset {
                    self.sock.reset();
                }
                return Acted::Closed;
            }
            Some(Action::Send { data, answered }) => {
                WorkerStats::add(&self.shared.stats.requests, answered);
                let len = data.len();
                match self.send(data, len).await {
                    Some(out) => self.conn.recycle(out),
                    None => self.abandoned = true,
                }
            }
            Some(Action::Fin) => match self.sock.shutdown_write() {
                Ok(()) => self.conn.handle_fin_sent(clock.now(), limits),
                Err(e) => {
                    debug!("shutdown failed: {e}");
                    self.conn.handle_error();
                }
            },
            None => return Acted::No,
        }
        Acted::Yes
    }

    /// Reads once (or until the connection stops wanting input) and hands what came to the
    /// connection; echo's input is sent back from the same buffer.
    async fn read(&mut self) {
        let (clock, limits, entry) = (&self.shared.clock, &self.shared.limits, self.entry);
        let phase = self.conn.phase();
        let b = self
            .buf
            .take()
            .unwrap_or_else(|| Vec::with_capacity(self.shared.buffer_size));
        let conn = &mut self.conn;
        let read = until_woken(self.sock.read(b), &entry.alarm, || {
            wake(conn, entry, clock, limits);
            // Stop waiting once there is something else to do; the read may be abandoned
            // then only because no input is wanted any more.
            conn.phase() != phase || conn.queued() > 0
        });
        let Some((res, b)) = read.await else {
            self.abandoned = true;
            return;
        };
        let n = match res {
            Ok(0) => {
                self.conn.handle_eof();
                self.buf = Some(b);
                return;
            }
            Ok(n) => n,
            Err(e) => {
                debug!("read failed: {e}");
                return self.conn.handle_error();
            }
        };
        WorkerStats::add(&self.shared.stats.bytes_in, n as u64);
        match self.conn.handle_input(clock.now(), &b[..n], limits) {
            Input::Echo => match self.send(b, n).await {
                Some(b) => self.buf = Some(b),
                None => self.abandoned = true,
            },
            Input::Consumed | Input::Dropped => self.buf = Some(b),
        }
    }

    /// Writes `buf[..len]` in full (see [`send`]).
    async fn send(&mut self, buf: Vec<u8>, len: usize) -> Option<Vec<u8>> {
        send(
            self.sock,
            buf,
            0..len,
            &mut self.conn,
            self.entry,
            self.shared,
        )
        .await
    }
}

/// Writes `buf[range]` in full, waking the connection when its alarm rings; `None` when the
/// connection was aborted meanwhile (the buffer stays with the abandoned write).
async fn send<S: Stream>(
    sock: &S,
    mut buf: Vec<u8>,
    range: Range<usize>,
    conn: &mut Connection,
    entry: &Entry,
    shared: &Shared,
) -> Option<Vec<u8>> {
    let (clock, limits) = (&shared.clock, &shared.limits);
    let mut pos = range.start;
    while pos < range.end {
        publish(conn, entry, limits);
        let write = until_woken(sock.write(buf, pos..range.end), &entry.alarm, || {
            wake(conn, entry, clock, limits);
            conn.phase() == Phase::Closed
        });
        let (res, b) = write.await?;
        buf = b;
        match res {
            Ok(0) => {
                conn.handle_error();
                return Some(buf);
            }
            Ok(n) => {
                pos += n;
                WorkerStats::add(&shared.stats.bytes_out, n as u64);
                conn.handle_sent(clock.now(), n, limits);
            }
            Err(e) => {
                debug!("write failed: {e}");
                conn.handle_error();
                return Some(buf);
            }
        }
    }
    Some(buf)
}

/// Tells the connection what changed while it waited (the drain, a deadline that passed),
/// then publishes its next deadline. Called at every turn of the task's loops and on every
/// ring of its alarm, so the deadline the ticker watches is always the connection's own: a
/// drain that begins during a read sets the grace's deadline, which no other call would
/// publish before the read ends.
fn wake(conn: &mut Connection, entry: &Entry, clock: &Clock, limits: &Limits) {
    let now = clock.now();
    if entry.drain.get() {
        conn.handle_drain(now);
    }
    if conn.poll_timeout(limits).is_some_and(|d| d <= now) {
        conn.handle_timeout(now, limits);
    }
    publish(conn, entry, limits);
}

/// Publishes the connection's next deadline for the ticker.
fn publish(conn: &Connection, entry: &Entry, limits: &Limits) {
    entry.set_deadline(conn.poll_timeout(limits));
}

/// Runs `op` to completion, calling `woken` each time `alarm` rings; stops early (`None`,
/// dropping `op`) when `woken` says so.
async fn until_woken<F: Future>(
    op: F,
    alarm: &Alarm,
    mut woken: impl FnMut() -> bool,
) -> Option<F::Output> {
    let mut op = pin!(op);
    loop {
        tokio::select! {
            biased;
            out = op.as_mut() => return Some(out),
            () = alarm.wait() => {
                if woken() {
                    return None;
                }
            }
        }
    }
}
