//! Memory management seen from the application: anonymous mappings
//! (`sys_mmap`, `sys_munmap`, `sys_mprotect`), the heap running out, stack
//! guards, W^X for the image and the heap, and the supervisor's pages.
//! The first argument picks what to do:
//!
//! ```text
//! zeroed [MIB] [STRIDE] [ROUNDS]   (32 1 3) map MIB MiB, check every STRIDE-th page reads as
//!                                  zero, write a pattern per page, read it back, unmap;
//!                                  ROUNDS times, dirtying the heap in between
//! patterns                         a big Vec and several mappings keep their patterns;
//!                                  mprotect and partial munmap keep contents; bad
//!                                  arguments get EINVAL, EACCES or ENOMEM
//! munmap-then-read [other-thread]  read a page after unmapping it (dies: page fault)
//! mprotect-then-write [other-thread]  write a page made read-only (dies: page fault)
//! overflow-main | overflow-thread  recurse forever on the main / a spawned thread
//! oom-try                          Vec::try_reserve until it fails, then recover
//! oom-abort                        allocate 1 MiB blocks until std aborts
//! write-code | exec-heap | read-gdt | write-idt   write the image's code, run code
//!                                  from the heap, read the supervisor's GDT, write the
//!                                  IDT (each dies: page fault)
//! ```
//!
//! The checking modes print one `ok ...` line per check and end with
//! `MODE passed`; a failed check prints `FAILED ...` to stderr and exits 1.
//! The faulting modes print `about to ... 0x<address>` first, so a test can
//! compare the address with the CR2 of the kernel's report; `other-thread`
//! makes the access from a second thread (the second CPU under `--cpus 2`)
//! that had the page in its TLB before the change.

use std::hint::black_box;
use std::process::exit;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use eremite as _;
use eremite_interface::errno::{EACCES, EINVAL, ENOMEM};
use eremite_interface::layout::{GDT_ADDR, IDT_ADDR};

unsafe extern "C" {
    /// hermit-abi: map `size` bytes of zeroed anonymous memory; the address
    /// goes to `ret`. 0 or a negative errno.
    fn sys_mmap(size: usize, prot_flags: u32, ret: &mut *mut u8) -> i32;
    /// hermit-abi: unmap `[ptr, ptr + size)`. 0 or a negative errno.
    fn sys_munmap(ptr: *mut u8, size: usize) -> i32;
    /// hermit-abi: give `[ptr, ptr + size)` the protection `prot_flags`.
    fn sys_mprotect(ptr: *mut u8, size: usize, prot_flags: u32) -> i32;
}

const PAGE: usize = 4096;
const WORDS_PER_PAGE: usize = PAGE / 8;
const MIB: usize = 1 << 20;
const PROT_NONE: u32 = 0;
const PROT_READ: u32 = 1;
const PROT_WRITE: u32 = 2;
const PROT_EXEC: u32 = 4;
const PROT_RW: u32 = PROT_READ | PROT_WRITE;

