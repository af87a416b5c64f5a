//! Shared pieces of the benchmarks: a generator of realistic mixed policies of any size and of
//! traffic that hits and misses their rules.

pub mod load;
pub mod policy_gen;
