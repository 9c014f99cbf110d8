//! The GDB server of `eremite run --gdb`: the remote serial protocol
//! (through the `gdbstub` crate) over one TCP connection, on a thread of
//! its own while the VM runs.
//!
//! The debugger sees an all-stop target whose threads are the vCPUs
//! (thread N is vCPU N - 1). It reads and writes registers of parked
//! vCPUs and guest memory by the guest's virtual addresses (through its
//! page tables), sets software breakpoints (`int3`, written past the
//! image's W^X protection, which only binds the guest), and resumes with
//! continue or single step per thread. The vCPU threads' half, and why
//! breakpoints and steps go through the guest's exception stubs under
//! PVM, is `kvm::debug`.
//!
//! Neighbours: `kvm::debug::DebugHub` (the parked vCPUs, their registers,
//! the breakpoint list), `arch::translate` (guest virtual to physical).

use std::io::{self, Read, Write};
use std::net::TcpStream;

use gdbstub::common::{Signal, Tid};
use gdbstub::conn::{Connection, ConnectionExt};
use gdbstub::stub::run_blocking::{BlockingEventLoop, Event, WaitForStopReasonError};
use gdbstub::stub::{DisconnectReason, GdbStub, MultiThreadStopReason};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwWatchpoint, HwWatchpointOps, SwBreakpoint, SwBreakpointOps,
    WatchKind,
};
use gdbstub::target::ext::section_offsets::{Offsets, SectionOffsets, SectionOffsetsOps};
use gdbstub::target::ext::thread_extra_info::{ThreadExtraInfo, ThreadExtraInfoOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use rustix::event::{PollFd, PollFlags, poll};

mod threads;

use threads::Place;

use crate::arch;
use crate::arch::gdb::{Amd64, GdbRegisters};
use crate::confine::{self, ThreadKind};
use crate::kvm::debug::{DebugHub, Ended, HubState, Resume, Slot, Watch, Why};
use crate::memory::GuestRam;

/// The `int3` instruction.
const INT3: u8 = 0xcc;

/// Serve GDB on `stream` until it detaches or kills the VM, or the VM
/// ends. The guest waits at its entry point until GDB resumes it.
/// `load_bias`: where a Linux program was loaded against its link-time
/// addresses (GDB asks, `qOffsets`, and relocates its symbols); a hermit
/// image runs where it was linked.
pub(crate) fn serve(hub: &DebugHub, ram: &GuestRam, stream: TcpStream, load_bias: u64) {
    if let Err(error) = confine::enter(ThreadKind::Debugger) {
        eprintln!("eremite: cannot confine the GDB server ({error}); GDB is not served");
        hub.detach(ram);
        return;
    }
    let mut guest = Guest {
        hub,
        ram,
        actions: Vec::new(),
        is_locked: false,
        load_bias,
        threads: std::cell::OnceCell::new(),
    };
    DebugHub::set_attached(ram, true, false);
    if !hub.wait_until_parked(0) {
        return;
    }
    let link = Link { stream, hub };
    let result = GdbStub::new(link).run_blocking::<EventLoop<'_>>(&mut guest);
    match result {
        Ok(DisconnectReason::Kill) => hub.kill(),
        Ok(DisconnectReason::TargetExited(_) | DisconnectReason::TargetTerminated(_)) => {}
        Ok(DisconnectReason::Disconnect) => hub.detach(ram),
        Err(error) => {
            if hub.lock().ended.is_none() {
                eprintln!("eremite: the GDB connection failed ({error}); the guest goes on");
                hub.detach(ram);
            }
        }
    }
}

/// The TCP connection, which gives up when the VM ends while GDB is
/// quiet (so the server's thread ends with the VM).
struct Link<'a> {
    stream: TcpStream,
    hub: &'a DebugHub,
}

