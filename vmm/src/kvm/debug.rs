//! All-stop debugging of the guest's vCPUs: the vCPU threads' half of
//! `eremite run --gdb` (the GDB server is `crate::gdb`).
//!
//! A vCPU parks, outside `KVM_RUN`, in two ways:
//! - **trapped**: the guest hit a breakpoint (`int3`, #BP), finished a
//!   single step (RFLAGS.TF, #DB) or, while GDB is attached, took any
//!   other CPU exception (before the guest's own handling of it, which
//!   goes on if GDB passes the signal on). Under PVM neither reaches the VMM as a
//!   `KVM_EXIT_DEBUG` (DESIGN.md, "Debugging under PVM"): the guest's
//!   CPL0 stub hands the saved frame to the VMM on
//!   [`trap::DEBUG_PORT`], and the registers GDB sees are the frame's.
//! - **asked**: the server wants every vCPU stopped (after another one
//!   trapped, or on Ctrl-C); it sets [`DebugHub::is_stop_requested`] and
//!   kicks the running ones out of `KVM_RUN` with the kick signal. Their
//!   registers come from KVM.
//!
//! A parked vCPU waits for the server to [`resume`](DebugHub::resume) it
//! with an action (continue or step) and writes back the registers GDB
//! changed: into the frame, which the stub then returns to, or with
//! `KVM_SET_REGS`. A step sets RFLAGS.TF; any other resume clears it.
//! Breakpoints are `int3` bytes the server writes into guest memory; a
//! vCPU that trapped on one reports the breakpoint's address, not the
//! byte after it, and resumes there.
//!
//! Time stands still while the VM is stopped: the time every vCPU was
//! parked is added up in the boot info's `stopped_ticks`, before any
//! vCPU runs again, and the guest's clocks leave it out
//! (`kernel/src/time.rs`), so a pause at a breakpoint does not make the
//! program's timeouts fire. (Under PVM, `rdtsc` at CPL3 reads the host's
//! counter: moving the vCPUs' TSC offset back does not reach the guest.)
//! The guest's wall clock then lags the host's by the time spent stopped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use eremite_interface::BootInfo;
use eremite_interface::hypercall::{self, ExitKind};
use eremite_interface::layout::BOOT_INFO_ADDR;
use eremite_interface::trap::{self, TrapFrame};
use gdbstub::common::Signal;
use kvm_bindings::{kvm_fpu, kvm_sregs, kvm_xsave};
use kvm_ioctls::VcpuFd;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::{EventfdFlags, eventfd};

use super::{KvmError, Stop, ioctl, kick_signal};
use crate::arch::gdb::GdbRegisters;
use crate::arch::registers::{self, RFLAGS_TF};
use crate::hypercall::Next;
use crate::lock;
use crate::memory::GuestRam;

/// Why a vCPU parked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Why {
    /// The server asked every vCPU to stop.
    Asked,
    /// It ran into one of the server's breakpoints.
    Breakpoint,
    /// A single step finished.
    Stepped,
    /// An `int3` that is not one of the server's (one the program has, or
    /// the kernel's stop at an abort).
    Trap,
    /// Any other CPU exception (this vector), before the guest handles it.
    Exception(u64),
    /// An instruction changed the watched memory at this address.
    Watch(u64),
}

/// How the server lets a parked vCPU go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    Continue,
    Step,
    /// Continue, and let the exception the vCPU stopped at go on to the
    /// guest's own handling (GDB passes the signal on); for a stop that
    /// was not an exception, as `Continue`.
    Deliver,
}

/// Where a parked vCPU's registers live until it resumes.
#[derive(Clone, Copy, Debug)]
enum Origin {
    /// In the guest's exception frame at this guest address.
    Frame(u64, TrapFrame),
    /// In KVM: the vCPU was kicked out of `KVM_RUN`.
    Kvm,
}

/// A vCPU stopped for the debugger.
#[derive(Clone, Debug)]
pub(crate) struct Parked {
    pub(crate) regs: GdbRegisters,
    /// The guest's page tables, for its addresses.
    pub(crate) cr3: u64,
    pub(crate) why: Why,
    /// The server has told GDB about this stop.
    pub(crate) is_reported: bool,
    /// Set by the server: the registers GDB wrote.
    pub(crate) is_changed: bool,
    /// Set by the server: go on.
    pub(crate) resume: Option<Resume>,
    origin: Origin,
}