fn fail(message: std::fmt::Arguments<'_>) -> ! {
    eprintln!("FAILED {message}");
    exit(1);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map_or("patterns", String::as_str);
    let number = |i: usize, default: usize| -> usize {
        args.get(i).map_or(default, |a| {
            a.parse()
                .unwrap_or_else(|_| fail(format_args!("`{a}` is not a number")))
        })
    };
    let is_other_thread = args.get(1).map(String::as_str) == Some("other-thread");
    match mode {
        "zeroed" => zeroed(number(1, 32) * MIB, number(2, 1), number(3, 3)),
        "patterns" => patterns(),
        "munmap-then-read" => munmap_then_read(is_other_thread),
        "mprotect-then-write" => mprotect_then_write(is_other_thread),
        "overflow-main" => {
            println!("about to overflow the main thread's stack");
            black_box(recurse(0));
        }
        "overflow-thread" => {
            println!("about to overflow a spawned thread's stack");
            let thread = std::thread::spawn(|| black_box(recurse(0)));
            let _ = thread.join();
            println!("the main thread joined the overflowed thread?!");
        }
        "oom-try" => oom_try(),
        "oom-abort" => oom_abort(),
        "write-code" => {
            let code = black_box(main as fn()) as usize;
            println!("about to write to the code of main at {code:#x}");
            // SAFETY: not safe: writing the image's code must fault (W^X).
            unsafe { (code as *mut u8).write_volatile(0xc3) };
        }
        "exec-heap" => {
            // `ret`: harmless if the heap were executable, so the program
            // would go on and report that it was.
            let code = black_box(vec![0xc3u8; 16]);
            println!(
                "about to execute heap memory at {:#x}",
                code.as_ptr() as usize
            );
            // SAFETY: not safe: heap memory must not be executable (NX);
            // the call must fault on the instruction fetch.
            let function =
                unsafe { std::mem::transmute::<*const u8, extern "C" fn()>(code.as_ptr()) };
            black_box(function)();
            drop(code);
        }
        "write-idt" => {
            println!("about to write the IDT at {IDT_ADDR:#x}");
            // SAFETY: not safe: the IDT must be out of reach of CPL3 once
            // the kernel has filled it in.
            unsafe { (IDT_ADDR as *mut u64).write_volatile(0) };
            println!("wrote the IDT");
        }
        "read-gdt" => {
            println!("about to read the GDT at {GDT_ADDR:#x}");
            // SAFETY: not safe: the supervisor's pages must be out of reach
            // of CPL3.
            let value = unsafe { (GDT_ADDR as *const u64).read_volatile() };
            println!("read {value:#x} from the GDT");
        }
        other => {
            eprintln!("unknown mode `{other}` (see the top of examples/memory/src/main.rs)");
            exit(2);
        }
    }
    if mode.starts_with("overflow")
        || mode.ends_with("-then-read")
        || mode.ends_with("-then-write")
        || ["write-code", "exec-heap", "read-gdt", "write-idt"].contains(&mode)
    {
        println!("still alive after `{mode}`?!");
        exit(1);
    }
}

/// An anonymous mapping made by [`map`]: `len` bytes from `ptr`.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn addr(&self) -> usize {
        self.ptr as usize
    }

    fn pages(&self) -> usize {
        self.len.div_ceil(PAGE)
    }

    /// The word `word` of page `page`.
    fn word(&self, page: usize, word: usize) -> *mut u64 {
        assert!(page * PAGE + word * 8 + 8 <= self.len);
        self.ptr.wrapping_add(page * PAGE + word * 8).cast()
    }

    /// Every word of page `page`, to read or write.
    ///
    /// # Safety
    /// The page must be mapped readable (and writable, to write) and no
    /// other reference to it may be alive.
    #[allow(clippy::mut_from_ref)]
    unsafe fn page_words(&self, page: usize) -> &mut [u64] {
        assert!((page + 1) * PAGE <= self.len);
        // SAFETY: inside the mapping (checked above), page-aligned, and
        // accessible and unshared (the caller's contract).
        unsafe { std::slice::from_raw_parts_mut(self.word(page, 0), WORDS_PER_PAGE) }
    }
}

/// `sys_mmap`: the mapping, or the negative errno.
fn mmap(len: usize, prot: u32) -> Result<Mapping, i32> {
    let mut ptr = std::ptr::null_mut();
    // SAFETY: the kernel only writes the address through `ret`.
    let status = unsafe { sys_mmap(len, prot, &mut ptr) };
    if status == 0 {
        Ok(Mapping { ptr, len })
    } else {
        Err(status)
    }
}

/// [`mmap`] that must succeed, with a page-aligned, non-null address.
fn map(len: usize, prot: u32) -> Mapping {
    let mapping =
        mmap(len, prot).unwrap_or_else(|e| fail(format_args!("mmap({len}, {prot}) returned {e}")));
    if mapping.ptr.is_null() || !mapping.addr().is_multiple_of(PAGE) {
        fail(format_args!(
            "mmap gave the unaligned address {:p}",
            mapping.ptr
        ));
    }
    mapping
}

/// `sys_munmap` of `len` bytes from `addr`: 0 or the negative errno.
fn munmap(addr: usize, len: usize) -> i32 {
    // SAFETY: the pages are only ever used through raw pointers, checked
    // against the mapping; after this no code touches them except the
    // modes whose point is to fault.
    unsafe { sys_munmap(addr as *mut u8, len) }
}

