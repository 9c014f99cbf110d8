//! A hostile guest, for `./x test`: it does what a guest that took over
//! its own kernel could, a bounded number of times, and the VMM must stay
//! up, keep its memory bounded and change nothing outside the mounts.
//!
//! `hostile ROUNDS [SEED] [--mmio]`: each round makes port I/O on every hypercall
//! port but `Exit` and `StartCpu` (which would end the run or start a
//! vCPU at a random address: the guest's loss, not the VMM's) with a
//! random width (1, 2 or 4 bytes, out and in) and a random value, most
//! often the address of a request it filled with random bytes or, for
//! `HostFs`, with random operations, mounts, handles and paths made of
//! `a`, `/`, `.` and NUL; and, with `--mmio` (give the VM a card), writes
//! random values of random widths to its virtio-MMIO registers, then reads
//! some. It prints what it did, waits two seconds (the test looks at the
//! VMM then) and exits 0.

use eremite as _;
use eremite_interface::hypercall::{ConsoleWrite, HostFs, Populate, Port, encode_request_addr};
use eremite_interface::layout::VIRTIO_MMIO_ADDR;

/// Where requests, paths and buffers are made: 64 KiB, page aligned.
#[repr(C, align(4096))]
struct Arena([u8; 1 << 16]);

/// xorshift64*: a fast generator, good enough for garbage.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Port I/O of `width` bytes on `port`.
fn port_io(port: u16, width: u64, value: u32, is_in: bool) {
    // SAFETY: a port access only exits to the VMM (the hypercall ports
    // are the ones the I/O bitmap opens), which must cope with whatever
    // it is given; an `in` changes only the register.
    unsafe {
        match (width, is_in) {
            (1, false) => core::arch::asm!("out dx, al", in("dx") port, in("al") value as u8),
            (2, false) => core::arch::asm!("out dx, ax", in("dx") port, in("ax") value as u16),
            (_, false) => core::arch::asm!("out dx, eax", in("dx") port, in("eax") value),
            (1, true) => core::arch::asm!("in al, dx", in("dx") port, out("al") _),
            (2, true) => core::arch::asm!("in ax, dx", in("dx") port, out("ax") _),
            (_, true) => core::arch::asm!("in eax, dx", in("dx") port, out("eax") _),
        }
    }
}

/// A random address: mostly inside the arena, sometimes anywhere.
fn address(rng: &mut Rng, arena: u64) -> u64 {
    match rng.below(8) {
        0 => rng.next(),
        1 => rng.below(1 << 32),
        _ => arena + rng.below(1 << 16),
    }
}

/// A `HostFs` request with random fields, and a path of plausible bytes.
fn host_fs(rng: &mut Rng, arena: &mut [u8], base: u64) -> HostFs {
    let path_at = 8192 + rng.below(4096) as usize;
    let path_len = rng.below(64) as usize;
    for byte in &mut arena[path_at..path_at + path_len] {
        *byte = b"ab/.ab/.ab/.ab/.ab/\0"[rng.below(20) as usize];
    }
    let small = |rng: &mut Rng, n| {
        if rng.below(8) == 0 {
            rng.next()
        } else {
            rng.below(n)
        }
    };
    HostFs {
        op: small(rng, 21) as u32,
        mount: small(rng, 3) as u32,
        handle: small(rng, 16),
        path: if rng.below(8) == 0 {
            address(rng, base)
        } else {
            base + path_at as u64
        },
        path_len: small(rng, path_len as u64 + 1),
        path2: base + 8192 + rng.below(4096),
        path2_len: small(rng, 64),
        buf: if rng.below(8) == 0 {
            address(rng, base)
        } else {
            base + 16384
        },
        buf_len: small(rng, 32768),
        offset: small(rng, 1 << 20),
        flags: rng.next() as u32,
        mode: rng.next() as u32,
        result: 0,
    }
}

/// Copy `value`'s bytes to `arena[at..]`.
fn put<T>(arena: &mut [u8], at: usize, value: &T) {
    // SAFETY: `T` is one of the interface's plain `repr(C)` request
    // structs, so its bytes may be read; the slice was checked to hold
    // them.
    let bytes =
        unsafe { core::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) };
    arena[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Garbage to the first card's registers: random offsets, widths and
/// values, then a few reads.
fn mmio(rng: &mut Rng) {
    let base = VIRTIO_MMIO_ADDR as usize;
    for _ in 0..4 {
        let offset = rng.below(0x200) as usize;
        let value = rng.next();
        // SAFETY: the VMM maps the card's register window here,
        // CPL3-accessible (`layout::VIRTIO_MMIO_ADDR`); an access exits to
        // the VMM, which must cope with any value at any offset and width.
        unsafe {
            match rng.below(4) {
                0 => core::ptr::write_volatile((base + offset) as *mut u8, value as u8),
                1 => core::ptr::write_volatile((base + (offset & !1)) as *mut u16, value as u16),
                2 => core::ptr::write_volatile((base + (offset & !3)) as *mut u32, value as u32),
                _ => {
                    let _ = core::ptr::read_volatile((base + (offset & !3)) as *const u32);
                }
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let seed: u64 = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    let has_card = args.iter().any(|a| a == "--mmio");
    let mut rng = Rng(seed | 1);
    // The VMM writes into it only during the port accesses below, which
    // the compiler sees as opaque (`asm!`).
    let mut boxed = Box::new(Arena([0; 1 << 16]));
    let arena = &mut boxed.0;
    let base = arena.as_ptr() as u64;
    let ports = [Port::ConsoleWrite, Port::HostFs, Port::Populate];
    let (mut accesses, mut host_fs_requests, mut mmio_rounds) = (0u64, 0u64, 0u64);
    for _ in 0..rounds {
        for byte in arena[..4096].iter_mut() {
            *byte = rng.next() as u8;
        }
        let port = ports[rng.below(ports.len() as u64) as usize];
        let at = (rng.below(4096 / 8) * 8) as usize & !63;
        match port {
            Port::HostFs if rng.below(4) != 0 => {
                let request = host_fs(&mut rng, arena, base);
                put(arena, at, &request);
                host_fs_requests += 1;
            }
            Port::ConsoleWrite if rng.below(2) == 0 => put(
                arena,
                at,
                &ConsoleWrite {
                    stream: rng.below(4) as u32,
                    reserved: 0,
                    buf: address(&mut rng, base),
                    len: rng.below(64),
                    result: 0,
                },
            ),
            Port::Populate if rng.below(2) == 0 => put(
                arena,
                at,
                &Populate {
                    addr: address(&mut rng, base) & !0xfff,
                    len: rng.below(1 << 24) & !0xfff,
                    result: 0,
                },
            ),
            // The random bytes already there.
            _ => {}
        }
        let value = match rng.below(8) {
            0 => rng.next() as u32,
            _ => encode_request_addr(base + at as u64).unwrap_or(0),
        };
        let width = [1, 2, 4, 4, 4, 4][rng.below(6) as usize];
        port_io(port as u16, width, value, rng.below(8) == 0);
        accesses += 1;
        if has_card {
            mmio(&mut rng);
            mmio_rounds += 1;
        }
    }
    println!(
        "hostile: {rounds} rounds, {accesses} port accesses, {host_fs_requests} HostFs requests, {mmio_rounds} rounds of MMIO garbage: done"
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
}
