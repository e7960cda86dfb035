//! `--engine auto`: the best engine this kernel allows.

use super::availability::check_io_uring;
use crate::config::{EngineKind, UringTuning};
use crate::error::Error;

/// `--engine auto`: the first engine of `uring`, `tokio-uring`, `epoll` that this kernel
/// allows, with the engine refused and why (`None`: `uring` runs). Uses the same checks that
/// make an engine named on the command line fail to start.
pub fn pick(tuning: &UringTuning) -> (EngineKind, Option<String>) {
    match check_io_uring() {
        Err(Error::IoUringUnavailable { reason }) => (
            EngineKind::Epoll,
            Some(format!(
                "uring and tokio-uring refused: io_uring is unavailable: {reason}"
            )),
        ),
        Err(e) => (
            EngineKind::Epoll,
            Some(format!("uring and tokio-uring refused: {e}")),
        ),
        Ok(()) => match super::uring::check_features(tuning) {
            Ok(()) => (EngineKind::Uring, None),
            Err(Error::UringFeature { missing, kernel }) => (
                EngineKind::TokioUring,
                Some(format!(
                    "uring refused: it needs {missing}, which this kernel ({kernel}) lacks"
                )),
            ),
            Err(e) => (EngineKind::TokioUring, Some(format!("uring refused: {e}"))),
        },
    }
}
