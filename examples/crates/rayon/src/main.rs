//! `rayon` on eremite: a small use of it that prints `ok rayon`.
#[cfg(target_os = "hermit")]
use eremite as _;
use rayon::prelude::*;
fn main() {
    let mut v: Vec<u64> = (0..1_000_000).rev().collect();
    v.par_sort_unstable();
    let sum: u64 = v.par_iter().map(|x| x * 2).sum();
    assert_eq!(sum, 999_999_000_000);
    println!("ok rayon {} threads", rayon::current_num_threads());
}