/// `sys_mprotect` of `len` bytes from `addr`: 0 or the negative errno.
fn mprotect(addr: usize, len: usize, prot: u32) -> i32 {
    // SAFETY: as for `munmap`: no reference into the range is alive.
    unsafe { sys_mprotect(addr as *mut u8, len, prot) }
}

/// A value that differs between rounds, mappings, pages and words.
fn pattern(tag: usize, page: usize, word: usize) -> u64 {
    let mixed = ((tag as u64) << 48) ^ ((page as u64) << 12) ^ word as u64;
    mixed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
}

/// Fill page `page` of `mapping` with the pattern `tag`.
fn fill_page(mapping: &Mapping, tag: usize, page: usize) {
    // SAFETY: the page is mapped read-write and nothing else refers to it.
    let words = unsafe { mapping.page_words(page) };
    for (i, word) in words.iter_mut().enumerate() {
        *word = pattern(tag, page, i);
    }
}

/// Whether page `page` of `mapping` holds the pattern `tag`.
fn page_holds(mapping: &Mapping, tag: usize, page: usize) -> bool {
    // SAFETY: the page is mapped readable and nothing else refers to it.
    let words = unsafe { mapping.page_words(page) };
    words
        .iter()
        .enumerate()
        .all(|(i, word)| *word == pattern(tag, page, i))
}

/// The first non-zero word of page `page`, if any.
fn nonzero_word(mapping: &Mapping, page: usize) -> Option<(usize, u64)> {
    // SAFETY: the page is mapped readable and nothing else refers to it.
    let words = unsafe { mapping.page_words(page) };
    words.iter().copied().enumerate().find(|(_, w)| *w != 0)
}

/// `zeroed`: fresh mappings, and mappings made of recycled memory, read
/// as zero; every page keeps its own pattern.
fn zeroed(len: usize, stride: usize, rounds: usize) {
    let stride = stride.max(1);
    let mut previous = Vec::new();
    for round in 0..rounds {
        let mapping = map(len, PROT_RW);
        let visited = (0..mapping.pages()).step_by(stride);
        let count = visited.len();
        for page in visited.clone() {
            if let Some((word, value)) = nonzero_word(&mapping, page) {
                fail(format_args!(
                    "round {round}: word {word} of page {page} (at {:#x}) of a fresh mapping is {value:#x}",
                    mapping.word(page, word) as usize
                ));
            }
        }
        println!(
            "ok round {round}: {count} pages of a fresh {} MiB mapping at {:#x} read as zero",
            len / MIB,
            mapping.addr()
        );
        for page in visited.clone() {
            fill_page(&mapping, round, page);
        }
        if let Some(page) = visited.clone().find(|&p| !page_holds(&mapping, round, p)) {
            fail(format_args!("round {round}: page {page} lost its pattern"));
        }
        println!("ok round {round}: {count} pages hold their own patterns");
        previous.push(mapping.addr());
        let status = munmap(mapping.addr(), mapping.len);
        if status != 0 {
            fail(format_args!("round {round}: munmap returned {status}"));
        }
        // Dirty some heap memory and free it again, so later rounds may be
        // given frames that held something else.
        let dirty = black_box(vec![u64::MAX; (len / 4).min(32 * MIB) / 8]);
        drop(dirty);
        println!("ok round {round}: unmapped");
    }
    previous.sort_unstable();
    previous.dedup();
    println!(
        "ok {rounds} rounds used {} distinct addresses",
        previous.len()
    );
    println!("zeroed passed");
}

