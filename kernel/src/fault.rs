//! Reports of fatal events: CPU exceptions (from the supervisor's upcall)
//! and kernel panics. A report names the event, the registers that matter
//! and a short backtrace, then stops the VM with a distinct exit kind.
//!
//! The backtrace follows the frame-pointer chain (the kernel and the
//! examples are built with frame pointers), checking every step against
//! guest RAM so a corrupt stack ends the trace instead of faulting again.
//! Addresses are printed as offsets into the image too, for `addr2line`.

use core::fmt::Write as _;
use core::mem::offset_of;

use eremite_interface::hypercall::{ExitKind, Stream};
use eremite_interface::{BootInfo, KernelReport, boot_flags, layout};

use crate::arch::{self, ExceptionFrame};
use crate::console::{self, DirectWriter};
use eremite_mm::Access;

use crate::mm::FaultExplanation;
use crate::{bootinfo, hypervisor, mm, sched};

const MAX_FRAMES: usize = 16;

fn vector_name(vector: u64) -> &'static str {
    // SDM vol. 3A, table 6-1.
    match vector {
        0 => "divide error (#DE)",
        1 => "debug (#DB)",
        2 => "non-maskable interrupt",
        3 => "breakpoint (#BP)",
        4 => "overflow (#OF)",
        5 => "bound range exceeded (#BR)",
        6 => "invalid opcode (#UD)",
        7 => "device not available (#NM)",
        8 => "double fault (#DF)",
        10 => "invalid TSS (#TS)",
        11 => "segment not present (#NP)",
        12 => "stack-segment fault (#SS)",
        13 => "general protection (#GP)",
        14 => "page fault (#PF)",
        16 => "x87 floating-point error (#MF)",
        17 => "alignment check (#AC)",
        18 => "machine check (#MC)",
        19 => "SIMD floating-point exception (#XM)",
        20 => "virtualization exception (#VE)",
        21 => "control protection (#CP)",
        _ => "reserved exception",
    }
}

struct Location(u64);

impl core::fmt::Display for Location {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:#x}", self.0)?;
        if let Some(info) = bootinfo::info()
            && (info.image_start..info.image_end).contains(&self.0)
        {
            write!(f, " (image+{:#x})", self.0 - info.image_start)?;
        }
        Ok(())
    }
}

/// A call to an address the program cannot have meant (a null function
/// pointer into the system-call trampoline at page 0): report it as the
/// page fault it would be on Linux, and exit as for a CPU exception.
pub(crate) fn report_bad_call(target: u64, return_address: u64) -> ! {
    console::flush();
    let mut out = DirectWriter::new(Stream::Stderr);
    let _ = writeln!(
        out,
        "eremite: CPU exception 14 page fault: a call to {target:#x} (a null function pointer?) from {}",
        Location(return_address.wrapping_sub(2))
    );
    drop(out);
    hypervisor::exit(ExitKind::Exception, 14)
}

/// What may take a CPU exception before it is reported (see
/// [`set_exception_hook`]).
static EXCEPTION_HOOK: spin::Once<fn(&ExceptionFrame)> = spin::Once::new();

/// Let `hook` see every CPU exception first; it returns if it leaves the
/// exception to the report. The Linux ABI registers one that runs a
/// program's signal handler for its own faults (the first registration
/// wins; there is one ABI per image).
pub(crate) fn set_exception_hook(hook: fn(&ExceptionFrame)) {
    EXCEPTION_HOOK.call_once(|| hook);
}

/// Whether the exception in `frame` is dealt with, so that the faulting
/// instruction can run again: a page fault the memory manager resolves.
pub(crate) fn is_resolved(frame: &ExceptionFrame) -> bool {
    frame.vector == 14 && mm::resolve_fault(frame.cr2, frame.error_code)
}

