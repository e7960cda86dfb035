//! The cost of recording one latency sample, as loadgen does for every response: an
//! HdrHistogram from 1 ns to 1 h at 3 significant digits.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use hdrhistogram::Histogram;

fn record(c: &mut Criterion) {
    let mut g = c.benchmark_group("histogram");
    g.throughput(Throughput::Elements(1));
    g.bench_function("record", |b| {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        // Loopback-like latencies: tens to hundreds of microseconds, spread.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        b.iter(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            h.saturating_record(black_box(20_000 + x % 500_000));
        })
    });
    g.bench_function("merge-1s-interval", |b| {
        let mut a = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        let mut one = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        for v in 0..100_000u64 {
            one.saturating_record(20_000 + v * 7);
        }
        b.iter(|| a.add(black_box(&one)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
