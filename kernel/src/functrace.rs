//! Function tracing (`eremite run --trace`): entry and exit of every
//! function of an application built with `-Zinstrument-mcount`, with the
//! TSC, the thread and the nesting depth, into per-CPU buffers in guest
//! memory that the VMM reads when the run ends (also after a panic or a
//! fault; see `eremite_interface::trace`). No exit and no CPL0 entry
//! while recording.
//!
//! `arch::functrace` holds `mcount` and the return trampoline, and calls
//! [`enter`] and [`exit`]. Each thread has a return stack here (the
//! addresses its traced functions will return to, which the trampoline
//! took the place of); threads never move between CPUs, so a CPU's
//! record keeps the stacks of its threads and the scheduler tells it
//! which one runs ([`switched`]). Each CPU's record has a lock of its
//! own, which only that CPU takes while tracing, with preemption off.
//! When a buffer is full, later events are dropped (and counted) and the
//! calls they belong to are not hooked, so no exit is recorded without
//! its entry.
//!
//! ABI-neutral; below `sched`, which reports switches and exits.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use eremite_interface::layout::{self, MAX_CPUS};
use eremite_interface::trace::{self as iface, TraceBuffer, TraceEvent};
use eremite_interface::{BootInfo, KernelReport};

use crate::console::klog;
use crate::sync::Lock;
use crate::{arch, bootinfo, cpu};

/// Traced calls a thread may have open at once; deeper calls are not
/// traced (and counted as dropped).
const RETURN_STACK_DEPTH: usize = 1024;

/// Whether tracing is on (set once, at boot).
static IS_ON: AtomicBool = AtomicBool::new(false);

/// A traced call not yet returned: where it returns to and its site.
#[derive(Clone, Copy)]
struct Frame {
    ret: u64,
    site: u64,
}

/// One CPU's tracing state.
struct CpuTrace {
    /// The thread running on it.
    current: u32,
    /// The return stacks of its threads.
    stacks: BTreeMap<u32, Vec<Frame>>,
    /// Its events (never grown past its first capacity).
    events: Vec<TraceEvent>,
}

static CPUS: [Lock<Option<CpuTrace>>; MAX_CPUS as usize] =
    [const { Lock::new(None) }; MAX_CPUS as usize];

/// What the VMM reads: [`TraceBuffer`]'s layout, with atomics.
#[repr(C)]
struct Published {
    events: AtomicU64,
    capacity: AtomicU64,
    len: AtomicU64,
    dropped: AtomicU64,
}

const _: () = assert!(size_of::<Published>() == size_of::<TraceBuffer>());

static PUBLISHED: [Published; MAX_CPUS as usize] = [const {
    Published {
        events: AtomicU64::new(0),
        capacity: AtomicU64::new(0),
        len: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
    }
}; MAX_CPUS as usize];

/// Turn tracing on if the command line asks (`ftrace=BYTES`: the room for
/// events on all CPUs together), with `main_tid` running on this (the
/// boot) CPU. A buffer that cannot be allocated leaves tracing off, with
/// a log line.
pub(crate) fn init(main_tid: u32) {
    let Some(info) = bootinfo::info() else {
        return;
    };
    let Some(bytes) = bootinfo::strings(&info.cmdline).find_map(|token| {
        let value = token
            .strip_prefix(iface::CMDLINE_KEY.as_bytes())?
            .strip_prefix(b"=")?;
        core::str::from_utf8(value).ok()?.parse::<usize>().ok()
    }) else {
        return;
    };
    let cpus = bootinfo::cpu_count();
    let per_cpu = bytes / size_of::<TraceEvent>() / cpus;
    for (index, slot) in CPUS.iter().enumerate().take(cpus) {
        let mut events = Vec::new();
        if events.try_reserve_exact(per_cpu).is_err() {
            klog!("trace: no room for {bytes} bytes of trace buffers; tracing is off");
            return;
        }
        let published = &PUBLISHED[index];
        published
            .events
            .store(events.as_ptr() as u64, Ordering::SeqCst);
        published.capacity.store(per_cpu as u64, Ordering::SeqCst);
        *slot.lock() = Some(CpuTrace {
            current: if index == 0 { main_tid } else { 0 },
            stacks: BTreeMap::new(),
            events,
        });
    }
    arch::write_report_word(
        layout::BOOT_INFO_ADDR
            + (BootInfo::REPORT_OFFSET + core::mem::offset_of!(KernelReport, trace_buffers)) as u64,
        PUBLISHED.as_ptr() as u64,
    );
    IS_ON.store(true, Ordering::SeqCst);
    arch::trace_functions();
    klog!("trace: {per_cpu} events per CPU");
}

