//! The list of threads a debugger reads (`eremite run --gdb`): which
//! thread each CPU runs, and where each other thread's registers were
//! saved when it was switched away (`eremite_interface::trap::ThreadTable`,
//! whose address the kernel report gives).
//!
//! Kept only while GDB is attached (`arch::is_debugger_attached`, set by
//! the VMM before the first instruction), so without a debugger the
//! scheduler pays one load per switch. The scheduler calls in with its lock
//! held, so writers never race; the VMM reads while every vCPU is stopped.
//!
//! ABI-neutral; below `sched`, above `arch`.

use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicU64, Ordering};

use eremite_interface::layout::{self, MAX_CPUS};
use eremite_interface::trap::{THREAD_SLOTS, ThreadSlot, ThreadTable};
use eremite_interface::{BootInfo, KernelReport};

use crate::arch;

const WORDS: usize = size_of::<ThreadTable>() / 8;
const CURRENT: usize = offset_of!(ThreadTable, current) / 8;
const SLOTS: usize = offset_of!(ThreadTable, slots) / 8;
const SLOT_WORDS: usize = size_of::<ThreadSlot>() / 8;
const TID: usize = offset_of!(ThreadSlot, tid) / 8;
const SAVED_RSP_AT: usize = offset_of!(ThreadSlot, saved_rsp_at) / 8;
const FS_BASE_AT: usize = offset_of!(ThreadSlot, fs_base_at) / 8;
const NAME_AT: usize = offset_of!(ThreadSlot, name_at) / 8;

/// The table, word by word (`ThreadTable`'s layout).
static TABLE: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];

/// Give the VMM the table's address (in the kernel report).
pub(crate) fn publish() {
    arch::write_report_word(
        layout::BOOT_INFO_ADDR
            + (BootInfo::REPORT_OFFSET + offset_of!(KernelReport, debug_threads)) as u64,
        TABLE.as_ptr() as u64,
    );
}

/// Thread `tid` exists; while it is switched away its stack pointer is
/// kept at `saved_rsp_at` and its FS base at `fs_base_at`; its name is at
/// `name_at`. A thread past the table's capacity is left out.
pub(crate) fn added(tid: u32, saved_rsp_at: u64, fs_base_at: u64, name_at: u64) {
    if !arch::is_debugger_attached() {
        return;
    }
    if let Some(slot) = slot_of(0) {
        TABLE[slot + SAVED_RSP_AT].store(saved_rsp_at, Ordering::Relaxed);
        TABLE[slot + FS_BASE_AT].store(fs_base_at, Ordering::Relaxed);
        TABLE[slot + NAME_AT].store(name_at, Ordering::Relaxed);
        TABLE[slot + TID].store(u64::from(tid), Ordering::Release);
    }
}

/// Thread `tid` has ended.
pub(crate) fn removed(tid: u32) {
    if !arch::is_debugger_attached() || tid == 0 {
        return;
    }
    if let Some(slot) = slot_of(u64::from(tid)) {
        TABLE[slot + TID].store(0, Ordering::Release);
    }
}

/// CPU `cpu` runs thread `tid` from now on.
pub(crate) fn switched(cpu: usize, tid: u32) {
    if arch::is_debugger_attached() && cpu < MAX_CPUS as usize {
        TABLE[CURRENT + cpu].store(u64::from(tid), Ordering::Relaxed);
    }
}

/// The first word of the slot whose tid is `tid` (0: a free one).
fn slot_of(tid: u64) -> Option<usize> {
    (0..THREAD_SLOTS)
        .map(|i| SLOTS + i * SLOT_WORDS)
        .find(|&slot| TABLE[slot + TID].load(Ordering::Relaxed) == tid)
}