/// Where one vCPU is.
#[derive(Clone, Debug)]
pub(crate) enum Slot {
    /// Not started by the guest yet, or ended.
    Idle,
    Running(libc::pthread_t),
    Parked(Box<Parked>),
}

/// How a vCPU's parking ended.
enum Parking {
    Resumed(Box<Parked>),
    /// The VM ends: the vCPU stops too.
    Ended,
    /// GDB killed the VM.
    Killed,
}

/// What a vCPU does after it parked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AfterPark {
    Run,
    /// GDB killed the VM: this vCPU stops it.
    Kill,
}

/// How the VM ended, for GDB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The program exited with this status.
    Exited(u8),
    /// Anything else, as the signal that would end a Linux process so:
    /// `SIGABRT` for an abort, `SIGSEGV` for a CPU exception, `SIGKILL`
    /// for the rest (a kernel failure, a stop by the host or by GDB).
    Terminated(Signal),
}

/// A write watchpoint: memory GDB watches, and what it held.
#[derive(Clone, Debug)]
pub(crate) struct Watch {
    pub(crate) addr: u64,
    pub(crate) old: Vec<u8>,
}

/// What the vCPU threads and the GDB server share.
pub(crate) struct HubState {
    pub(crate) cpus: Vec<Slot>,
    /// Breakpoints the server inserted: guest address, and the byte the
    /// `int3` replaced.
    pub(crate) breakpoints: BTreeMap<u64, u8>,
    pub(crate) ended: Option<Ended>,
    /// GDB went away: vCPUs no longer park, traps are fatal again.
    pub(crate) is_detached: bool,
    /// GDB killed the VM.
    is_killed: bool,
    /// Write watchpoints. While there are any, every vCPU runs one
    /// instruction at a time (RFLAGS.TF) and the memory is compared after
    /// each: the debug registers do not work under PVM.
    pub(crate) watches: Vec<Watch>,
    /// The guest's page tables, for the watched addresses.
    pub(crate) cr3: Option<u64>,
    /// Per vCPU: GDB asked for its last step (else the step is the
    /// watchpoints' own).
    is_gdb_step: Vec<bool>,
    /// Since when every vCPU has been parked.
    stopped_since: Option<Instant>,
    /// The time the VM has spent stopped in all.
    stopped_ns: u64,
}

impl HubState {
    /// The first watched address whose memory changed since GDB set the
    /// watchpoint or last heard of a change (then remembered as it is now).
    fn changed_watch(&mut self, ram: &GuestRam) -> Option<u64> {
        let cr3 = self.cr3?;
        for watch in &mut self.watches {
            let mut now = vec![0u8; watch.old.len()];
            if crate::arch::read_virtual(ram, cr3, watch.addr, &mut now) != now.len() {
                return None;
            }
            if now != watch.old {
                let at = watch
                    .old
                    .iter()
                    .zip(&now)
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                watch.old = now;
                return Some(watch.addr + at as u64);
            }
        }
        None
    }

    /// The VM is about to run again: add the time it was stopped to the
    /// guest's `stopped_ticks` (`tsc_khz` ticks a millisecond).
    fn account_stop(&mut self, ram: &GuestRam, tsc_khz: u64) {
        let Some(since) = self.stopped_since.take() else {
            return;
        };
        let stopped = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.stopped_ns = self.stopped_ns.saturating_add(stopped);
        let ticks = u128::from(self.stopped_ns) * u128::from(tsc_khz) / 1_000_000;
        let addr = BOOT_INFO_ADDR + BootInfo::STOPPED_TICKS_OFFSET as u64;
        // The boot info page is guest RAM for the whole run.
        let _ = ram.write_obj(addr, &u64::try_from(ticks).unwrap_or(u64::MAX));
    }
}

/// The meeting point of the vCPU threads and the GDB server.
pub(crate) struct DebugHub {
    state: Mutex<HubState>,
    changed: Condvar,
    /// Written when a vCPU parks or the VM ends: the server polls it.
    news: OwnedFd,
    /// Every running vCPU is to park (read between runs without the lock).
    is_stop_requested: AtomicBool,
    /// The guest's TSC frequency.
    tsc_khz: u64,
}

