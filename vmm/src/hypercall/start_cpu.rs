//! `StartCpu`: the guest releases its application processors.
//!
//! Every vCPU thread exists from the start, but an application processor
//! waits in [`CpuStarter::wait_for_start`] until the boot CPU asks for it
//! with the registers to start with. Each CPU starts at most once.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use eremite_interface::errno::{self, Errno};

/// Where a CPU starts: RIP, RSP and its argument in RDI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StartRegs {
    pub(crate) rip: u64,
    pub(crate) rsp: u64,
    pub(crate) arg: u64,
}

/// Where one vCPU is in its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CpuStart {
    /// Waits for the guest to start it.
    Waiting,
    /// Started by the guest; its thread has not taken the registers yet.
    Start(StartRegs),
    /// Runs (or ran) the guest.
    Started,
    /// The VM stopped before it started.
    Stopped,
}

/// The start state of every vCPU, shared by the vCPU threads.
#[derive(Default)]
pub(crate) struct CpuStarter {
    slots: Mutex<Vec<CpuStart>>,
    changed: Condvar,
}

impl CpuStarter {
    fn slots(&self) -> MutexGuard<'_, Vec<CpuStart>> {
        crate::lock(&self.slots)
    }

    /// A VM of `cpus` vCPUs whose boot CPU runs and the others wait.
    #[cfg(test)]
    pub(crate) fn reset(&self, cpus: usize) {
        let mut slots = self.slots();
        *slots = vec![CpuStart::Waiting; cpus];
        if let Some(boot) = slots.first_mut() {
            *boot = CpuStart::Started;
        }
    }

    /// Every vCPU's start, as it is now.
    pub(crate) fn starts(&self) -> Vec<CpuStart> {
        self.slots().clone()
    }

    /// A VM whose vCPUs are where `starts` says (a restored one).
    pub(crate) fn set(&self, starts: &[CpuStart]) {
        *self.slots() = starts.to_vec();
        self.changed.notify_all();
    }

    /// The guest asks CPU `cpu` to start: `EINVAL` unless it exists and
    /// still waits.
    pub(crate) fn start(&self, cpu: u32, regs: StartRegs) -> Result<(), Errno> {
        let mut slots = self.slots();
        let slot = usize::try_from(cpu)
            .ok()
            .and_then(|i| slots.get_mut(i))
            .ok_or(errno::EINVAL)?;
        if *slot != CpuStart::Waiting {
            return Err(errno::EINVAL);
        }
        *slot = CpuStart::Start(regs);
        self.changed.notify_all();
        Ok(())
    }

    /// Block until CPU `cpu` is started (its registers) or the VM stops
    /// (`None`).
    pub(crate) fn wait_for_start(&self, cpu: u32) -> Option<StartRegs> {
        let index = usize::try_from(cpu).ok()?;
        let mut slots = self.slots();
        loop {
            match slots.get(index).copied()? {
                CpuStart::Waiting => {
                    slots = self
                        .changed
                        .wait(slots)
                        .unwrap_or_else(PoisonError::into_inner)
                }
                CpuStart::Start(regs) => {
                    slots[index] = CpuStart::Started;
                    return Some(regs);
                }
                CpuStart::Started | CpuStart::Stopped => return None,
            }
        }
    }

    /// The VM is stopping: CPUs that still wait never start.
    pub(crate) fn stop_all(&self) {
        let mut slots = self.slots();
        for slot in slots.iter_mut() {
            if matches!(slot, CpuStart::Waiting | CpuStart::Start(_)) {
                *slot = CpuStart::Stopped;
            }
        }
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGS: StartRegs = StartRegs {
        rip: 0x20_1000,
        rsp: 0x40_0000,
        arg: 7,
    };

    #[test]
    fn each_application_processor_starts_once() {
        let starter = CpuStarter::default();
        starter.reset(3);
        assert_eq!(starter.start(0, REGS), Err(errno::EINVAL), "boot CPU runs");
        assert_eq!(starter.start(3, REGS), Err(errno::EINVAL), "no such CPU");
        assert_eq!(starter.start(u32::MAX, REGS), Err(errno::EINVAL));
        assert_eq!(starter.start(2, REGS), Ok(()));
        assert_eq!(starter.start(2, REGS), Err(errno::EINVAL), "twice");
        assert_eq!(starter.wait_for_start(2), Some(REGS));
        assert_eq!(starter.start(2, REGS), Err(errno::EINVAL), "running");
    }

    #[test]
    fn a_waiting_cpu_wakes_when_started_or_stopped() {
        let starter = CpuStarter::default();
        starter.reset(3);
        std::thread::scope(|s| {
            let one = s.spawn(|| starter.wait_for_start(1));
            let two = s.spawn(|| starter.wait_for_start(2));
            starter.start(1, REGS).unwrap();
            assert_eq!(one.join().unwrap(), Some(REGS));
            starter.stop_all();
            assert_eq!(two.join().unwrap(), None);
        });
    }
}