impl Link<'_> {
    /// Wait until the connection has a byte to read (`true`) or the VM
    /// ended (`false`).
    fn wait_readable(&self) -> io::Result<bool> {
        loop {
            if self.hub.lock().ended.is_some() {
                return Ok(false);
            }
            let news = self.hub.news();
            let mut fds = [
                PollFd::new(&self.stream, PollFlags::IN),
                PollFd::new(&news, PollFlags::IN),
            ];
            poll(&mut fds, None).map_err(io::Error::from)?;
            if !fds[0].revents().is_empty() {
                return Ok(true);
            }
            if !fds[1].revents().is_empty() {
                self.hub.clear_news();
            }
        }
    }
}

impl Connection for Link<'_> {
    type Error = io::Error;

    fn write(&mut self, byte: u8) -> io::Result<()> {
        Write::write_all(&mut self.stream, &[byte])
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        Write::write_all(&mut self.stream, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Write::flush(&mut self.stream)
    }
}

impl ConnectionExt for Link<'_> {
    fn read(&mut self) -> io::Result<u8> {
        if !self.wait_readable()? {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the VM ended",
            ));
        }
        let mut byte = [0u8];
        self.stream.read_exact(&mut byte)?;
        Ok(byte[0])
    }

    fn peek(&mut self) -> io::Result<Option<u8>> {
        let mut fds = [PollFd::new(&self.stream, PollFlags::IN)];
        poll(&mut fds, Some(&rustix::event::Timespec::default())).map_err(io::Error::from)?;
        if fds[0].revents().is_empty() {
            return Ok(None);
        }
        let mut byte = [0u8];
        match self.stream.peek(&mut byte)? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(Some(byte[0])),
        }
    }
}

/// The guest as GDB's target.
struct Guest<'a> {
    hub: &'a DebugHub,
    ram: &'a GuestRam,
    /// This resume's action per vCPU, as GDB gave them.
    actions: Vec<Option<Resume>>,
    /// GDB named every thread that is to run (scheduler locking): the
    /// others stay parked.
    is_locked: bool,
    /// Where the program's symbols are, against its ELF file.
    load_bias: u64,
    /// The kernel's thread list at this stop (`threads.rs`).
    threads: std::cell::OnceCell<Option<threads::Threads>>,
}

/// The page tables of the parked vCPUs (all share one address space).
fn cr3(state: &HubState) -> Option<u64> {
    state.cpus.iter().find_map(|slot| match slot {
        Slot::Parked(parked) => Some(parked.cr3),
        _ => None,
    })
}

impl Guest<'_> {
    /// Copy guest memory at virtual `addr` into `data` as far as it is
    /// mapped; the bytes read.
    fn read_virtual(&self, cr3: u64, addr: u64, data: &mut [u8]) -> usize {
        arch::read_virtual(self.ram, cr3, addr, data)
    }

    /// Write `data` to guest memory at virtual `addr`; `false` if part of
    /// it is not mapped (the part before it is written).
    fn write_virtual(&self, cr3: u64, addr: u64, data: &[u8]) -> bool {
        arch::write_virtual(self.ram, cr3, addr, data)
    }

    /// The stop to report, if a vCPU parked for a reason of its own (or
    /// the VM ended): every other vCPU is stopped first.
    fn pending_stop(&mut self) -> Option<MultiThreadStopReason<u64>> {
        let first = {
            let state = self.hub.lock();
            if let Some(ended) = state.ended {
                return Some(match ended {
                    Ended::Exited(code) => MultiThreadStopReason::Exited(code),
                    Ended::Terminated(signal) => MultiThreadStopReason::Terminated(signal),
                });
            }
            state
                .cpus
                .iter()
                .enumerate()
                .find_map(|(cpu, slot)| match slot {
                    Slot::Parked(parked) if !parked.is_reported && parked.why != Why::Asked => {
                        Some((cpu, parked.why))
                    }
                    _ => None,
                })?
        };
        self.hub.stop_all();
        self.mark_reported();
        let (cpu, why) = first;
        let tid = self.tid_on(&self.hub.lock(), cpu);
        Some(match why {
            Why::Breakpoint => MultiThreadStopReason::SwBreak(tid),
            Why::Watch(addr) => MultiThreadStopReason::Watch {
                tid,
                kind: WatchKind::Write,
                addr,
            },
            Why::Exception(vector) => MultiThreadStopReason::SignalWithThread {
                tid,
                signal: signal_of(vector),
            },
            Why::Asked | Why::Stepped | Why::Trap => MultiThreadStopReason::SignalWithThread {
                tid,
                signal: Signal::SIGTRAP,
            },
        })
    }

    fn mark_reported(&self) {
        for slot in &mut self.hub.lock().cpus {
            if let Slot::Parked(parked) = slot {
                parked.is_reported = true;
            }
        }
    }
}