impl DebugHub {
    /// A hub for `cpus` vCPUs, all of them to park as soon as they run:
    /// the VM waits for the debugger at the entry point.
    pub(crate) fn new(cpus: usize, tsc_khz: u64) -> std::io::Result<Self> {
        Ok(Self {
            state: Mutex::new(HubState {
                cpus: vec![Slot::Idle; cpus],
                breakpoints: BTreeMap::new(),
                ended: None,
                is_detached: false,
                is_killed: false,
                watches: Vec::new(),
                cr3: None,
                is_gdb_step: vec![false; cpus],
                stopped_since: Some(Instant::now()),
                stopped_ns: 0,
            }),
            changed: Condvar::new(),
            news: eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)?,
            is_stop_requested: AtomicBool::new(true),
            tsc_khz,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, HubState> {
        lock(&self.state)
    }

    /// The descriptor the server polls for news.
    pub(crate) fn news(&self) -> BorrowedFd<'_> {
        self.news.as_fd()
    }

    /// Take the news the server was woken for (it then looks at the state).
    pub(crate) fn clear_news(&self) {
        let mut count = [0u8; 8];
        let _ = rustix::io::read(&self.news, &mut count);
    }

    fn tell_server(&self) {
        self.changed.notify_all();
        // A full counter (never, in practice) still wakes the poll.
        let _ = rustix::io::write(&self.news, &1u64.to_ne_bytes());
    }

    // --- the vCPU threads' side

    /// This vCPU thread runs the guest from now on.
    pub(super) fn started(&self, cpu: u32) {
        // SAFETY: `pthread_self` has no preconditions.
        let thread = unsafe { libc::pthread_self() };
        self.lock().cpus[cpu as usize] = Slot::Running(thread);
    }

    /// This vCPU thread is done.
    pub(super) fn finished(&self, cpu: u32) {
        self.lock().cpus[cpu as usize] = Slot::Idle;
        self.tell_server();
    }

    /// The VM stopped (`stop`): wake every parked vCPU and the server.
    pub(super) fn end(&self, stop: &Stop) {
        let ended = match stop {
            Stop::Guest(Next::Stop { kind, code }) => match kind {
                ExitKind::Exit => Ended::Exited(code.to_le_bytes()[0]),
                ExitKind::Abort => Ended::Terminated(Signal::SIGABRT),
                ExitKind::Exception => Ended::Terminated(Signal::SIGSEGV),
                ExitKind::KernelPanic | ExitKind::Deadlock => Ended::Terminated(Signal::SIGKILL),
            },
            _ => Ended::Terminated(Signal::SIGKILL),
        };
        self.lock().ended.get_or_insert(ended);
        self.tell_server();
    }

    /// Whether this vCPU should park before it runs the guest again.
    pub(super) fn is_stop_requested(&self) -> bool {
        self.is_stop_requested.load(Ordering::SeqCst)
    }

    /// Park a vCPU the server asked to stop, with its registers from KVM,
    /// until the server resumes it.
    pub(super) fn park_asked(&self, cpu: u32, fd: &VcpuFd) -> Result<AfterPark, KvmError> {
        let regs = fd.get_regs().map_err(ioctl("read the registers"))?;
        let (sregs, fpu, xsave) = other_registers(fd)?;
        let parked = Parked::new(
            registers::gdb_from_kvm(&regs, &sregs, &fpu, &xsave),
            sregs.cr3,
            Why::Asked,
            Origin::Kvm,
        );
        let parked = match self.park(cpu, parked) {
            Parking::Resumed(parked) => parked,
            Parking::Ended => return Ok(AfterPark::Run),
            Parking::Killed => return Ok(AfterPark::Kill),
        };
        let step = self.steps_after(cpu, parked.resume);
        if parked.is_changed || step || regs.rflags & RFLAGS_TF != 0 {
            let mut regs = regs;
            registers::to_kvm(&parked.regs.core, &mut regs);
            set_trap_flag(&mut regs.rflags, step);
            fd.set_regs(&regs).map_err(ioctl("write the registers"))?;
        }
        write_fpu_back(fd, fpu, &parked)?;
        Ok(AfterPark::Run)
    }

    /// The guest's #DB or #BP stub offered its frame (`value`: what it
    /// wrote to the port). Unless GDB went away, park with the frame's registers and,
    /// once resumed, write them back and mark the frame resumed. A frame
    /// outside guest memory is left alone (the exception is then fatal).
    pub(super) fn trap(
        &self,
        cpu: u32,
        value: u32,
        fd: &VcpuFd,
        ram: &GuestRam,
    ) -> Result<AfterPark, KvmError> {
        let addr = hypercall::decode_request_addr(value);
        let Ok(mut frame) = ram.read_obj::<TrapFrame>(addr) else {
            return Ok(AfterPark::Run);
        };
        let why = {
            let mut state = self.lock();
            if state.is_detached || state.ended.is_some() {
                return Ok(AfterPark::Run);
            }
            match frame.vector {
                trap::VECTOR_DEBUG => match state.changed_watch(ram) {
                    Some(addr) => Why::Watch(addr),
                    None if state.is_gdb_step[cpu as usize] => Why::Stepped,
                    None => {
                        // The watchpoints' own step, and nothing changed:
                        // on to the next instruction, without GDB (a stray
                        // step with no watchpoint left just goes on).
                        set_trap_flag(&mut frame.rflags, !state.watches.is_empty());
                        drop(state);
                        frame.vector = trap::RESUMED;
                        let _ = ram.write_obj(addr, &frame);
                        return Ok(AfterPark::Run);
                    }
                },
                trap::VECTOR_BREAKPOINT
                    if state.breakpoints.contains_key(&frame.rip.wrapping_sub(1)) =>
                {
                    // Report, and resume at, the breakpoint itself.
                    frame.rip -= 1;
                    Why::Breakpoint
                }
                trap::VECTOR_BREAKPOINT => Why::Trap,
                vector if vector < 32 => Why::Exception(vector),
                _ => return Ok(AfterPark::Run),
            }
        };
        let (sregs, fpu, xsave) = other_registers(fd)?;
        let parked = Parked::new(
            registers::gdb_from_frame(&frame, &sregs, &fpu, &xsave),
            sregs.cr3,
            why,
            Origin::Frame(addr, frame),
        );
        let parked = match self.park(cpu, parked) {
            Parking::Resumed(parked) => parked,
            // The VM ends: leave the frame, the stub reports the trap.
            Parking::Ended => return Ok(AfterPark::Run),
            Parking::Killed => return Ok(AfterPark::Kill),
        };
        let Origin::Frame(addr, mut frame) = parked.origin else {
            return Ok(AfterPark::Run);
        };
        registers::to_frame(&parked.regs.core, &mut frame);
        set_trap_flag(&mut frame.rflags, self.steps_after(cpu, parked.resume));
        let is_passed_on =
            matches!(why, Why::Exception(_)) && parked.resume == Some(Resume::Deliver);
        if !is_passed_on {
            frame.vector = trap::RESUMED;
        }
        write_fpu_back(fd, fpu, &parked)?;
        // The frame was inside guest memory a moment ago and RAM does not
        // shrink, so this write cannot fail.
        let _ = ram.write_obj(addr, &frame);
        Ok(AfterPark::Run)
    }

    /// Publish `parked` for vCPU `cpu` and wait until the server resumes
    /// it (with GDB's changes; after GDB went away, as if it continued).
    fn park(&self, cpu: u32, parked: Parked) -> Parking {
        let mut state = self.lock();
        let Slot::Running(thread) = state.cpus[cpu as usize] else {
            return Parking::Ended;
        };
        state.cr3 = Some(parked.cr3);
        state.cpus[cpu as usize] = Slot::Parked(Box::new(parked));
        self.tell_server();
        loop {
            let Slot::Parked(parked) = &state.cpus[cpu as usize] else {
                return Parking::Ended;
            };
            let outcome = if state.is_killed {
                Some(Parking::Killed)
            } else if state.ended.is_some() {
                Some(Parking::Ended)
            } else if state.is_detached {
                let mut parked = (**parked).clone();
                parked.resume = Some(Resume::Continue);
                Some(Parking::Resumed(Box::new(parked)))
            } else if parked.resume.is_some() {
                Some(Parking::Resumed(parked.clone()))
            } else {
                None
            };
            if let Some(outcome) = outcome {
                state.cpus[cpu as usize] = Slot::Running(thread);
                return outcome;
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Whether vCPU `cpu`, resumed with `resume`, runs one instruction
    /// only: GDB asked for a step, or watchpoints are set (then every
    /// instruction is followed by a look at the watched memory). Records
    /// which it is.
    fn steps_after(&self, cpu: u32, resume: Option<Resume>) -> bool {
        let mut state = self.lock();
        let is_gdb_step = resume == Some(Resume::Step);
        state.is_gdb_step[cpu as usize] = is_gdb_step;
        is_gdb_step || !state.watches.is_empty()
    }

    // --- the server's side

    /// Wait until vCPU `cpu` has parked (`true`) or the VM ended.
    pub(crate) fn wait_until_parked(&self, cpu: usize) -> bool {
        let mut state = self.lock();
        loop {
            if state.ended.is_some() {
                return false;
            }
            if matches!(state.cpus.get(cpu), Some(Slot::Parked(..))) {
                return true;
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Stop every running vCPU and wait until each has parked (or the VM
    /// ended). Vcpus the guest starts later park as they start.
    pub(crate) fn stop_all(&self) {
        self.is_stop_requested.store(true, Ordering::SeqCst);
        let mut state = self.lock();
        while state.ended.is_none() {
            let running: Vec<libc::pthread_t> = state
                .cpus
                .iter()
                .filter_map(|slot| match slot {
                    Slot::Running(thread) => Some(*thread),
                    _ => None,
                })
                .collect();
            if running.is_empty() {
                state.stopped_since.get_or_insert_with(Instant::now);
                return;
            }
            for thread in running {
                // SAFETY: `thread` is a vCPU thread that is in `Running`,
                // which it leaves (under this lock) before it ends, so the
                // id is live; the kick signal's handler does nothing but
                // interrupt `KVM_RUN`.
                unsafe { libc::pthread_kill(thread, kick_signal()) };
            }
            state = self
                .changed
                .wait_timeout(state, Duration::from_millis(1))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Let the parked vCPUs go on as `action` says (`None`: stay parked).
    pub(crate) fn resume(&self, ram: &GuestRam, action: impl Fn(usize) -> Option<Resume>) {
        let mut state = self.lock();
        self.is_stop_requested.store(false, Ordering::SeqCst);
        state.account_stop(ram, self.tsc_khz);
        for (cpu, slot) in state.cpus.iter_mut().enumerate() {
            if let Slot::Parked(parked) = slot {
                parked.resume = action(cpu);
            }
        }
        drop(state);
        self.changed.notify_all();
    }

    /// GDB killed the VM: the parked vCPUs stop it.
    pub(crate) fn kill(&self) {
        self.lock().is_killed = true;
        self.changed.notify_all();
    }

    /// Tell the guest whether GDB is attached, and whether it watches
    /// memory (`BootInfo::debugger_attached`: 0, 1, or 2 with watchpoints).
    pub(crate) fn set_attached(ram: &GuestRam, is_attached: bool, is_watching: bool) {
        let addr = BOOT_INFO_ADDR + BootInfo::DEBUGGER_OFFSET as u64;
        let word: u64 = match (is_attached, is_watching) {
            (false, _) => 0,
            (true, false) => 1,
            (true, true) => 2,
        };
        // The boot info page is guest RAM for the whole run.
        let _ = ram.write_obj(addr, &word);
    }

    /// GDB went away: every vCPU goes on and none parks again.
    pub(crate) fn detach(&self, ram: &GuestRam) {
        Self::set_attached(ram, false, false);
        let mut state = self.lock();
        state.is_detached = true;
        state.account_stop(ram, self.tsc_khz);
        drop(state);
        self.is_stop_requested.store(false, Ordering::SeqCst);
        self.changed.notify_all();
    }
}

impl Parked {
    fn new(regs: GdbRegisters, cr3: u64, why: Why, origin: Origin) -> Self {
        Self {
            regs,
            cr3,
            why,
            is_reported: false,
            is_changed: false,
            resume: None,
            origin,
        }
    }
}

/// What GDB sees of a vCPU besides its general registers (and the page
/// tables): system registers, x87/SSE, the XSAVE area (AVX).
fn other_registers(fd: &VcpuFd) -> Result<(kvm_sregs, kvm_fpu, kvm_xsave), KvmError> {
    let sregs = fd.get_sregs().map_err(ioctl("read the system registers"))?;
    let fpu = fd.get_fpu().map_err(ioctl("read the FPU registers"))?;
    let xsave = fd
        .get_xsave()
        .map_err(ioctl("read the extended registers"))?;
    Ok((sregs, fpu, xsave))
}

/// Give the vCPU the x87 and SSE registers GDB changed (`fpu`: as read
/// when it parked).
fn write_fpu_back(fd: &VcpuFd, mut fpu: kvm_fpu, parked: &Parked) -> Result<(), KvmError> {
    if parked.is_changed {
        registers::to_fpu(&parked.regs.core, &mut fpu);
        fd.set_fpu(&fpu).map_err(ioctl("write the FPU registers"))?;
    }
    Ok(())
}

fn set_trap_flag(rflags: &mut u64, is_set: bool) {
    if is_set {
        *rflags |= RFLAGS_TF;
    } else {
        *rflags &= !RFLAGS_TF;
    }
}
