//! The `syscalls` group: the cost of common system calls in cycles, the
//! rows of the HermitCore/Linux comparison (Lankes et al., ROSS 2016).
//!
//! Rows: getpid, sched_yield, write of 1 byte to stderr (eremite buffers
//! it in the guest and forwards full buffers to the host; Linux makes one
//! system call per write), write of 1 byte to a file, open+close and stat
//! of a file (eremite: its in-kernel RAM file system under `/`; Linux: a
//! file in the temporary directory, in the page cache), malloc/free of
//! 64 B and 4 KiB, first write to a fresh page of the heap, clock_gettime
//! (`Instant::now`), thread spawn+join, and a round trip between two
//! threads on one core (each wakes the other and blocks: `unpark` then
//! `park`, a futex wake and wait on each side). Run with `--quick` for a
//! correctness pass.
//!
//! Memory-mapping rows: the first write to each page of a fresh anonymous
//! mapping, timed one page at a time (`page_first_write`; Linux: a page
//! fault per page), mmap+munmap of 1 MiB untouched and with one byte
//! written per page, and one mprotect of one page (the median of
//! read-only-then-back pairs, halved).
//!
//! `syscalls cross-core` measures the round trip with the two threads
//! on two different cores, and malloc+free of 64 B while a second
//! thread on the other core does the same (eremite: run with `--cpus 2`; the first
//! spawned thread goes to the second core; Linux: each thread pinned).

#[cfg(target_os = "hermit")]
use eremite as _;

use std::alloc::{Layout, alloc, dealloc};
use std::hint::black_box;
use std::io::Write;

use benchkit::{per_op, rdtsc, report, report_tsc};

fn main() {
    let quick = benchkit::is_quick();
    let (rounds, batch) = if quick { (20, 10) } else { (2000, 100) };
    report_tsc();
    if std::env::args().any(|a| a == "cross-core") {
        pin_to_core(0);
        report(
            "thread_pingpong",
            "cycles",
            &mut pingpong(if quick { 20 } else { 2000 }, Some(1)),
        );
        // eremite binds threads to cores round robin: the next one would
        // go to this core; a short-lived thread takes that turn.
        #[cfg(target_os = "hermit")]
        std::thread::spawn(|| ()).join().expect("join");
        report(
            "malloc_free_64_2threads",
            "cycles",
            &mut malloc_beside_a_partner(rounds, batch),
        );
        return;
    }

    report(
        "getpid",
        "cycles",
        &mut per_op(rounds, batch, || {
            black_box(getpid());
        }),
    );
    report(
        "sched_yield",
        "cycles",
        &mut per_op(rounds, batch, std::thread::yield_now),
    );
    let mut stderr = std::io::stderr().lock();
    report(
        "write_1_byte",
        "cycles",
        &mut per_op(rounds, batch, || {
            stderr.write_all(b".").expect("write to stderr");
        }),
    );
    drop(stderr);
    file_rows(rounds, batch);
    for size in [64, 4096] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        let name = format!("malloc_free_{size}");
        report(
            &name,
            "cycles",
            &mut per_op(rounds, batch, || {
                // SAFETY: a non-zero-sized layout; the block is freed at once.
                unsafe {
                    let p = black_box(alloc(layout));
                    assert!(!p.is_null());
                    dealloc(p, layout);
                }
            }),
        );
    }
    report(
        "first_touch_page",
        "cycles",
        &mut first_touch(if quick { 64 } else { 4096 }),
    );
    mapping_rows(rounds, batch, quick);
    report(
        "thread_spawn_join",
        "cycles",
        &mut per_op(rounds.min(200), 1, || {
            std::thread::spawn(|| black_box(1)).join().expect("join");
        }),
    );
    report(
        "thread_pingpong",
        "cycles",
        &mut pingpong(if quick { 20 } else { 2000 }, None),
    );
    report(
        "clock_gettime",
        "cycles",
        &mut per_op(rounds, batch, || {
            black_box(std::time::Instant::now());
        }),
    );
}

/// Writes, opens and stats of one file.
fn file_rows(rounds: usize, batch: usize) {
    let path = if cfg!(target_os = "hermit") {
        std::path::PathBuf::from("/bench-file")
    } else {
        std::env::temp_dir().join(format!("eremite-bench-{}", std::process::id()))
    };
    let mut file = std::fs::File::create(&path).expect("create the benchmark file");
    report(
        "file_write_1_byte",
        "cycles",
        &mut per_op(rounds, batch, || {
            file.write_all(b".").expect("write to the file");
        }),
    );
    drop(file);
    report(
        "file_open_close",
        "cycles",
        &mut per_op(rounds, batch, || {
            drop(black_box(std::fs::File::open(&path).expect("open")));
        }),
    );
    report(
        "file_stat",
        "cycles",
        &mut per_op(rounds, batch, || {
            black_box(std::fs::metadata(&path).expect("stat"));
        }),
    );
    std::fs::remove_file(&path).expect("remove the benchmark file");
}

