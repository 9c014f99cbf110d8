//! GDB's threads: the guest's own threads when its kernel keeps the list
//! a debugger reads (`eremite_interface::trap::ThreadTable`), else the
//! vCPUs (thread N is vCPU N - 1: before the kernel has set its list up,
//! at the entry point).
//!
//! A thread that runs on a vCPU has that vCPU's registers; any other has
//! the registers the scheduler's switch saved on its stack, which are
//! enough for GDB to unwind it (read only: RIP is in the scheduler).

use std::num::NonZeroUsize;

use eremite_interface::layout::BOOT_INFO_ADDR;
use eremite_interface::trap::{THREAD_NAME_BYTES, ThreadSlot, ThreadTable};
use eremite_interface::{BootInfo, KernelReport};
use gdbstub::common::Tid;
use zerocopy::FromBytes;

use super::Guest;
use crate::arch::gdb::GdbRegisters;
use crate::kvm::debug::{HubState, Slot};

/// Where a GDB thread's registers are.
pub(super) enum Place {
    /// On this vCPU, parked.
    Cpu(usize),
    /// Switched away: where the scheduler keeps its registers.
    Saved(Saved),
}

/// Where the scheduler keeps a switched-away thread's stack pointer and
/// FS base.
#[derive(Clone, Copy)]
pub(super) struct Saved {
    saved_rsp_at: u64,
    fs_base_at: u64,
}

/// The guest's threads as its kernel listed them.
pub(super) struct Threads {
    current: Vec<u64>,
    slots: Vec<ThreadSlot>,
    /// Each slot's thread name, in `slots`' order.
    names: Vec<String>,
}

impl Guest<'_> {
    /// The kernel's thread list, if it keeps one and has a thread in it:
    /// read once a stop (it cannot change while every vCPU is parked; a
    /// resume forgets it).
    fn listed(&self, state: &HubState) -> Option<&Threads> {
        self.threads
            .get_or_init(|| super::cr3(state).and_then(|cr3| self.read_threads(cr3)))
            .as_ref()
    }

    fn read_threads(&self, cr3: u64) -> Option<Threads> {
        let report = BOOT_INFO_ADDR
            + (BootInfo::REPORT_OFFSET + std::mem::offset_of!(KernelReport, debug_threads)) as u64;
        let addr = self.ram.read_obj::<u64>(report).ok().filter(|&a| a != 0)?;
        let mut bytes = vec![0u8; size_of::<ThreadTable>()];
        if self.read_virtual(cr3, addr, &mut bytes) != bytes.len() {
            return None;
        }
        let table = ThreadTable::read_from_bytes(&bytes).ok()?;
        let slots: Vec<ThreadSlot> = table.slots.into_iter().filter(|s| s.tid != 0).collect();
        let names = slots
            .iter()
            .map(|slot| {
                let mut name = [0u8; THREAD_NAME_BYTES];
                let len = self.read_virtual(cr3, slot.name_at, &mut name);
                let name = &name[..len];
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                String::from_utf8_lossy(&name[..end]).into_owned()
            })
            .collect();
        (!slots.is_empty()).then(|| Threads {
            current: table.current.to_vec(),
            slots,
            names,
        })
    }

    /// The name the guest's kernel gave GDB's thread `tid`, if it listed
    /// one.
    pub(super) fn name(&self, state: &HubState, tid: Tid) -> Option<&str> {
        let threads = self.listed(state)?;
        let at = threads
            .slots
            .iter()
            .position(|s| s.tid == tid.get() as u64)?;
        Some(threads.names[at].as_str()).filter(|name| !name.is_empty())
    }

    /// Where GDB's thread `tid` is.
    pub(super) fn place(&self, state: &HubState, tid: Tid) -> Option<Place> {
        let Some(threads) = self.listed(state) else {
            return Some(Place::Cpu(tid.get() - 1));
        };
        let tid = tid.get() as u64;
        let running = threads.current.iter().enumerate().find(|&(cpu, &current)| {
            current == tid && matches!(state.cpus.get(cpu), Some(Slot::Parked(_)))
        });
        if let Some((cpu, _)) = running {
            return Some(Place::Cpu(cpu));
        }
        threads.slots.iter().find(|s| s.tid == tid).map(|s| {
            Place::Saved(Saved {
                saved_rsp_at: s.saved_rsp_at,
                fs_base_at: s.fs_base_at,
            })
        })
    }

    /// GDB's thread for what vCPU `cpu` runs.
    pub(super) fn tid_on(&self, state: &HubState, cpu: usize) -> Tid {
        let current = self
            .listed(state)
            .and_then(|threads| threads.current.get(cpu).copied())
            .and_then(|tid| usize::try_from(tid).ok())
            .and_then(NonZeroUsize::new);
        current.unwrap_or_else(|| NonZeroUsize::new(cpu + 1).expect("cpu + 1 is not zero"))
    }

    /// Every GDB thread.
    pub(super) fn tids(&self, state: &HubState) -> Vec<Tid> {
        match self.listed(state) {
            Some(threads) => threads
                .slots
                .iter()
                .filter_map(|s| usize::try_from(s.tid).ok().and_then(NonZeroUsize::new))
                .collect(),
            None => state
                .cpus
                .iter()
                .enumerate()
                .filter(|(_, slot)| !matches!(slot, Slot::Idle))
                .map(|(cpu, _)| NonZeroUsize::new(cpu + 1).expect("cpu + 1 is not zero"))
                .collect(),
        }
    }

    /// The registers the scheduler saved for a thread that is switched
    /// away; segment registers and GS base as `like`'s.
    pub(super) fn saved_registers(
        &self,
        cr3: u64,
        slot: Saved,
        like: &GdbRegisters,
    ) -> Option<GdbRegisters> {
        let word = |addr: u64| {
            let mut bytes = [0u8; 8];
            (self.read_virtual(cr3, addr, &mut bytes) == 8).then(|| u64::from_le_bytes(bytes))
        };
        let rsp = word(slot.saved_rsp_at)?;
        // MXCSR and FCW, R15, R14, R13, R12, RBX, RBP, return address.
        let mut saved = [0u64; 8];
        for (i, slot) in saved.iter_mut().enumerate() {
            *slot = word(rsp.checked_add(8 * i as u64)?)?;
        }
        let mut regs = GdbRegisters {
            fs_base: word(slot.fs_base_at).unwrap_or(0),
            gs_base: like.gs_base,
            ..GdbRegisters::default()
        };
        let core = &mut regs.core;
        core.segments = like.core.segments.clone();
        core.eflags = 0x202;
        core.rip = saved[7];
        // GDB's order: rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8..r15.
        core.regs[1] = saved[5];
        core.regs[6] = saved[6];
        core.regs[7] = rsp + 64;
        core.regs[12] = saved[4];
        core.regs[13] = saved[3];
        core.regs[14] = saved[2];
        core.regs[15] = saved[1];
        #[allow(clippy::cast_possible_truncation)]
        {
            core.mxcsr = saved[0] as u32;
            core.fpu.fctrl = (saved[0] >> 32) as u32 & 0xffff;
        }
        Some(regs)
    }
}
