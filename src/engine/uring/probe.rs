//! What the `uring` engine needs from the kernel, checked before any worker starts (the
//! checks themselves are the ring driver's), and its answer in ringd's terms: a missing
//! piece is named in one line with the alternatives.

use ringd_ring::{Driver, Setup, SetupError};

use super::op::Op;
use crate::engine::availability::{explain, kernel_release};
use crate::error::Error;

/// Sets up a worker's ring (one ring set up at a time in the process).
pub fn build_driver(setup: Setup) -> Result<Driver<Op>, Error> {
    let _setup = crate::engine::availability::ring_setup_lock();
    Driver::new(setup).map_err(error)
}

/// Checks everything the engine needs, on a throwaway ring, including what `tuning` asks
/// for.
pub fn check(tuning: &crate::config::UringTuning) -> Result<(), Error> {
    let _setup = crate::engine::availability::ring_setup_lock();
    ringd_ring::setup::check(tuning.wait_batch > 1).map_err(error)
}

fn error(e: SetupError) -> Error {
    match e {
        SetupError::Missing(what) => missing(what),
        SetupError::Os(e) => explain(e),
    }
}

fn missing(what: &str) -> Error {
    Error::UringFeature {
        missing: what.to_string(),
        kernel: kernel_release(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_has_what_the_engine_needs() {
        check(&crate::config::UringTuning::default())
            .expect("the uring engine must be usable on the test hosts");
    }

    #[test]
    fn missing_feature_names_alternatives() {
        let e = missing("X").to_string();
        assert!(
            e.contains("X") && e.contains("--engine tokio-uring") && e.contains("--engine epoll"),
            "{e}"
        );
    }
}