/// Cycles per round trip between two threads that take turns: each sets
/// the shared turn to the other, unparks it and parks until its own turn
/// comes back. The partner runs on `partner_core` if given.
fn pingpong(rounds: usize, partner_core: Option<usize>) -> Vec<f64> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let turn = Arc::new(AtomicUsize::new(0));
    let main = std::thread::current();
    let partner = {
        let turn = turn.clone();
        std::thread::spawn(move || {
            if let Some(core) = partner_core {
                pin_to_core(core);
            }
            for _ in 0..rounds {
                while turn.load(Ordering::Acquire) != 1 {
                    std::thread::park();
                }
                turn.store(0, Ordering::Release);
                main.unpark();
            }
        })
    };
    let samples = (0..rounds)
        .map(|_| {
            let start = rdtsc();
            turn.store(1, Ordering::Release);
            partner.thread().unpark();
            while turn.load(Ordering::Acquire) != 0 {
                std::thread::park();
            }
            (rdtsc() - start) as f64
        })
        .collect();
    partner.join().expect("join the partner");
    samples
}

/// malloc+free of 64 B, timed on this thread while a partner thread on
/// the second core does the same without pause (two threads allocating
/// at once on two cores).
fn malloc_beside_a_partner(rounds: usize, batch: usize) -> Vec<f64> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Barrier};
    let layout = Layout::from_size_align(64, 8).unwrap();
    let malloc_free = move || {
        // SAFETY: a non-zero-sized layout; the block is freed at once.
        unsafe {
            let p = black_box(alloc(layout));
            assert!(!p.is_null());
            dealloc(p, layout);
        }
    };
    let start = Arc::new(Barrier::new(2));
    let stop = Arc::new(AtomicBool::new(false));
    let partner = {
        let (start, stop) = (start.clone(), stop.clone());
        std::thread::spawn(move || {
            pin_to_core(1);
            start.wait();
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..100 {
                    malloc_free();
                }
            }
        })
    };
    start.wait();
    let samples = per_op(rounds, batch, malloc_free);
    stop.store(true, Ordering::Relaxed);
    partner.join().expect("join the partner");
    samples
}

/// Keep the calling thread on `core`. Linux: `sched_setaffinity`; eremite
/// binds a thread to a core when it is spawned (round robin: the first
/// thread spawned goes to the second core), so there is nothing to do.
fn pin_to_core(core: usize) {
    #[cfg(not(target_os = "hermit"))]
    {
        unsafe extern "C" {
            /// glibc's `sched_setaffinity(2)`; pid 0 is the calling thread.
            fn sched_setaffinity(pid: i32, set_bytes: usize, set: *const u64) -> i32;
        }
        let set: u64 = 1 << core;
        // SAFETY: `set` is a valid 8-byte CPU set that outlives the call.
        let status = unsafe { sched_setaffinity(0, 8, &set) };
        assert_eq!(status, 0, "cannot pin a thread to core {core}");
    }
    #[cfg(target_os = "hermit")]
    let _ = core;
}

/// The process id straight from the OS: std's `process::id` panics on the
/// hermit target instead of asking the kernel.
fn getpid() -> u32 {
    #[cfg(target_os = "hermit")]
    unsafe extern "C" {
        /// hermit-abi's `getpid`, provided by the eremite kernel.
        fn sys_getpid() -> u32;
    }
    #[cfg(target_os = "hermit")]
    // SAFETY: takes no arguments and only returns a number.
    return unsafe { sys_getpid() };
    #[cfg(not(target_os = "hermit"))]
    unsafe extern "C" {
        /// glibc's `getpid`, a real system call since glibc 2.25.
        fn getpid() -> i32;
    }
    #[cfg(not(target_os = "hermit"))]
    // SAFETY: takes no arguments and only returns a number.
    return unsafe { getpid() } as u32;
}

/// Cycles for the first write to each page of a fresh allocation of
/// `pages` pages (Linux: a page fault per page; eremite: no guest fault,
/// the host maps the page on first touch).
fn first_touch(pages: usize) -> Vec<f64> {
    const PAGE: usize = 4096;
    let layout = Layout::from_size_align(pages * PAGE, PAGE).unwrap();
    // SAFETY: non-zero size; every write below stays inside the block,
    // which is freed at the end.
    unsafe {
        let base = alloc(layout);
        assert!(!base.is_null(), "out of memory");
        let samples = (0..pages)
            .map(|i| {
                let start = rdtsc();
                base.add(i * PAGE).write_volatile(1);
                (rdtsc() - start) as f64
            })
            .collect();
        dealloc(base, layout);
        samples
    }
}

