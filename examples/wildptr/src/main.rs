//! Hands the kernel and the VMM bad pointers. Every call must fail with an
//! error code; nothing may crash, and the program exits 0 only if every
//! bad call was refused.

use eremite as _;
use eremite_interface::errno::{EFAULT, EINVAL};
use eremite_interface::hypercall::{ConsoleWrite, Port, Stream};

unsafe extern "C" {
    fn sys_write(fd: i32, buf: *const u8, len: usize) -> isize;
    fn sys_read_entropy(buf: *mut u8, len: usize, flags: u32) -> isize;
    fn sys_clock_gettime(clock: i32, tp: *mut u8) -> i32;
    fn sys_futex_wait(addr: *mut u32, expected: u32, timeout: *const u8, flags: u32) -> i32;
}

/// An address far outside guest RAM.
const WILD: usize = 0xdead_beef_0000;

fn check(what: &str, got: i64, want: i32) -> bool {
    let ok = got == -i64::from(want);
    println!(
        "{what}: {got} ({})",
        if ok { "refused as expected" } else { "WRONG" }
    );
    ok
}

/// Make a hypercall directly, as a hostile guest could.
fn raw_hypercall(port: Port, request_addr: u32) {
    // SAFETY: a port write only exits to the VMM, which must cope with
    // whatever address we pass.
    unsafe { core::arch::asm!("out dx, eax", in("dx") port as u16, in("eax") request_addr) };
}

fn main() {
    let text = b"never printed\n";
    let mut ok = true;
    // SAFETY (all calls below): the kernel must validate these pointers;
    // that is the point of this program.
    unsafe {
        ok &= check(
            "write(wild pointer)",
            sys_write(1, WILD as *const u8, 16) as i64,
            EFAULT.0,
        );
        ok &= check(
            "write(null)",
            sys_write(1, std::ptr::null(), 5) as i64,
            EFAULT.0,
        );
        ok &= check(
            "write(length wraps)",
            sys_write(1, text.as_ptr(), usize::MAX) as i64,
            EFAULT.0,
        );
        ok &= check(
            "read_entropy(wild)",
            sys_read_entropy(WILD as *mut u8, 8, 0) as i64,
            EFAULT.0,
        );
        ok &= check(
            "clock_gettime(wild)",
            i64::from(sys_clock_gettime(4, WILD as *mut u8)),
            EFAULT.0,
        );
        ok &= check(
            "futex_wait(wild)",
            i64::from(sys_futex_wait(WILD as *mut u32, 0, std::ptr::null(), 0)),
            EINVAL.0,
        );
    }

    // The VMM must refuse a console buffer outside guest memory...
    let mut request = ConsoleWrite {
        stream: Stream::Stdout as u32,
        reserved: 0,
        buf: WILD as u64,
        len: 64,
        result: 0,
    };
    raw_hypercall(Port::ConsoleWrite, (&raw mut request) as u32);
    ok &= check(
        "hypercall(buffer outside RAM)",
        std::hint::black_box(request.result),
        EFAULT.0,
    );
    // ...and survive requests that are themselves outside memory or
    // misaligned (there is nowhere to put an answer: the VMM ignores them).
    raw_hypercall(Port::ConsoleWrite, 0xffff_fff8);
    raw_hypercall(Port::ConsoleWrite, (&raw mut request) as u32 + 1);
    println!("hypercalls with bad request addresses: VMM survived");

    if ok {
        println!("all bad calls were refused");
    } else {
        println!("some bad calls were accepted");
        std::process::exit(1);
    }
}