/// The scheduler switched this CPU (`core`) to thread `tid`.
pub(crate) fn switched(core: usize, tid: u32) {
    if IS_ON.load(Ordering::Relaxed)
        && let Some(cpu) = CPUS.get(core)
        && let Some(trace) = cpu.lock().as_mut()
    {
        trace.current = tid;
    }
}

/// Thread `tid` of CPU `core` has ended: its return stack goes.
pub(crate) fn exited(core: usize, tid: u32) {
    if IS_ON.load(Ordering::Relaxed)
        && let Some(cpu) = CPUS.get(core)
        && let Some(trace) = cpu.lock().as_mut()
    {
        trace.stacks.remove(&tid);
    }
}

/// `mcount`: the function whose call site is `site` was entered and will
/// return to `ret`. Non-zero: record its exit (the trampoline takes the
/// place of `ret`).
pub(crate) extern "C" fn enter(site: u64, ret: u64) -> u64 {
    let index = cpu::this().index as usize;
    // Taken already on this CPU: a call from inside the tracer, which
    // `mcount`'s per-CPU flag already keeps out; not traced either way.
    let Some(mut guard) = CPUS[index].try_lock() else {
        return 0;
    };
    let Some(trace) = guard.as_mut() else {
        return 0;
    };
    let tid = trace.current;
    let tsc = arch::rdtsc();
    let has_room = trace.events.len() < trace.events.capacity();
    let stack = trace.stacks.entry(tid).or_default();
    if !has_room
        || stack.len() >= RETURN_STACK_DEPTH
        || (stack.capacity() == 0 && stack.try_reserve_exact(RETURN_STACK_DEPTH).is_err())
    {
        PUBLISHED[index].dropped.fetch_add(1, Ordering::Relaxed);
        return 0;
    }
    let depth = u16::try_from(stack.len()).unwrap_or(u16::MAX);
    stack.push(Frame { ret, site });
    trace
        .events
        .push(TraceEvent::new(tsc, site, tid, depth, false));
    PUBLISHED[index]
        .len
        .store(trace.events.len() as u64, Ordering::Relaxed);
    1
}

/// The return trampoline: the running thread's latest traced call
/// returned; where it returns to.
pub(crate) extern "C" fn exit() -> u64 {
    let tsc = arch::rdtsc();
    let index = cpu::this().index as usize;
    let mut guard = CPUS[index].lock();
    let frame = guard.as_mut().and_then(|trace| {
        let tid = trace.current;
        let frame = trace.stacks.get_mut(&tid)?.pop()?;
        let depth = trace.stacks.get(&tid).map_or(0, |s| s.len());
        if trace.events.len() < trace.events.capacity() {
            let depth = u16::try_from(depth).unwrap_or(u16::MAX);
            trace
                .events
                .push(TraceEvent::new(tsc, frame.site, tid, depth, true));
            PUBLISHED[index]
                .len
                .store(trace.events.len() as u64, Ordering::Relaxed);
        } else {
            PUBLISHED[index].dropped.fetch_add(1, Ordering::Relaxed);
        }
        Some(frame)
    });
    drop(guard);
    match frame {
        Some(frame) => frame.ret,
        // Only a kernel bug (a switch not reported) could get here, and
        // there is no address to go back to.
        None => panic!("trace: a traced function returned on a thread with no traced call open"),
    }
}
