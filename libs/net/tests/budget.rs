//! The socket-buffer budget costs nothing once it is spent: a listener
//! that cannot refill its ready sockets allocates no buffers while it
//! waits (it used to allocate and zero two buffers at every poll, only to
//! free them again, which took an eighth of a busy server's CPU).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use eremite_net::{Limits, Protocol};

/// Counts the allocations of at least [`LARGE`] bytes.
struct Counting;

const LARGE: usize = 32 << 10;
static LARGE_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to `System` unchanged; counting has no
// effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= LARGE {
            LARGE_ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: the caller's contract is `System::alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is `System::dealloc`'s.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn a_listener_past_the_budget_allocates_no_buffers_while_it_waits() {
    // Room for three sockets of 2 × 64 KiB; a listener wants more ready.
    let limits = Limits {
        buffer_budget_bytes: 3 * (128 << 10),
        tcp_buffer_bytes: 64 << 10,
        ..Limits::default()
    };
    let mut net = Net::pair_with(limits);
    let listener = net.b().socket(Protocol::Tcp).unwrap();
    net.b().bind(listener, addr(B_IP, 7000)).unwrap();
    net.b().listen(listener, 16).unwrap();
    net.poll();
    assert_eq!(
        net.b().stats().buffer_bytes,
        3 * (128 << 10),
        "budget spent"
    );
    let before = LARGE_ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..100 {
        net.poll();
    }
    assert_eq!(LARGE_ALLOCATIONS.load(Ordering::SeqCst), before);
}