/// The `patterns` checks: see the module documentation.
fn patterns() {
    // A big Vec through std's allocator.
    let words = 16 * MIB / 8;
    let mut big: Vec<u64> = (0..words)
        .map(|i| pattern(99, i / WORDS_PER_PAGE, i))
        .collect();
    if !big
        .iter()
        .enumerate()
        .all(|(i, w)| *w == pattern(99, i / WORDS_PER_PAGE, i))
    {
        fail(format_args!("the 16 MiB Vec lost its pattern"));
    }
    println!(
        "ok a 16 MiB Vec holds its pattern on {} pages",
        words / WORDS_PER_PAGE
    );

    // Several mappings at once, of awkward sizes too.
    let lens = [PAGE, 3 * PAGE - 100, MIB, 8 * MIB + PAGE];
    let mappings: Vec<Mapping> = lens.iter().map(|&len| map(len, PROT_RW)).collect();
    let big_range = big.as_ptr() as usize..big.as_ptr() as usize + words * 8;
    for (i, a) in mappings.iter().enumerate() {
        let a_range = a.addr()..a.addr() + a.len;
        let overlaps_big = a_range.start < big_range.end && big_range.start < a_range.end;
        let overlaps_other = mappings[..i]
            .iter()
            .any(|b| a_range.start < b.addr() + b.len && b.addr() < a_range.end);
        if overlaps_big || overlaps_other {
            fail(format_args!(
                "mapping {i} at {:#x} overlaps another block",
                a.addr()
            ));
        }
    }
    println!(
        "ok {} mappings are page-aligned and disjoint",
        mappings.len()
    );
    for (tag, m) in mappings.iter().enumerate() {
        let whole_pages = m.len / PAGE;
        for page in 0..whole_pages {
            if let Some((word, value)) = nonzero_word(m, page) {
                fail(format_args!(
                    "mapping {tag} page {page} word {word} is {value:#x}"
                ));
            }
            fill_page(m, tag, page);
        }
        // The partial last page: up to the requested length only.
        for word in whole_pages * WORDS_PER_PAGE..m.len / 8 {
            let at = m.ptr.wrapping_add(word * 8).cast::<u64>();
            // SAFETY: inside the requested length of a read-write mapping.
            unsafe {
                if at.read() != 0 {
                    fail(format_args!("mapping {tag} word {word} is not zero"));
                }
                at.write(pattern(tag, whole_pages, word));
            }
        }
    }
    let intact = |m: &Mapping, tag: usize, pages: std::ops::Range<usize>| {
        pages.into_iter().all(|page| page_holds(m, tag, page))
    };
    for (tag, m) in mappings.iter().enumerate() {
        if !intact(m, tag, 0..m.len / PAGE) {
            fail(format_args!("mapping {tag} lost its pattern"));
        }
    }
    big[12345] ^= 1;
    if big[12345] != pattern(99, 12345 / WORDS_PER_PAGE, 12345) ^ 1 {
        fail(format_args!("the Vec changed under the mappings"));
    }
    println!("ok every mapping holds its own pattern alongside the Vec");
    drop(big);

    // mprotect read-only, then none, then back: the contents survive.
    let m = &mappings[2];
    let (first, count) = (16, 32);
    let range = m.addr() + first * PAGE;
    expect(
        "mprotect(32 pages, PROT_READ)",
        mprotect(range, count * PAGE, PROT_READ),
        0,
    );
    if !intact(m, 2, 0..m.pages()) {
        fail(format_args!("read-only pages lost their contents"));
    }
    println!("ok read-only pages can still be read");
    expect(
        "mprotect(32 pages, PROT_NONE)",
        mprotect(range, count * PAGE, PROT_NONE),
        0,
    );
    expect(
        "mprotect(32 pages, read-write)",
        mprotect(range, count * PAGE, PROT_RW),
        0,
    );
    if !intact(m, 2, 0..m.pages()) {
        fail(format_args!("pages lost their contents across PROT_NONE"));
    }
    for page in first..first + count {
        fill_page(m, 20, page);
    }
    if !intact(m, 20, first..first + count)
        || !intact(m, 2, 0..first)
        || !intact(m, 2, first + count..m.pages())
    {
        fail(format_args!(
            "pages made writable again lost their new pattern"
        ));
    }
    println!("ok contents survive mprotect to read-only, none and back to read-write");

    // Unmapping the middle of a mapping leaves the rest.
    let m = &mappings[3];
    let hole = 100..300;
    expect(
        "munmap(the middle 200 pages of a mapping)",
        munmap(m.addr() + hole.start * PAGE, hole.len() * PAGE),
        0,
    );
    if !intact(m, 3, 0..hole.start) || !intact(m, 3, hole.end..m.len / PAGE) {
        fail(format_args!("unmapping the middle changed the rest"));
    }
    println!("ok the pages around an unmapped hole keep their contents");
    let fresh = map(hole.len() * PAGE, PROT_RW);
    if let Some(page) = (0..fresh.pages()).find(|&p| nonzero_word(&fresh, p).is_some()) {
        fail(format_args!(
            "page {page} of a mapping made after munmap is not zero"
        ));
    }
    println!("ok a new mapping after munmap reads as zero");

    // Bad arguments.
    let einval = -EINVAL.0;
    let eacces = -EACCES.0;
    let enomem = -ENOMEM.0;
    let status = |r: Result<Mapping, i32>| match r {
        Ok(m) => {
            munmap(m.addr(), m.len);
            0
        }
        Err(e) => e,
    };
    expect("mmap(size 0)", status(mmap(0, PROT_RW)), einval);
    expect(
        "mmap(1 TiB, more than RAM)",
        status(mmap(1 << 40, PROT_RW)),
        enomem,
    );
    expect(
        "mmap(usize::MAX bytes)",
        status(mmap(usize::MAX, PROT_RW)),
        enomem,
    );
    expect(
        "mmap(write+exec)",
        status(mmap(PAGE, PROT_WRITE | PROT_EXEC)),
        eacces,
    );
    expect(
        "mmap(read+write+exec)",
        status(mmap(PAGE, PROT_READ | PROT_WRITE | PROT_EXEC)),
        eacces,
    );
    expect("mmap(PROT_NONE)", status(mmap(PAGE, PROT_NONE)), 0);
    expect(
        "mmap(read+exec)",
        status(mmap(PAGE, PROT_READ | PROT_EXEC)),
        0,
    );
    let m = &mappings[1];
    expect(
        "munmap(unaligned address)",
        munmap(m.addr() + 1, PAGE),
        einval,
    );
    expect("munmap(size 0)", munmap(m.addr(), 0), einval);
    expect(
        "mprotect(unaligned address)",
        mprotect(m.addr() + 8, PAGE, PROT_READ),
        einval,
    );
    expect(
        "mprotect(write+exec)",
        mprotect(m.addr(), PAGE, PROT_WRITE | PROT_EXEC),
        eacces,
    );
    expect(
        "mprotect(the unmapped hole)",
        mprotect(mappings[3].addr() + hole.start * PAGE, PAGE, PROT_READ),
        enomem,
    );
    if !intact(m, 1, 0..m.len / PAGE) {
        fail(format_args!("refused calls changed a mapping"));
    }
    println!("ok refused calls left the mappings alone");

    // Unmapping a range that includes the hole is fine.
    for m in &mappings {
        expect("munmap(a whole mapping)", munmap(m.addr(), m.len), 0);
    }
    expect(
        "munmap(the fresh mapping)",
        munmap(fresh.addr(), fresh.len),
        0,
    );
    println!("patterns passed");
}

