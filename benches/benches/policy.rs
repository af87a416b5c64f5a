//! Criterion benchmarks of the decision engine: one decision (connection phase, then request
//! phase when needed) and compilation, for policies of 10 to 100 000 rules.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use portcullis_benches::policy_gen::{compiled, decide, parsed, traffic};
use portcullis_config::{CompileContext, compile};

fn decisions(c: &mut Criterion) {
    let mut g = c.benchmark_group("decide");
    for n in [10, 1_000, 10_000, 100_000] {
        let policy = compiled(n);
        let samples = traffic(n);
        let mut k = 0;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                k = (k + 1) % samples.len();
                black_box(decide(&policy, &samples[k]))
            })
        });
    }
    g.finish();
}

fn compilation(c: &mut Criterion) {
    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    for n in [10, 1_000, 10_000] {
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                black_box(
                    compile::compile(&parsed(n), &CompileContext::default()).expect("compiles"),
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, decisions, compilation);
criterion_main!(benches);
