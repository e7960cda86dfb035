//! What the two tokio-based engines (`tokio-uring` and `epoll`) share: the accept loop, the
//! connection tasks ([`conn`], [`proxy`]) and the ticker. The worker's ticker advances the
//! clock and rings the alarms of connections whose deadline passed, and the drain rings them
//! all. The engines differ only in [`Listener`] and [`Stream`]: how a socket accepts, reads
//! and writes.

mod conn;
mod proxy;
mod registry;
mod shared;
mod stream;

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;

use tracing::Instrument;

use super::WorkerEnv;
use crate::access_log::{Ended, Record};
use crate::config::live::LiveView;
use crate::config::Service;
use crate::connection::{CloseReason, Connection, Millis, WorkerStats};
use crate::engine::admission::AcceptBackoff;
use crate::engine::control;
pub(crate) use shared::Shared;
pub(crate) use stream::{Listener, Stream};

/// The accept loop, then the drain. Runs inside a `LocalSet` (tokio-uring's `block_on` is
/// one).
pub(crate) async fn serve<L: Listener>(listener: L, env: WorkerEnv) -> io::Result<()> {
    let WorkerEnv {
        id,
        config,
        mut live,
        mut drain,
        stats,
        limit,
        access_log,
        ..
    } = env;
    let mut shared = Rc::new(Shared {
        service: config.service.clone(),
        rejection: config.service.rejection(),
        // Workers start their round-robin at different upstreams.
        cursor: Cell::new(id),
        clock: Rc::default(),
        limits: config.limits(),
        buffer_size: config.buffer_size,
        registry: Rc::default(),
        access_log,
        worker: id,
        stats,
        limit,
    });
    let ticker = tokio::task::spawn_local({
        let shared = shared.clone();
        async move {
            let mut tick = tokio::time::interval(shared.limits.tick());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = shared.clock.advance();
                shared.registry.ring_due(now);
            }
        }
    });
    accept_until_stopped(&listener, &mut shared, &mut drain, &mut live).await;
    drop(listener);
    shared.registry.drain();
    shared.registry.wait_empty().await;
    ticker.abort();
    Ok(())
}

/// Accepts connections until the server stops.
async fn accept_until_stopped<L: Listener>(
    listener: &L,
    shared: &mut Rc<Shared>,
    drain: &mut control::Watch,
    live: &mut LiveView,
) {
    let mut backoff = AcceptBackoff::default();
    let mut accept = pin!(listener.accept());
    loop {
        let accepted = tokio::select! {
            biased;
            how = control::stopping(drain) => {
                // Poll the accept once, so that it is in flight (or done) before the stop.
                let polled = std::future::poll_fn(|cx| Poll::Ready(accept.as_mut().poll(cx)));
                let raced = match polled.await {
                    Poll::Ready(r) => Some(r),
                    // One more connection may race the stop: serve it, never drop it.
                    Poll::Pending => {
                        let mut stop = pin!(listener.stop(how));
                        let mut stopping = true;
                        loop {
                            tokio::select! {
                                biased;
                                r = accept.as_mut() => break Some(r),
                                keep = stop.as_mut(), if stopping => {
                                    stopping = false;
                                    if !keep {
                                        break None;
                                    }
                                }
                            }
                        }
                    }
                };
                if let Some(Ok((stream, peer))) = raced {
                    admit::<L>(shared, stream, peer);
                }
                drain.acknowledge();
                return;
            }
            r = accept.as_mut() => r,
        };
        accept.set(listener.accept());
        if let Some(c) = live.changed() {
            *shared = Rc::new(shared.reloaded(&c));
        }
        match accepted {
            Ok((stream, peer)) => {
                backoff.on_success();
                admit::<L>(shared, stream, peer);
            }
            Err(e) => {
                if let Some(pause) = backoff.on_error(&e, &shared.stats) {
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

/// Starts the task of an accepted connection: served, or (over `--max-connections`) told so
/// and closed.
fn admit<L: Listener>(shared: &Rc<Shared>, stream: L::Stream, peer: SocketAddr) {
    // The ticker's clock may be a tick old: a deadline counted from it would come early.
    let now = shared.clock.advance();
    let conn = if shared.limit.try_admit() {
        WorkerStats::inc(&shared.stats.accepted);
        let spec = match &shared.service {
            Service::Protocol(spec) => spec,
            Service::Proxy(_) => {
                let registered = shared.registry.insert();
                let shared = shared.clone();
                tokio::task::spawn_local(
                    async move {
                        let end = Ending::new(&shared, true, peer, now, &stream);
                        let ended = proxy::relay::<L>(&stream, peer, &registered, &shared).await;
                        drop(registered);
                        drop(stream);
                        end.done(ended);
                    }
                    .instrument(tracing::debug_span!("proxy", %peer)),
                );
                return;
            }
        };
        Connection::new(spec, now)
    } else {
        WorkerStats::inc(&shared.stats.rejected);
        Connection::rejected(&shared.rejection, now)
    };
    let admitted = conn.close_reason() != CloseReason::Rejected;
    let registered = shared.registry.insert();
    let shared = shared.clone();
    tokio::task::spawn_local(
        async move {
            let end = Ending::new(&shared, admitted, peer, now, &stream);
            let ended = conn::connection(&stream, conn, &registered, &shared).await;
            drop(registered);
            drop(stream);
            end.done(ended);
        }
        .instrument(tracing::debug_span!("conn", %peer)),
    );
}

/// A connection task's end, counted exactly once, after its socket is closed: its close
/// reason, its place under `--max-connections` given back if it held one, and its line in
/// the access log (even when the task panics).
struct Ending<'a> {
    shared: &'a Shared,
    /// It holds a place.
    admitted: bool,
    /// Counted already.
    done: bool,
    /// The client.
    peer: SocketAddr,
    /// The address it connected to (read only when the access log is written).
    listener: SocketAddr,
    /// When it was accepted, by the worker's clock.
    opened: Millis,
}

impl<'a> Ending<'a> {
    fn new<S: Stream>(
        shared: &'a Shared,
        admitted: bool,
        peer: SocketAddr,
        opened: Millis,
        stream: &S,
    ) -> Self {
        let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
        let listener = match shared.access_log {
            Some(_) => stream.local_addr().unwrap_or(unknown),
            None => unknown,
        };
        Ending {
            shared,
            admitted,
            done: false,
            peer,
            listener,
            opened,
        }
    }

    /// The connection ended as `ended` says.
    fn done(mut self, ended: Ended) {
        self.finish(ended);
    }

    fn finish(&mut self, ended: Ended) {
        if self.done {
            return;
        }
        self.done = true;
        if self.admitted {
            self.shared.stats.close(ended.reason);
            self.shared.limit.release();
        }
        if let Some(log) = &self.shared.access_log {
            let duration = self.shared.clock.now().saturating_sub(self.opened);
            let (peer, listener, worker) = (self.peer, self.listener, self.shared.worker);
            log.log(Record::of(ended, peer, listener, worker, duration));
        }
    }
}

impl Drop for Ending<'_> {
    fn drop(&mut self) {
        // Only reached without `done` when the task panicked.
        self.finish(Ended::empty(CloseReason::Error));
    }
}
