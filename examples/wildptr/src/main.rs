//! Hands the kernel and the VMM bad pointers. Every call must fail with an
//! error code; nothing may crash, and the program exits 0 only if every
//! bad call was refused.

use eremite as _;
use eremite_interface::errno::{EFAULT, EINVAL};
use eremite_interface::hypercall::{ConsoleWrite, Port, Stream, encode_request_addr};

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

/// Make a hypercall directly, as a hostile guest could: `value` is what
/// the port write sends (the request's address divided by 8).
fn raw_hypercall(port: Port, value: u32) {
    // SAFETY: a port write only exits to the VMM, which must cope with
    // whatever address we pass.
    unsafe { core::arch::asm!("out dx, eax", in("dx") port as u16, in("eax") value) };
}

/// The port value for a request at `addr`.
fn encoded(addr: u64) -> u32 {
    encode_request_addr(addr).expect("an aligned address below 32 GiB")
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
    raw_hypercall(Port::ConsoleWrite, encoded((&raw mut request) as u64));
    ok &= check(
        "hypercall(buffer outside RAM)",
        std::hint::black_box(request.result),
        EFAULT.0,
    );
    // ...and survive requests that are themselves outside memory: the
    // highest address a port value names (32 GiB - 8), and one in the hole
    // between the RAM below 3 GiB and 4 GiB (there is nowhere to put an
    // answer: the VMM ignores them).
    raw_hypercall(Port::ConsoleWrite, u32::MAX);
    raw_hypercall(Port::ConsoleWrite, encoded(0xE000_0000));
    println!("hypercalls with bad request addresses: VMM survived");

    if ok {
        println!("all bad calls were refused");
    } else {
        println!("some bad calls were accepted");
        std::process::exit(1);
    }
}
