//! `policy-report`: the decision engine's numbers as a markdown table — compile time, memory held
//! by the compiled policy (counted by a wrapping allocator), and the median time of one decision
//! over 64 mixed samples — for policies of 10 to 100 000 rules. Run it in release.

use std::alloc::System;
use std::time::Instant;

use portcullis_benches::policy_gen::{decide, parsed, traffic};
use portcullis_config::{CompileContext, compile};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn main() {
    println!(
        "| rules | parse (ms) | compile (ms) | compiled policy (MiB) | decision median (ns) | decision p99 (ns) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for n in [10usize, 1_000, 10_000, 100_000] {
        let started = Instant::now();
        let docs = parsed(n);
        let parse_ms = started.elapsed().as_secs_f64() * 1e3;
        let region = Region::new(GLOBAL);
        let started = Instant::now();
        let (policy, _) = compile::compile(&docs, &CompileContext::default()).expect("compiles");
        let compile_ms = started.elapsed().as_secs_f64() * 1e3;
        let stats = region.change();
        let held = (stats.bytes_allocated as f64 - stats.bytes_deallocated as f64
            + stats.bytes_reallocated as f64)
            / (1024.0 * 1024.0);
        drop(docs);
        let samples = traffic(n);
        // Warm up, then time batches of 64 decisions.
        for s in &samples {
            std::hint::black_box(decide(&policy, s));
        }
        let mut per_decision: Vec<f64> = (0..2000)
            .map(|_| {
                let t = Instant::now();
                for s in &samples {
                    std::hint::black_box(decide(&policy, s));
                }
                t.elapsed().as_nanos() as f64 / samples.len() as f64
            })
            .collect();
        per_decision.sort_by(f64::total_cmp);
        let median = per_decision[per_decision.len() / 2];
        let p99 = per_decision[per_decision.len() * 99 / 100];
        println!("| {n} | {parse_ms:.1} | {compile_ms:.1} | {held:.2} | {median:.0} | {p99:.0} |");
    }
}
