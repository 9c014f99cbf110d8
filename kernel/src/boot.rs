//! From the first instruction to the application's `main`.
//!
//! 1. check the boot info's magic and version;
//! 2. install the supervisor's exception and interrupt gates, enable the
//!    local APIC;
//! 3. clocks, console, heap, file systems (unpacking the initial
//!    ramdisk, then giving its memory to the heap);
//! 4. start the other CPUs, each on a small stack of its own, where they
//!    wait for threads ([`ap_start`]);
//! 5. the main thread: TLS block, stack, argv and envp arrays;
//! 6. record the boot time in the kernel report and call std's
//!    `runtime_entry(argc, argv, envp)` on the main stack.
//!
//! `unsafe` here: reading the boot info, handing RAM to the heap, and the
//! jump to the main stack and into std.

#![allow(unsafe_code)]

use alloc::vec::Vec;
use core::ffi::c_char;

use eremite_interface::hypercall::ExitKind;
use eremite_interface::layout::{self, BOOT_DATA_ADDR, BOOT_DATA_END};
use eremite_interface::{BootInfo, KernelReport, StringList, boot_flags};

use crate::console::klog;
use crate::{abi, arch, bootinfo, console, cpu, fd, fs, hypervisor, mm, sched, time};

/// Largest main-thread stack; smaller guests get an eighth of their RAM.
const MAIN_STACK_MAX_BYTES: u64 = 8 << 20;

unsafe extern "C" {
    /// Rust std's entry for `target_os = "hermit"`
    /// (`library/std/src/sys/pal/hermit/mod.rs`): sets up the environment,
    /// runs `main`, then calls `sys_exit`.
    fn runtime_entry(argc: i32, argv: *const *const c_char, env: *const *const c_char) -> !;
}