/// Check that a call returned `want`.
fn expect(what: &str, got: i32, want: i32) {
    if got != want {
        fail(format_args!("{what} returned {got}, expected {want}"));
    }
    println!("ok {what} = {got}");
}

/// Run `access` on a second thread that has already used the page at
/// `addr` (so its CPU may hold the translation in its TLB), after `change`
/// has run on this thread; or run both here.
fn after_change(addr: usize, is_other_thread: bool, change: impl FnOnce(), access: fn(usize)) {
    if !is_other_thread {
        change();
        access(addr);
        return;
    }
    let stage = Arc::new(AtomicU32::new(0));
    let thread = {
        let stage = stage.clone();
        std::thread::spawn(move || {
            // SAFETY: the page is mapped and readable at this point.
            let value = unsafe { (addr as *const u64).read_volatile() };
            println!("the other thread read {value} at {addr:#x}");
            stage.store(1, Ordering::Release);
            while stage.load(Ordering::Acquire) != 2 {
                std::thread::yield_now();
            }
            access(addr);
        })
    };
    while stage.load(Ordering::Acquire) != 1 {
        std::thread::yield_now();
    }
    change();
    stage.store(2, Ordering::Release);
    let _ = thread.join();
}

/// `munmap-then-read`: the second page of a mapping, read after munmap.
fn munmap_then_read(is_other_thread: bool) {
    let mapping = map(4 * PAGE, PROT_RW);
    let target = mapping.word(1, 3);
    // SAFETY: inside the read-write mapping.
    unsafe { target.write_volatile(42) };
    after_change(
        target as usize,
        is_other_thread,
        || {
            expect("munmap", munmap(mapping.addr(), mapping.len), 0);
        },
        |addr| {
            println!("about to read {addr:#x} after munmap");
            // SAFETY: not safe: the page is unmapped; the read must fault.
            let value = unsafe { (addr as *const u64).read_volatile() };
            println!("read {value} from an unmapped page");
        },
    );
}