impl Target for Guest<'_> {
    type Arch = Amd64;
    type Error = String;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::MultiThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_section_offsets(&mut self) -> Option<SectionOffsetsOps<'_, Self>> {
        Some(self)
    }

    // Breakpoints are `int3` bytes the server writes and removes itself.
    fn guard_rail_implicit_sw_breakpoints(&self) -> bool {
        true
    }
}

impl MultiThreadBase for Guest<'_> {
    fn read_registers(&mut self, regs: &mut GdbRegisters, tid: Tid) -> TargetResult<(), Self> {
        let state = self.hub.lock();
        match self.place(&state, tid) {
            Some(Place::Cpu(cpu)) => match state.cpus.get(cpu) {
                Some(Slot::Parked(parked)) => {
                    *regs = parked.regs.clone();
                    Ok(())
                }
                _ => Err(TargetError::NonFatal),
            },
            Some(Place::Saved(saved)) => {
                let (cr3, like) = state
                    .cpus
                    .iter()
                    .find_map(|slot| match slot {
                        Slot::Parked(parked) => Some((parked.cr3, parked.regs.clone())),
                        _ => None,
                    })
                    .ok_or(TargetError::NonFatal)?;
                *regs = self
                    .saved_registers(cr3, saved, &like)
                    .ok_or(TargetError::NonFatal)?;
                Ok(())
            }
            None => Err(TargetError::NonFatal),
        }
    }

    /// Only a thread on a vCPU: a switched-away thread's registers are the
    /// scheduler's, and it does not run until the scheduler says so.
    fn write_registers(&mut self, regs: &GdbRegisters, tid: Tid) -> TargetResult<(), Self> {
        let mut state = self.hub.lock();
        let Some(Place::Cpu(cpu)) = self.place(&state, tid) else {
            return Err(TargetError::NonFatal);
        };
        match state.cpus.get_mut(cpu) {
            Some(Slot::Parked(parked)) => {
                parked.regs = regs.clone();
                parked.is_changed = true;
                Ok(())
            }
            _ => Err(TargetError::NonFatal),
        }
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], _tid: Tid) -> TargetResult<usize, Self> {
        let state = self.hub.lock();
        let cr3 = cr3(&state).ok_or(TargetError::NonFatal)?;
        let read = self.read_virtual(cr3, start, data);
        if read == 0 && !data.is_empty() {
            return Err(TargetError::NonFatal);
        }
        // Show the bytes the breakpoints replaced, as GDB expects.
        let end = start.saturating_add(read as u64);
        for (&addr, &byte) in state.breakpoints.range(start..end) {
            data[(addr - start) as usize] = byte;
        }
        Ok(read)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8], _tid: Tid) -> TargetResult<(), Self> {
        let mut state = self.hub.lock();
        let cr3 = cr3(&state).ok_or(TargetError::NonFatal)?;
        let mut bytes = data.to_vec();
        // A write over a breakpoint changes the byte it will restore.
        let end = start.saturating_add(data.len() as u64);
        for (&addr, original) in state.breakpoints.range_mut(start..end) {
            let at = (addr - start) as usize;
            *original = bytes[at];
            bytes[at] = INT3;
        }
        if self.write_virtual(cr3, start, &bytes) {
            Ok(())
        } else {
            Err(TargetError::NonFatal)
        }
    }

    fn list_active_threads(&mut self, thread_is_active: &mut dyn FnMut(Tid)) -> Result<(), String> {
        let tids = self.tids(&self.hub.lock());
        for tid in tids {
            thread_is_active(tid);
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }

    fn support_thread_extra_info(&mut self) -> Option<ThreadExtraInfoOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadResume for Guest<'_> {
    fn resume(&mut self) -> Result<(), String> {
        let default = if self.is_locked {
            None
        } else {
            Some(Resume::Continue)
        };
        let actions = std::mem::take(&mut self.actions);
        self.threads.take();
        self.hub.resume(self.ram, |cpu| {
            actions.get(cpu).copied().flatten().or(default)
        });
        Ok(())
    }

    fn clear_resume_actions(&mut self) -> Result<(), String> {
        self.actions = vec![None; self.hub.lock().cpus.len()];
        self.is_locked = false;
        Ok(())
    }

    fn set_resume_action_continue(
        &mut self,
        tid: Tid,
        signal: Option<Signal>,
    ) -> Result<(), String> {
        // GDB continues with the signal it stopped for when it passes it
        // on to the program (`handle SIGSEGV pass`, the default).
        let action = if signal.is_some() {
            Resume::Deliver
        } else {
            Resume::Continue
        };
        self.set_action(tid, action)
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

impl Guest<'_> {
    /// `action` for GDB's thread `tid`: for the vCPU that runs it (a
    /// switched-away thread runs when its scheduler picks it).
    fn set_action(&mut self, tid: Tid, action: Resume) -> Result<(), String> {
        let place = self.place(&self.hub.lock(), tid);
        if let Some(Place::Cpu(cpu)) = place
            && let Some(slot) = self.actions.get_mut(cpu)
        {
            *slot = Some(action);
        }
        Ok(())
    }
}

impl MultiThreadSingleStep for Guest<'_> {
    fn set_resume_action_step(&mut self, tid: Tid, _signal: Option<Signal>) -> Result<(), String> {
        self.set_action(tid, Resume::Step)
    }
}

