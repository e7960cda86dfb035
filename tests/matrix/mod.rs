//! The engine matrix of the integration tests: `every_engine! { tests… }` declares the tests
//! it is given once per engine, in a module named after it (`uring`, `tokio_uring`,
//! `epoll`), where `ENGINE` is that engine (`ENGINE.name()` is its command-line name).

/// See the module documentation.
macro_rules! every_engine {
    ($($test:item)*) => {
        mod uring {
            #[allow(unused_imports)]
            use super::*;
            const ENGINE: ringd::EngineKind = ringd::EngineKind::Uring;
            $($test)*
        }
        mod tokio_uring {
            #[allow(unused_imports)]
            use super::*;
            const ENGINE: ringd::EngineKind = ringd::EngineKind::TokioUring;
            $($test)*
        }
        mod epoll {
            #[allow(unused_imports)]
            use super::*;
            const ENGINE: ringd::EngineKind = ringd::EngineKind::Epoll;
            $($test)*
        }
    };
}
