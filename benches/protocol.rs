//! Protocol parsing and encoding throughput (bytes/s), no I/O: what the sans-IO layer costs
//! per request, for each protocol.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringd::connection::{Action, Connection, Limits};
use ringd::protocol::{ProtocolKind, ProtocolSpec};

fn http(c: &mut Criterion) {
    let spec = ProtocolSpec::with_defaults(ProtocolKind::Http);
    let one = b"GET /plaintext HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: loadgen\r\nAccept: */*\r\n\r\n";
    let mut g = c.benchmark_group("http");
    for depth in [1usize, 16] {
        let input = one.repeat(depth);
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(format!("pipeline-{depth}"), |b| {
            let mut session = spec.session();
            let mut out = Vec::with_capacity(4096);
            b.iter(|| {
                out.clear();
                let o = session.on_input(black_box(&input), &mut out);
                black_box((o, out.len()))
            })
        });
    }
    // The same through the connection layer, split mid-request (the copy path).
    let limits = limits();
    let input = one.repeat(4);
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.bench_function("conn-split-reads", |b| {
        b.iter_batched_ref(
            || Connection::new(&spec, 1),
            |conn| {
                let (a, rest) = input.split_at(50);
                conn.handle_input(2, a, &limits);
                conn.handle_input(3, rest, &limits);
                black_box(conn.poll_action())
            },
            BatchSize::SmallInput,
        )
    });
    // One keep-alive request through the whole state machine, as an engine drives it:
    // input, output taken, sent, the next deadline.
    g.throughput(Throughput::Elements(1));
    g.bench_function("conn-request-cycle", |b| {
        let mut conn = Connection::new(&spec, 1);
        let mut now = 1;
        b.iter(|| {
            now += 1;
            conn.handle_input(now, black_box(one), &limits);
            let Some(Action::Send { data: out, .. }) = conn.poll_action() else {
                panic!("a response");
            };
            conn.handle_sent(now, out.len(), &limits);
            conn.recycle(out);
            black_box(conn.poll_timeout(&limits))
        })
    });
    g.finish();
}

/// The default limits.
fn limits() -> Limits {
    ringd::Config::new(
        "127.0.0.1:0".parse().expect("address"),
        ProtocolKind::Http,
        ringd::EngineKind::Uring,
    )
    .limits()
}

fn echo_and_hello(c: &mut Criterion) {
    let mut g = c.benchmark_group("echo");
    let spec = ProtocolSpec::with_defaults(ProtocolKind::Echo);
    for size in [64usize, 4096] {
        let input = vec![7u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("conn-{size}"), |b| {
            let limits = limits();
            let mut conn = Connection::new(&spec, 1);
            b.iter(|| {
                black_box(conn.handle_input(2, black_box(&input), &limits));
                conn.handle_sent(2, size, &limits);
            })
        });
        g.bench_function(format!("copy-{size}"), |b| {
            let mut session = spec.session();
            let mut out = Vec::with_capacity(size);
            b.iter(|| {
                out.clear();
                black_box(session.on_input(black_box(&input), &mut out))
            })
        });
    }
    g.finish();
    let spec = ProtocolSpec::with_defaults(ProtocolKind::Hello);
    let mut g = c.benchmark_group("hello");
    g.throughput(Throughput::Bytes(5));
    g.bench_function("greet", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            let o = spec.session().on_input(black_box(b"hello"), &mut out);
            black_box((o, out))
        })
    });
    g.finish();
}

criterion_group!(benches, http, echo_and_hello);
criterion_main!(benches);
