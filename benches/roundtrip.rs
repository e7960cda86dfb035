//! Loopback round trip per engine: an in-process ringd on 127.0.0.1:0 (one worker), one
//! client connection, 64 B echoed; the time per request includes both sides' system calls and
//! the kernel's loopback TCP path. Run pinned for steadier figures:
//! `taskset -c 0,1 cargo bench --bench roundtrip`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringd::{Config, EngineKind, ProtocolKind};

fn roundtrip(c: &mut Criterion) {
    let mut g = c.benchmark_group("roundtrip-64B");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3));
    for engine in EngineKind::ALL {
        let mut config = Config::new("127.0.0.1:0".parse().unwrap(), ProtocolKind::Echo, engine);
        config.threads = 1;
        let server = ringd::start(config).expect("ringd starts");
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        s.set_nodelay(true).unwrap();
        let msg = [0x5au8; 64];
        let mut back = [0u8; 64];
        g.bench_function(engine.name(), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    s.write_all(&msg).unwrap();
                    s.read_exact(&mut back).unwrap();
                }
                start.elapsed()
            })
        });
        drop(s);
        server.shutdown().expect("clean shutdown");
    }
    g.finish();
}

criterion_group!(benches, roundtrip);
criterion_main!(benches);