impl MultiThreadSchedulerLocking for Guest<'_> {
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), String> {
        self.is_locked = true;
        Ok(())
    }
}

impl Breakpoints for Guest<'_> {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl HwWatchpoint for Guest<'_> {
    /// Write watchpoints only (GDB's `watch`), of up to 64 bytes; the
    /// memory is compared after every instruction (`kvm::debug`).
    fn add_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        if kind != WatchKind::Write || len == 0 || len > 64 {
            return Ok(false);
        }
        let mut state = self.hub.lock();
        let cr3 = cr3(&state).ok_or(TargetError::NonFatal)?;
        let mut old = vec![0u8; len as usize];
        if self.read_virtual(cr3, addr, &mut old) != old.len() {
            return Ok(false);
        }
        state.watches.push(Watch { addr, old });
        DebugHub::set_attached(self.ram, true, true);
        Ok(true)
    }

    fn remove_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        let mut state = self.hub.lock();
        let before = state.watches.len();
        state
            .watches
            .retain(|w| !(kind == WatchKind::Write && w.addr == addr && w.old.len() as u64 == len));
        DebugHub::set_attached(self.ram, true, !state.watches.is_empty());
        Ok(state.watches.len() < before)
    }
}

impl SwBreakpoint for Guest<'_> {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let mut state = self.hub.lock();
        if state.breakpoints.contains_key(&addr) {
            return Ok(true);
        }
        let cr3 = cr3(&state).ok_or(TargetError::NonFatal)?;
        let mut original = [0u8];
        if self.read_virtual(cr3, addr, &mut original) != 1
            || !self.write_virtual(cr3, addr, &[INT3])
        {
            return Ok(false);
        }
        state.breakpoints.insert(addr, original[0]);
        Ok(true)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let mut state = self.hub.lock();
        let Some(original) = state.breakpoints.remove(&addr) else {
            return Ok(false);
        };
        let cr3 = cr3(&state).ok_or(TargetError::NonFatal)?;
        Ok(self.write_virtual(cr3, addr, &[original]))
    }
}