/// Called by `_start` on the boot stack at CPL3.
pub(crate) extern "C" fn kernel_start(boot_info_addr: u64) -> ! {
    let entry_tsc = arch::rdtsc();
    cpu::enter(0);
    if boot_info_addr != layout::BOOT_INFO_ADDR {
        fatal("boot info is not at the agreed address");
    }
    // SAFETY: the address is the one the layout fixes, checked above, and
    // this is the first and only read during boot.
    let info = *bootinfo::set(unsafe { arch::read_boot_info(boot_info_addr) });
    if !info.is_compatible() {
        fatal("boot info has another magic or interface version than this kernel");
    }
    if info.flags & boot_flags::PVH != 0 {
        hypervisor::use_pvh_devices();
    }
    arch::install_idt();
    arch::install_irq_gates();
    arch::preempt_init();
    arch::timer_init();
    if info.tsc_khz == 0 {
        fatal("the VMM did not give a TSC frequency");
    }
    time::init(info.tsc_khz, info.boot_tsc, info.boot_wall_ns);
    console::set_verbose(info.flags & boot_flags::VERBOSE != 0);

    if info.free_start >= info.mem_size || info.free_start < info.image_end {
        fatal("no free memory above the image");
    }
    // The initial ramdisk sits at the top of RAM; it stays out of the heap
    // until it is unpacked.
    let heap_end = if info.initrd_len == 0 {
        info.mem_size
    } else {
        let fits = info
            .initrd_addr
            .checked_add(info.initrd_len)
            .is_some_and(|end| end <= info.mem_size);
        if !fits
            || info.initrd_addr < info.free_start
            || !info.initrd_addr.is_multiple_of(layout::PAGE_SIZE)
        {
            fatal("the initrd is not inside free RAM");
        }
        info.initrd_addr
    };
    let reserved = (heap_end < info.mem_size).then_some((heap_end, info.mem_size));
    let ram_count = usize::try_from(info.ram_count).unwrap_or(usize::MAX);
    let Some(ram) = info.ram.get(..ram_count) else {
        fatal("the boot info's RAM map is too long");
    };
    if ram
        .first()
        .is_none_or(|r| r.addr != 0 || r.len != info.mem_size)
    {
        fatal("the boot info's RAM map does not start with the RAM below 4 GiB");
    }
    // SAFETY: the VMM reserves nothing above `free_start` but the initrd
    // (boot info contract), which is passed as reserved, and nothing in
    // the other RAM ranges; this is the only call, and nothing has
    // allocated yet.
    if let Err(why) = unsafe { mm::init(ram, info.free_start, reserved) } {
        fatal(why);
    }
    klog!(
        "eremite kernel: {} MiB RAM, image {:#x}..{:#x}, heap from {:#x}, TSC {} kHz ({})",
        mm::ram_bytes() >> 20,
        info.image_start,
        info.image_end,
        info.free_start,
        info.tsc_khz,
        if info.flags & boot_flags::TSC_MEASURED != 0 {
            "measured"
        } else {
            "from the hypervisor"
        }
    );

    let initrd = if heap_end < info.mem_size {
        // SAFETY: the initrd is outside the heap (above), and the slice is
        // only used by `fs::init`, before its memory joins the heap below.
        let bytes = unsafe { mm::initrd_bytes(info.initrd_addr, info.initrd_len) };
        Some(bytes.unwrap_or_else(|| fatal("the initrd is not in guest RAM")))
    } else {
        None
    };
    sched::set_host_signal_hook(crate::process::host_signals);
    if let Err(why) = fs::init(&info, initrd).and_then(|()| fd::init()) {
        fatal(why);
    }
    abi::trace::init();
    crate::functrace::init(sched::MAIN_TID);
    crate::threadlist::publish();
    if heap_end < info.mem_size {
        // SAFETY: the initrd is unpacked and nothing refers to it any more
        // (`fs::init` keeps no slice of it); the range is disjoint from
        // the heap's first arena, which ends where it starts.
        unsafe { mm::add_region(heap_end, info.mem_size) };
    }

    // Every gate is in place (installed above, before the heap).
    if let Err(why) = mm::seal_idt() {
        fatal(why);
    }

    sched::set_current_name(program_name(&info.args));
    start_cpus(info.cpu_count);

    if info.flags & boot_flags::LINUX != 0 {
        let Some(stack) = mm::Stack::new(LINUX_SYSCALL_STACK_BYTES, mm::NO_THREAD) else {
            fatal("out of memory for the main thread's system-call stack");
        };
        let top = stack.top();
        // The main thread's system calls run on it for as long as it lives.
        core::mem::forget(stack);
        record_main(entry_tsc);
        // SAFETY: `top` is the 16-byte aligned end of a fresh stack that
        // nothing else uses; `enter_linux` never returns.
        unsafe { arch::call_on_stack(top, enter_linux, [top, 0, 0]) }
    }

    let Some(tls) = mm::create_tls(&info.tls) else {
        fatal("out of memory for the main thread's TLS block");
    };
    arch::set_fs_base(tls.thread_pointer);
    // The main thread's TLS block lives as long as the program.
    core::mem::forget(tls);

    let args = pointer_array(&info.args);
    let env = pointer_array(&info.env);
    let argc = i32::try_from(args.len().saturating_sub(1)).unwrap_or(0);

    let stack_bytes = (info.mem_size / 8).min(MAIN_STACK_MAX_BYTES) & !(layout::PAGE_SIZE - 1);
    let Some(stack) = mm::Stack::new(stack_bytes as usize, sched::MAIN_TID) else {
        fatal("out of memory for the main thread's stack");
    };
    let stack_top = stack.top();
    // The main thread's stack lives as long as the program.
    core::mem::forget(stack);

    record_main(entry_tsc);
    klog!("calling main with {argc} args");

    let argv = args.leak().as_ptr() as u64;
    let envp = env.leak().as_ptr() as u64;
    // SAFETY: `stack_top` is the 16-byte aligned end of a fresh allocation
    // of `stack_bytes` that nothing else uses; `enter_main` never returns.
    unsafe { arch::call_on_stack(stack_top, enter_main, [argc as u64, argv, envp]) }
}

/// Record in the kernel report when the kernel handed over to the program.
fn record_main(entry_tsc: u64) {
    let main_tsc = arch::rdtsc();
    let init_ns = time::ticks_to_ns(main_tsc.saturating_sub(entry_tsc));
    let report = layout::BOOT_INFO_ADDR + BootInfo::REPORT_OFFSET as u64;
    arch::write_report_word(
        report + core::mem::offset_of!(KernelReport, init_ns) as u64,
        init_ns,
    );
    arch::write_report_word(
        report + core::mem::offset_of!(KernelReport, main_tsc) as u64,
        main_tsc,
    );
    klog!("kernel init took {} us", init_ns / 1000);
}