/// `mprotect-then-write`: the second page of a mapping, made read-only,
/// still reads, and a write faults.
fn mprotect_then_write(is_other_thread: bool) {
    let mapping = map(4 * PAGE, PROT_RW);
    let target = mapping.word(1, 5);
    // SAFETY: inside the read-write mapping.
    unsafe { target.write_volatile(42) };
    after_change(
        target as usize,
        is_other_thread,
        || {
            expect(
                "mprotect(PROT_READ)",
                mprotect(mapping.addr() + PAGE, PAGE, PROT_READ),
                0,
            );
        },
        |addr| {
            // SAFETY: the page is mapped read-only: reading is fine.
            let value = unsafe { (addr as *const u64).read_volatile() };
            println!("read {value} from the read-only page");
            println!("about to write {addr:#x} after mprotect(PROT_READ)");
            // SAFETY: not safe: the page is read-only; the write must fault.
            unsafe { (addr as *mut u64).write_volatile(43) };
        },
    );
}

/// Recurse forever, 512 bytes of stack a level.
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 64]);
    recurse(depth + 1).wrapping_add(frame[(depth % 64) as usize])
}

/// `oom-try`: reserve ever larger blocks (halving the step on failure)
/// until not even a page can be had; free them; allocate normally again.
fn oom_try() {
    let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(4096);
    let (mut obtained, mut step) = (0usize, MIB);
    println!("reserving memory with Vec::try_reserve until it fails");
    while blocks.len() < blocks.capacity() {
        let mut block = Vec::new();
        match block.try_reserve_exact(step) {
            Ok(()) => {
                // Use every page, so the memory is really there.
                for page in block.spare_capacity_mut().iter_mut().step_by(PAGE) {
                    page.write(1);
                }
                blocks.push(block);
                obtained += step;
                step = (step * 2).min(256 * MIB);
            }
            Err(_) if step > PAGE => step /= 2,
            Err(error) => {
                println!("ok try_reserve failed cleanly: {error}");
                break;
            }
        }
    }
    println!(
        "obtained {obtained} bytes ({} MiB) in {} blocks before try_reserve failed",
        obtained / MIB,
        blocks.len()
    );
    drop(blocks);
    let normal = black_box(vec![7u8; MIB]);
    if normal.iter().map(|&b| u64::from(b)).sum::<u64>() != 7 * MIB as u64 {
        fail(format_args!("a normal allocation after freeing is wrong"));
    }
    println!("ok a normal 1 MiB allocation works after freeing");
    drop(normal);
    let mut again: Vec<u8> = Vec::new();
    if again.try_reserve_exact(obtained / 2).is_err() {
        fail(format_args!(
            "half of the freed memory cannot be reserved again"
        ));
    }
    println!("ok half of what was obtained can be reserved again");
    println!("oom-try passed");
}

/// `oom-abort`: allocate 1 MiB blocks, using each, until one allocation
/// fails and std aborts with "memory allocation of 1048576 bytes failed".
fn oom_abort() {
    let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(1 << 16);
    println!("allocating 1 MiB blocks until the allocator gives up");
    loop {
        let mut block: Vec<u8> = Vec::with_capacity(MIB);
        for page in block.spare_capacity_mut().iter_mut().step_by(PAGE) {
            page.write(1);
        }
        blocks.push(block);
        if blocks.len() == blocks.capacity() {
            println!("allocated {} MiB and never ran out?!", blocks.len());
            exit(1);
        }
    }
}
