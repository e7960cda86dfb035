//! A worker thread's life around its engine: pin to its CPU, run the engine's event loop,
//! and report how it ended to the server (see [`crate::process::server`]), a panic included. A worker
//! that panics is a failure the server sees and answers by draining the others, never a core
//! that silently stops serving.

use std::any::Any;
use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{mpsc, Once};

use tracing::error;

use crate::config::TestFault;
use crate::engine::{self, WorkerCtx};
use crate::error::Error;

/// Thread names of workers start with this.
pub(crate) const THREAD_PREFIX: &str = "ringd-w";

/// How a worker ended: its id and, if it failed, why (e.g. `panicked at src/x.rs:1:2: …`).
pub(crate) type Done = (usize, Result<(), String>);

thread_local! {
    /// Where and why this thread last panicked, recorded by the panic hook.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs worker `ctx.id` to its end and reports it on `done`.
pub(crate) fn main(
    ctx: WorkerCtx,
    cpu: Option<usize>,
    ready: mpsc::Sender<Result<(), Error>>,
    fault: Option<TestFault>,
    done: mpsc::Sender<Done>,
) {
    let id = ctx.id;
    let _span = tracing::info_span!("worker", id).entered();
    if let Some(cpu) = cpu {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
            tracing::warn!("could not pin to CPU {cpu}; running unpinned");
        }
    }
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| match fault {
        None => engine::run(ctx, ready).map_err(|e| format!("stopped: {e}")),
        Some(fault) => inject(ctx, ready, fault),
    }));
    let result = match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            error!("worker {id} {e}");
            Err(e)
        }
        Err(payload) => Err(LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| format!("panicked: {}", message(&*payload)))),
    };
    let _ = done.send((id, result));
}

/// What a test fault does in place of the engine.
fn inject(
    ctx: WorkerCtx,
    ready: mpsc::Sender<Result<(), Error>>,
    fault: TestFault,
) -> Result<(), String> {
    match fault {
        TestFault::Panic { after, .. } => {
            let _ = ready.send(Ok(()));
            std::thread::sleep(after);
            drop(ctx);
            panic!("injected by {}", TestFault::VAR);
        }
        TestFault::FailStart { .. } => {
            let _ = ready.send(Err(Error::Runtime {
                worker: ctx.id,
                engine: ctx.config.engine.name(),
                err: std::io::Error::other(format!("injected by {}", TestFault::VAR)),
            }));
            Ok(())
        }
    }
}

/// The text of a panic payload.
fn message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

/// Installs (once) a panic hook that turns a worker thread's panic into one log line and
/// records where it happened for the worker's report; other threads keep the previous hook.
pub(crate) fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            if !thread.name().is_some_and(|n| n.starts_with(THREAD_PREFIX)) {
                return previous(info);
            }
            let at = info
                .location()
                .map_or(String::new(), |l| format!(" at {}:{}", l.file(), l.line()));
            let what = format!("panicked{at}: {}", message(info.payload()));
            // A panic inside a connection task of a tokio engine is caught by the runtime and
            // does not end the worker: this line is all that reports it.
            error!("{what}");
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(what));
        }));
    });
}