/// Stack for the system calls of a Linux program's main thread.
const LINUX_SYSCALL_STACK_BYTES: usize = arch::LINUX_SYSCALL_STACK_BYTES;

/// A Linux program's main thread, on its system-call stack.
extern "C" fn enter_linux(syscall_stack: u64, _: u64, _: u64) -> ! {
    let Some(info) = bootinfo::info() else {
        fatal("no boot info");
    };
    abi::linux::start(info, syscall_stack)
}

/// Stack of an application processor's first context (its scheduler's
/// idle loop, and the interrupts it takes there).
const AP_STACK_BYTES: usize = 64 << 10;

/// Start CPUs 1..`count`.
fn start_cpus(count: u32) {
    if count > eremite_interface::layout::MAX_CPUS {
        fatal("more CPUs than the kernel supports");
    }
    for index in 1..count {
        let Some(stack) = mm::Stack::new(AP_STACK_BYTES, mm::NO_THREAD) else {
            fatal("out of memory for the CPUs' stacks");
        };
        let top = stack.top();
        // It runs for as long as the VM does.
        core::mem::forget(stack);
        if hypervisor::start_cpu(index, arch::ap_entry(), top, u64::from(index)).is_err() {
            fatal("the hypervisor did not start a CPU");
        }
    }
    klog!("{count} CPUs");
    if bootinfo::halts_when_idle() {
        klog!("idle CPUs halt at once: the VMM's device threads share their host CPUs");
    }
}

/// Where an application processor starts (from `eremite_ap_start`), at
/// CPL3 on the stack [`start_cpus`] gave it.
pub(crate) extern "C" fn ap_start(index: u64) -> ! {
    cpu::enter(u32::try_from(index).unwrap_or(0));
    sched::run_core()
}

extern "C" fn enter_main(argc: u64, argv: u64, envp: u64) -> ! {
    // SAFETY: argv and envp are NULL-terminated arrays of pointers to
    // NUL-terminated strings that live for the whole run (leaked above, in
    // the boot data area); argc counts the non-NULL entries of argv.
    unsafe {
        runtime_entry(
            argc as i32,
            argv as *const *const c_char,
            envp as *const *const c_char,
        )
    }
}

/// The C-style array for a string list from the boot data area: one
/// pointer per NUL-terminated string, then NULL. Strings outside the boot
/// data area, or not terminated, end the list early.
/// The main thread's name: the last part of the program's path (its
/// first argument), as Linux names a process.
fn program_name(args: &StringList) -> sched::ThreadName {
    let first = pointer_array(args)[0];
    if first.is_null() {
        return sched::thread_name(b"main");
    }
    // SAFETY: a non-null entry of `pointer_array` points at a
    // NUL-terminated string in the boot data area, which lives for ever.
    let path = unsafe { core::ffi::CStr::from_ptr(first) }.to_bytes();
    let base = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    sched::thread_name(base)
}

fn pointer_array(list: &StringList) -> Vec<*const c_char> {
    let mut pointers = Vec::new();
    let Some(end) = list.addr.checked_add(list.len) else {
        pointers.push(core::ptr::null());
        return pointers;
    };
    if list.addr >= BOOT_DATA_ADDR && end <= BOOT_DATA_END {
        let bytes = mm::boot_data(list.addr, list.len);
        let mut start = 0;
        for _ in 0..list.count {
            let Some(nul) = bytes[start..].iter().position(|&b| b == 0) else {
                break;
            };
            pointers.push(bytes[start..].as_ptr().cast::<c_char>());
            start += nul + 1;
        }
    }
    pointers.push(core::ptr::null());
    pointers
}

/// Boot cannot go on: say why and stop the VM.
pub(crate) fn fatal(why: &str) -> ! {
    use core::fmt::Write as _;
    let _ = writeln!(
        console::DirectWriter::new(eremite_interface::hypercall::Stream::Stderr),
        "eremite kernel: boot failed: {why}"
    );
    hypervisor::exit(ExitKind::KernelPanic, 0)
}