/// The memory-mapping rows (see the module documentation).
fn mapping_rows(rounds: usize, batch: usize, quick: bool) {
    const PAGE: usize = 4096;
    const MIB: usize = 1 << 20;
    let pages = if quick { 64 } else { 4096 };
    let region = vm::map(pages * PAGE);
    let mut samples: Vec<f64> = (0..pages)
        .map(|i| {
            let page = region.wrapping_add(i * PAGE);
            let start = rdtsc();
            // SAFETY: inside the read-write mapping made above.
            unsafe { page.write_volatile(1) };
            (rdtsc() - start) as f64
        })
        .collect();
    // SAFETY: the region is not used again.
    unsafe { vm::unmap(region, pages * PAGE) };
    report("page_first_write", "cycles", &mut samples);

    report(
        "mmap_munmap_1mib",
        "cycles",
        &mut per_op(rounds.min(500), batch.min(10), || {
            let block = black_box(vm::map(MIB));
            // SAFETY: the block was never used.
            unsafe { vm::unmap(block, MIB) };
        }),
    );
    report(
        "mmap_touch_munmap_1mib",
        "cycles",
        &mut per_op(rounds.min(200), 1, || {
            let block = black_box(vm::map(MIB));
            for offset in (0..MIB).step_by(PAGE) {
                // SAFETY: inside the read-write block.
                unsafe { block.add(offset).write_volatile(1) };
            }
            // SAFETY: the block is not used again.
            unsafe { vm::unmap(block, MIB) };
        }),
    );

    let page = vm::map(PAGE);
    // SAFETY: inside the read-write page; populate it before timing.
    unsafe { page.write_volatile(1) };
    let mut samples = per_op(rounds, batch, || {
        // SAFETY: nothing touches the page while it is read-only.
        unsafe {
            vm::protect(page, PAGE, vm::PROT_READ);
            vm::protect(page, PAGE, vm::PROT_READ | vm::PROT_WRITE);
        }
    });
    for sample in &mut samples {
        *sample /= 2.0; // two calls a sample
    }
    // SAFETY: the page is not used again.
    unsafe { vm::unmap(page, PAGE) };
    report("mprotect_page", "cycles", &mut samples);
}

/// Anonymous memory straight from the OS: hermit-abi's `sys_mmap`,
/// `sys_munmap` and `sys_mprotect` on eremite; `mmap(2)`, `munmap(2)` and
/// `mprotect(2)` through `libc` on Linux. A failed call ends the program
/// (a benchmark that cannot measure prints no number).
mod vm {
    pub(crate) const PROT_READ: u32 = 1;
    pub(crate) const PROT_WRITE: u32 = 2;

    #[cfg(target_os = "hermit")]
    unsafe extern "C" {
        fn sys_mmap(size: usize, prot_flags: u32, ret: &mut *mut u8) -> i32;
        fn sys_munmap(ptr: *mut u8, size: usize) -> i32;
        fn sys_mprotect(ptr: *mut u8, size: usize, prot_flags: u32) -> i32;
    }

    fn check(what: &str, status: i32) {
        if status != 0 {
            eprintln!("benchmark: {what} failed ({status})");
            std::process::exit(1);
        }
    }

    /// `len` bytes of fresh read-write memory.
    pub(crate) fn map(len: usize) -> *mut u8 {
        #[cfg(target_os = "hermit")]
        {
            let mut ptr = std::ptr::null_mut();
            // SAFETY: the kernel only writes the address through `ret`.
            check("mmap", unsafe {
                sys_mmap(len, PROT_READ | PROT_WRITE, &mut ptr)
            });
            ptr
        }
        #[cfg(not(target_os = "hermit"))]
        {
            // SAFETY: a new private anonymous mapping touches no existing
            // memory.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            check("mmap", if ptr == libc::MAP_FAILED { -1 } else { 0 });
            ptr.cast()
        }
    }

    /// Unmap `len` bytes from `ptr`.
    ///
    /// # Safety
    /// The range came from [`map`] and nothing uses it afterwards.
    pub(crate) unsafe fn unmap(ptr: *mut u8, len: usize) {
        #[cfg(target_os = "hermit")]
        // SAFETY: the caller's contract.
        check("munmap", unsafe { sys_munmap(ptr, len) });
        #[cfg(not(target_os = "hermit"))]
        // SAFETY: the caller's contract.
        check("munmap", unsafe { libc::munmap(ptr.cast(), len) });
    }

    /// Give `len` bytes from `ptr` the protection `prot`.
    ///
    /// # Safety
    /// The range came from [`map`]; nothing accesses it in a way `prot`
    /// forbids.
    pub(crate) unsafe fn protect(ptr: *mut u8, len: usize, prot: u32) {
        #[cfg(target_os = "hermit")]
        // SAFETY: the caller's contract.
        check("mprotect", unsafe { sys_mprotect(ptr, len, prot) });
        #[cfg(not(target_os = "hermit"))]
        // SAFETY: the caller's contract; PROT_* have the same values.
        check("mprotect", unsafe {
            libc::mprotect(ptr.cast(), len, prot as i32)
        });
    }
}