/// Print the exception report and exit, unless the hook takes the
/// exception; runs on the upcall stack at CPL3.
pub(crate) fn report_exception(frame: &ExceptionFrame) -> ! {
    if let Some(hook) = EXCEPTION_HOOK.get() {
        hook(frame);
    }
    console::flush();
    let mut out = DirectWriter::new(Stream::Stderr);
    let explanation = (frame.vector == 14).then(|| {
        // Error code bits (SDM vol. 3A, 4.7): 1 write, 4 instruction fetch.
        let access = if frame.error_code & 0x10 != 0 {
            Access::Execute
        } else if frame.error_code & 2 != 0 {
            Access::Write
        } else {
            Access::Read
        };
        mm::explain_fault(frame.cr2, access)
    });
    if let Some(Some(FaultExplanation::StackOverflow { thread })) = explanation {
        let thread = match thread {
            mm::NO_THREAD => sched::stack_owner(frame.cr2).unwrap_or(mm::NO_THREAD),
            thread => thread,
        };
        let _ = match thread {
            mm::NO_THREAD => writeln!(out, "eremite: a CPU's idle loop has overflowed its stack"),
            sched::MAIN_TID => writeln!(out, "eremite: the main thread has overflowed its stack"),
            _ => writeln!(out, "eremite: thread {thread} has overflowed its stack"),
        };
    }
    let _ = writeln!(
        out,
        "eremite: CPU exception {} {} at RIP {}",
        frame.vector,
        vector_name(frame.vector),
        Location(frame.rip)
    );
    let _ = write!(out, "  error code {:#x}", frame.error_code);
    if frame.vector == 14 {
        let _ = write!(
            out,
            ", CR2 {:#x} ({} {} access)",
            frame.cr2,
            if frame.error_code & 1 != 0 {
                "protection violation on"
            } else {
                "unmapped page on"
            },
            if frame.error_code & 2 != 0 {
                "write"
            } else {
                "read"
            }
        );
    } else {
        let _ = write!(out, ", CR2 {:#x}", frame.cr2);
    }
    let _ = writeln!(
        out,
        ", RSP {:#x}, RBP {:#x}, CPL {}",
        frame.rsp,
        frame.rbp,
        frame.cs & 3
    );
    match explanation {
        Some(Some(FaultExplanation::StackOverflow { .. })) => {
            let _ = writeln!(
                out,
                "  {:#x} is in the guard pages below the stack (stack overflow)",
                frame.cr2
            );
        }
        Some(Some(FaultExplanation::Mapping(fault))) => {
            let _ = writeln!(out, "  {fault}");
        }
        Some(Some(FaultExplanation::Other(leaf))) => {
            let _ = writeln!(out, "  {}", describe_page(frame.cr2, leaf));
        }
        Some(None) | None => {}
    }
    record_crash(frame.rip, frame.rsp);
    if !bootinfo::info().is_some_and(|i| i.flags & boot_flags::PVH != 0) {
        // Our VMM unwinds from the crash and prints a backtrace with names.
        drop(out);
        let code = i32::try_from(frame.vector).unwrap_or(-1);
        hypervisor::exit(ExitKind::Exception, code)
    }
    let _ = writeln!(out, "backtrace:");
    let _ = writeln!(out, "  #0 {}", Location(frame.rip));
    let mut rbp = frame.rbp;
    for depth in 1..MAX_FRAMES {
        let Some((next, return_address)) = read_frame(rbp) else {
            break;
        };
        if return_address == 0 {
            break;
        }
        let _ = writeln!(out, "  #{depth} {}", Location(return_address));
        if next <= rbp {
            break;
        }
        rbp = next;
    }
    drop(out);
    let code = i32::try_from(frame.vector).unwrap_or(-1);
    hypervisor::exit(ExitKind::Exception, code)
}

/// Tell the VMM where the program was when it crashed
/// (`KernelReport::crash_rip`, `crash_rsp`), for its backtrace.
pub(crate) fn record_crash(rip: u64, rsp: u64) {
    let report = layout::BOOT_INFO_ADDR + BootInfo::REPORT_OFFSET as u64;
    arch::write_report_word(report + offset_of!(KernelReport, crash_rip) as u64, rip);
    arch::write_report_word(report + offset_of!(KernelReport, crash_rsp) as u64, rsp);
}

/// What the page of `addr` is, from its page-table bits `leaf`, for an
/// address outside the application's mappings and stacks.
fn describe_page(addr: u64, leaf: u64) -> &'static str {
    let is_image = bootinfo::info().is_some_and(|i| (i.image_start..i.image_end).contains(&addr));
    match (leaf & 1 != 0, leaf & 4 != 0, leaf & 2 != 0, leaf >> 63 != 0) {
        (false, ..) if addr < eremite_interface::layout::PAGE_SIZE => {
            "the page is not mapped (a null pointer)"
        }
        (false, ..) => "the page is not mapped",
        (true, false, ..) => "the page belongs to the CPL0 supervisor",
        (true, true, false, false) if is_image => "the page is the image's code (read-only)",
        (true, true, false, true) if is_image => "the page is the image's read-only data",
        (true, true, false, _) => "the page is read-only",
        (true, true, true, true) => "the page is data (not executable)",
        (true, true, true, false) => "the page allows the access (stale TLB entry?)",
    }
}

/// The saved frame pointer and return address of the frame at `rbp`.
fn read_frame(rbp: u64) -> Option<(u64, u64)> {
    if !rbp.is_multiple_of(8) || !mm::is_accessible(rbp, 16, mm::UserAccess::Read) {
        return None;
    }
    let words = mm::read_words::<2>(rbp);
    Some((words[0], words[1]))
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    console::flush();
    let _ = writeln!(
        DirectWriter::new(Stream::Stderr),
        "eremite kernel panic: {info}"
    );
    hypervisor::exit(ExitKind::KernelPanic, 0)
}
