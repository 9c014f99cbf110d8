//! Random numbers for the ABIs (`getrandom`, std's `HashMap` keys) and for
//! the kernel itself (TCP initial sequence numbers, the card's MAC).
//!
//! The source is the CPU's RDRAND when it has a working one (checked per
//! value, see [`arch::rdrand64`]). A CPU without RDRAND (Intel before Ivy
//! Bridge, AMD before family 15h; a QEMU CPU model without it) gets a
//! SplitMix64 stream seeded from the TSC at its first use: unpredictable
//! enough for hash seeds and sequence numbers, **not** cryptographic,
//! which the kernel log says once. ABI-neutral.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch;
use crate::console::klog;

/// The fallback stream's state; 0 until its first use.
static FALLBACK: AtomicU64 = AtomicU64::new(0);

/// SplitMix64's increment (Steele, Lea, Flood: "Fast splittable
/// pseudorandom number generators", OOPSLA 2014).
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// One value of the fallback stream.
fn fallback() -> u64 {
    let is_first = FALLBACK
        .compare_exchange(0, arch::rdtsc() | 1, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok();
    if is_first {
        klog!(
            "eremite kernel: this CPU has no working RDRAND; random numbers are not cryptographic"
        );
    }
    let mut z = FALLBACK
        .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
        .wrapping_add(GOLDEN_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One random 64-bit value.
pub(crate) fn next_u64() -> u64 {
    arch::rdrand64().unwrap_or_else(fallback)
}

/// Fill `buf` with random bytes.
pub(crate) fn fill(buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        chunk.copy_from_slice(&next_u64().to_ne_bytes()[..chunk.len()]);
    }
}