impl SectionOffsets for Guest<'_> {
    fn get_section_offsets(&mut self) -> Result<Offsets<u64>, String> {
        let bias = self.load_bias;
        Ok(Offsets::Sections {
            text: bias,
            data: bias,
            bss: Some(bias),
        })
    }
}

impl ThreadExtraInfo for Guest<'_> {
    fn thread_extra_info(&self, tid: Tid, buf: &mut [u8]) -> Result<usize, String> {
        let state = self.hub.lock();
        let place = match self.place(&state, tid) {
            Some(Place::Cpu(cpu)) => format!("vCPU {cpu}"),
            _ => "waiting".to_string(),
        };
        // GDB shows this in brackets after the thread: `Thread 3 (worker,
        // vCPU 1)`; gdbstub has no `qXfer:threads` to give the name alone.
        let info = match self.name(&state, tid) {
            Some(name) => format!("{name}, {place}"),
            None => place,
        };
        let n = info.len().min(buf.len());
        buf[..n].copy_from_slice(&info.as_bytes()[..n]);
        Ok(n)
    }
}

/// The signal a Linux process would get for CPU exception `vector`, as
/// GDB expects to see it (signal(7); SDM vol. 3A, 6.3.1).
fn signal_of(vector: u64) -> Signal {
    match vector {
        0 | 16 | 19 => Signal::SIGFPE,
        6 => Signal::SIGILL,
        17 => Signal::SIGBUS,
        _ => Signal::SIGSEGV,
    }
}

/// How the server waits while the guest runs.
struct EventLoop<'a>(std::marker::PhantomData<&'a ()>);

impl<'a> BlockingEventLoop for EventLoop<'a> {
    type Target = Guest<'a>;
    type Connection = Link<'a>;
    type StopReason = MultiThreadStopReason<u64>;

    /// Until a vCPU parks for a reason of its own, the VM ends, or GDB
    /// sends a byte (Ctrl-C).
    fn wait_for_stop_reason(
        target: &mut Guest<'a>,
        conn: &mut Link<'a>,
    ) -> Result<Event<Self::StopReason>, WaitForStopReasonError<String, io::Error>> {
        loop {
            if let Some(stop) = target.pending_stop() {
                return Ok(Event::TargetStopped(stop));
            }
            let news = target.hub.news();
            let mut fds = [
                PollFd::new(&conn.stream, PollFlags::IN),
                PollFd::new(&news, PollFlags::IN),
            ];
            poll(&mut fds, None)
                .map_err(|e| WaitForStopReasonError::Connection(io::Error::from(e)))?;
            if !fds[1].revents().is_empty() {
                target.hub.clear_news();
            }
            if !fds[0].revents().is_empty() {
                let mut byte = [0u8];
                conn.stream
                    .read_exact(&mut byte)
                    .map_err(WaitForStopReasonError::Connection)?;
                return Ok(Event::IncomingData(byte[0]));
            }
        }
    }

    /// Ctrl-C: stop every vCPU.
    fn on_interrupt(target: &mut Guest<'a>) -> Result<Option<Self::StopReason>, String> {
        target.hub.stop_all();
        target.mark_reported();
        let state = target.hub.lock();
        let cpu = state
            .cpus
            .iter()
            .position(|slot| matches!(slot, Slot::Parked(..)))
            .unwrap_or(0);
        Ok(Some(MultiThreadStopReason::SignalWithThread {
            tid: target.tid_on(&state, cpu),
            signal: Signal::SIGINT,
        }))
    }
}
