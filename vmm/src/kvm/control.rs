//! Pausing every vCPU of a running VM for the control socket (`--api`,
//! `crate::api`): to let it rest, to snapshot it, or to stop it.
//!
//! [`ControlHub::pause`] asks every vCPU to park and kicks the running ones
//! out of `KVM_RUN` until all are parked. A vCPU parks between two runs,
//! after one more `KVM_RUN` with `immediate_exit` set, which finishes the
//! instruction of its last exit (an `out` is only complete, its RIP past
//! it, once KVM runs the vCPU again): only then is its state what the guest
//! would see. A parked vCPU saves that state ([`CpuState`]) for a snapshot
//! and waits. Application processors the guest has not started stay
//! where they wait (`CpuStarter`).
//!
//! Time the VM spends paused is left out of the guest's clocks, as the
//! time a debugger held it (`debug`): added to the boot info's
//! `stopped_ticks` before any vCPU runs again; the wall clock is then set
//! to the host's through `wall_offset_ns`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use eremite_interface::BootInfo;
use eremite_interface::layout::BOOT_INFO_ADDR;
use kvm_bindings::{Msrs, kvm_msr_entry};
use kvm_ioctls::VcpuFd;
use rustix::event::{EventfdFlags, eventfd};

use super::{HostStop, KvmError, RunningVm, ioctl, kick_signal};
use crate::arch::cpu_state::CpuState;
use crate::devices::{MmioBus, SavedCard};
use crate::hypercall::{CpuStart, Services};
use crate::lock;
use crate::memory::GuestRam;
use crate::sandbox::SavedFiles;
use eremite_interface::errno::{self, Errno};

/// How long [`ControlHub::pause`] waits for every vCPU to park.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// One vCPU at a pause.
#[derive(Clone, Debug)]
pub(crate) enum CpuAtPause {
    /// Not started by the guest yet.
    Waiting,
    /// Parked, with its state.
    Parked(Arc<CpuState>),
}

/// Where the clocks stood when the VM paused.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PausedClock {
    /// The guest's TSC as the first vCPU parked.
    pub(crate) tsc: u64,
    /// The boot info's `stopped_ticks` then.
    pub(crate) stopped_ticks: u64,
    /// The host's time then.
    pub(crate) since: Instant,
}

impl PausedClock {
    /// The guest's TSC, less the ticks its clocks leave out, at the pause:
    /// a restored VM sets `stopped_ticks` to its own TSC less this, and its
    /// clocks go on from the pause.
    pub(crate) fn frozen_ticks(&self) -> u64 {
        self.tsc.wrapping_sub(self.stopped_ticks)
    }
}

/// A snapshot the guest asked for (`Port::Snapshot`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct GuestRequest {
    /// Its request struct.
    pub(crate) addr: u64,
    /// Stop the VM once it is written.
    pub(crate) stop: bool,
}

struct HubState {
    /// Per vCPU: it runs the guest (between `started` and `finished`).
    is_active: Vec<bool>,
    /// Per vCPU: parked, with its state.
    parked: Vec<Option<Arc<CpuState>>>,
    clock: Option<PausedClock>,
    is_ended: bool,
    /// The guest's snapshot request, until the server takes it.
    guest_request: Option<GuestRequest>,
}

/// Where vCPUs park for the control socket.
pub(crate) struct ControlHub {
    state: Mutex<HubState>,
    changed: Condvar,
    /// Every running vCPU is to park (read between runs without the lock).
    is_pause_requested: AtomicBool,
    /// The MSRs a parked vCPU saves.
    msr_indices: Vec<u32>,
    tsc_khz: u64,
    /// Readable once the VM has ended.
    ended: OwnedFd,
    /// Readable while the guest's snapshot request waits.
    requested: OwnedFd,
    /// The guest may ask for snapshots (`--snapshot-to`).
    takes_guest_requests: bool,
}

/// The control socket could not pause the VM.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PauseError {
    #[error("the VM is already paused")]
    AlreadyPaused,
    #[error("the VM is not paused")]
    NotPaused,
    #[error("the VM has ended")]
    Ended,
    #[error("the vCPUs did not all stop within {0:?}")]
    Timeout(Duration),
}

impl ControlHub {
    pub(crate) fn new(
        cpus: usize,
        msr_indices: Vec<u32>,
        tsc_khz: u64,
        takes_guest_requests: bool,
    ) -> std::io::Result<Self> {
        Ok(Self {
            state: Mutex::new(HubState {
                is_active: vec![false; cpus],
                parked: vec![None; cpus],
                clock: None,
                is_ended: false,
                guest_request: None,
            }),
            changed: Condvar::new(),
            is_pause_requested: AtomicBool::new(false),
            msr_indices,
            tsc_khz,
            ended: eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)?,
            requested: eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)?,
            takes_guest_requests,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        lock(&self.state)
    }

    // --- the vCPU threads' side

    /// This vCPU thread runs the guest from now on.
    pub(super) fn started(&self, cpu: u32) {
        self.lock().is_active[cpu as usize] = true;
        self.changed.notify_all();
    }

    /// This vCPU thread is done.
    pub(super) fn finished(&self, cpu: u32) {
        self.lock().is_active[cpu as usize] = false;
        self.changed.notify_all();
    }

    /// The VM ended: nothing parks or waits any more.
    pub(super) fn end(&self) {
        self.lock().is_ended = true;
        self.changed.notify_all();
        let _ = rustix::io::write(&self.ended, &1u64.to_ne_bytes());
    }

    /// Whether this vCPU should park before it runs the guest again.
    pub(super) fn is_pause_requested(&self) -> bool {
        self.is_pause_requested.load(Ordering::SeqCst)
    }

    /// Finish this vCPU's last exit, save its state and wait until the VM
    /// resumes or ends.
    pub(super) fn park(&self, cpu: u32, fd: &mut VcpuFd) -> Result<(), KvmError> {
        fd.set_kvm_immediate_exit(1);
        let finished = fd.run().map(|_| ());
        fd.set_kvm_immediate_exit(0);
        match finished {
            Err(e) if e.errno() != libc::EINTR => {
                return Err(KvmError::Ioctl {
                    what: "finish the vCPU's last exit",
                    source: e,
                });
            }
            _ => {}
        }
        let saved = CpuState::save(fd, &self.msr_indices).map_err(|e| KvmError::Ioctl {
            what: e.what,
            source: e.source,
        })?;
        let tsc = guest_tsc(fd)?;
        let mut state = self.lock();
        if state.clock.is_none() {
            state.clock = Some(PausedClock {
                tsc,
                stopped_ticks: 0,
                since: Instant::now(),
            });
        }
        state.parked[cpu as usize] = Some(Arc::new(saved));
        self.changed.notify_all();
        while self.is_pause_requested() && !state.is_ended {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        state.parked[cpu as usize] = None;
        self.changed.notify_all();
        Ok(())
    }

    // --- the control socket's side

    /// Park every vCPU: kick the running ones until each has parked or
    /// waits to be started. Returns where the clocks stood.
    fn pause(
        &self,
        vm: &RunningVm<'_>,
        services: &Services<'_>,
        ram: &GuestRam,
    ) -> Result<PausedClock, PauseError> {
        if self.is_pause_requested.swap(true, Ordering::SeqCst) {
            return Err(PauseError::AlreadyPaused);
        }
        self.wait_parked(vm, services, ram)
    }

    /// Wait until every vCPU the guest started has parked (the pause was
    /// asked); on failure the pause is called off.
    fn wait_parked(
        &self,
        vm: &RunningVm<'_>,
        services: &Services<'_>,
        ram: &GuestRam,
    ) -> Result<PausedClock, PauseError> {
        let started = Instant::now();
        let mut state = self.lock();
        loop {
            if state.is_ended || vm.is_stopping.load(Ordering::SeqCst) {
                drop(state);
                self.is_pause_requested.store(false, Ordering::SeqCst);
                return Err(PauseError::Ended);
            }
            // Every vCPU the guest started has parked, and none is on its
            // way from its start to its loop (its start is taken, but it
            // is not active yet).
            let starts = services.cpus.starts();
            let is_all_parked = starts.iter().zip(&state.is_active).zip(&state.parked).all(
                |((start, is_active), parked)| match start {
                    CpuStart::Waiting | CpuStart::Stopped => !is_active,
                    CpuStart::Start(_) => false,
                    CpuStart::Started => *is_active && parked.is_some(),
                },
            );
            if is_all_parked {
                break;
            }
            if started.elapsed() > PAUSE_TIMEOUT {
                // The vCPUs that did park go on, their time parked left
                // out of the clocks as after any pause.
                self.release(state, ram);
                return Err(PauseError::Timeout(PAUSE_TIMEOUT));
            }
            drop(state);
            vm.kick_running();
            state = self
                .changed
                .wait_timeout(self.lock(), Duration::from_micros(200))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        let stopped_ticks = read_boot_word(ram, BootInfo::STOPPED_TICKS_OFFSET);
        let clock = state.clock.as_mut().expect("a parked vCPU set it");
        clock.stopped_ticks = stopped_ticks;
        Ok(*clock)
    }

    /// Each vCPU's place while the VM is paused: parked with its state, or
    /// waiting for its start.
    fn cpus(&self, services: &Services<'_>) -> Result<Vec<CpuAtPause>, PauseError> {
        let state = self.lock();
        if !self.is_pause_requested() || state.clock.is_none() {
            return Err(PauseError::NotPaused);
        }
        Ok(services
            .cpus
            .starts()
            .iter()
            .zip(&state.parked)
            .map(|(start, parked)| match (start, parked) {
                (CpuStart::Started, Some(saved)) => CpuAtPause::Parked(saved.clone()),
                _ => CpuAtPause::Waiting,
            })
            .collect())
    }

    /// Let every vCPU run again; the time paused is left out of the
    /// guest's clocks and its wall clock is set to the host's.
    fn resume(&self, ram: &GuestRam) -> Result<(), PauseError> {
        let state = self.lock();
        if !self.is_pause_requested() {
            return Err(PauseError::NotPaused);
        }
        self.release(state, ram);
        Ok(())
    }

    /// End a pause: add the time since the first vCPU parked to the
    /// guest's `stopped_ticks`, set its wall clock to the host's, and let
    /// the parked vCPUs go.
    fn release(&self, mut state: MutexGuard<'_, HubState>, ram: &GuestRam) {
        if let Some(clock) = state.clock.take() {
            let paused = u64::try_from(clock.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let ticks = u128::from(paused) * u128::from(self.tsc_khz) / 1_000_000;
            // Only the VMM writes it, and only while no vCPU runs.
            let before = read_boot_word(ram, BootInfo::STOPPED_TICKS_OFFSET);
            let stopped = before.wrapping_add(u64::try_from(ticks).unwrap_or(u64::MAX));
            write_boot_word(ram, BootInfo::STOPPED_TICKS_OFFSET, stopped);
            set_wall_clock(ram, clock.tsc.wrapping_sub(before), self.tsc_khz);
        }
        self.is_pause_requested.store(false, Ordering::SeqCst);
        drop(state);
        self.changed.notify_all();
    }
}

impl crate::hypercall::SnapshotRequests for ControlHub {
    fn request(&self, addr: u64, stop: bool) -> Result<(), Errno> {
        if !self.takes_guest_requests {
            return Err(errno::EOPNOTSUPP);
        }
        let mut state = self.lock();
        // Asked while a pause is under way (another vCPU's request, or the
        // control socket's): this one is not taken.
        if self.is_pause_requested.swap(true, Ordering::SeqCst) {
            return Err(errno::EBUSY);
        }
        state.guest_request = Some(GuestRequest { addr, stop });
        drop(state);
        let _ = rustix::io::write(&self.requested, &1u64.to_ne_bytes());
        Ok(())
    }
}

/// The guest's TSC (MSR IA32_TIME_STAMP_COUNTER) as this vCPU reads it.
pub(crate) fn guest_tsc(fd: &VcpuFd) -> Result<u64, KvmError> {
    const IA32_TSC: u32 = 0x10;
    let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: IA32_TSC,
        ..Default::default()
    }])
    .expect("one entry fits");
    let read = fd
        .get_msrs(&mut msrs)
        .map_err(ioctl("read the guest TSC"))?;
    if read != 1 {
        return Err(KvmError::Ioctl {
            what: "read the guest TSC",
            source: kvm_ioctls::Error::new(libc::EINVAL),
        });
    }
    Ok(msrs.as_slice()[0].data)
}

fn read_boot_word(ram: &GuestRam, offset: usize) -> u64 {
    // The boot info page is guest RAM for the whole run.
    ram.read_obj::<u64>(BOOT_INFO_ADDR + offset as u64)
        .unwrap_or(0)
}

fn write_boot_word(ram: &GuestRam, offset: usize, value: u64) {
    let _ = ram.write_obj(BOOT_INFO_ADDR + offset as u64, &value);
}

/// Set the guest's wall-clock offset so that its wall clock reads the
/// host's now, given `frozen_ticks` (its TSC less `stopped_ticks`, which
/// stand still while no vCPU runs): it reads its boot's wall time plus
/// its monotonic time plus the offset.
pub(crate) fn set_wall_clock(ram: &GuestRam, frozen_ticks: u64, tsc_khz: u64) {
    let boot_tsc = read_boot_word(ram, core::mem::offset_of!(BootInfo, boot_tsc));
    let boot_wall_ns = read_boot_word(ram, core::mem::offset_of!(BootInfo, boot_wall_ns));
    let ticks = frozen_ticks.wrapping_sub(boot_tsc);
    let monotonic_ns = if tsc_khz == 0 || ticks > u64::MAX / 2 {
        0
    } else {
        u64::try_from(u128::from(ticks) * 1_000_000 / u128::from(tsc_khz)).unwrap_or(u64::MAX)
    };
    let now_ns = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let offset = now_ns.wrapping_sub(boot_wall_ns.wrapping_add(monotonic_ns));
    write_boot_word(ram, BootInfo::WALL_OFFSET_OFFSET, offset);
}

/// Kick a vCPU thread out of `KVM_RUN`.
pub(super) fn kick(thread: libc::pthread_t) {
    // SAFETY: callers pass the id of a vCPU thread still inside
    // `Vcpu::serve` (read under `RunningVm::running`'s lock, which the
    // thread takes to remove itself before it returns), so the id is live;
    // the signal's handler does nothing, so delivering it only interrupts
    // `KVM_RUN`.
    unsafe { libc::pthread_kill(thread, kick_signal()) };
}

/// What the control socket's server can do to the running VM.
pub(crate) trait VmControl {
    /// Park every vCPU; where the clocks stood.
    fn pause(&self) -> Result<PausedClock, PauseError>;
    /// Let a paused VM run again.
    fn resume(&self) -> Result<(), PauseError>;
    /// Each vCPU's place while paused.
    fn cpus(&self) -> Result<Vec<CpuAtPause>, PauseError>;
    /// Whether the VM is paused (or pausing).
    fn is_paused(&self) -> bool;
    /// End the run, as `why` says.
    fn stop(&self, why: HostStop);
    /// The guest's open files on mounts, as a snapshot keeps them (an
    /// error if one cannot be kept).
    fn host_files(&self) -> Result<SavedFiles, String>;
    /// Stop the devices for a snapshot (the vCPUs are parked): their state.
    fn suspend_devices(&self) -> Vec<SavedCard>;
    /// Let the devices serve again.
    fn resume_devices(&self);
    /// Readable once the VM has ended.
    fn ended(&self) -> BorrowedFd<'_>;
    /// Readable while the guest's snapshot request waits.
    fn requested(&self) -> BorrowedFd<'_>;
    /// Take the guest's snapshot request, if one waits, once every vCPU
    /// has parked (its own pause was asked with the request).
    fn take_guest_request(&self) -> Option<Result<(GuestRequest, PausedClock), PauseError>>;
}

/// The running VM as the control socket's server sees it.
pub(crate) struct Controller<'h, 'v, 's> {
    pub(crate) hub: &'h ControlHub,
    pub(crate) vm: &'v RunningVm<'h>,
    pub(crate) services: &'v Services<'s>,
    pub(crate) ram: &'v GuestRam,
    pub(crate) bus: &'v MmioBus,
}

impl VmControl for Controller<'_, '_, '_> {
    fn pause(&self) -> Result<PausedClock, PauseError> {
        self.hub.pause(self.vm, self.services, self.ram)
    }

    fn resume(&self) -> Result<(), PauseError> {
        self.hub.resume(self.ram)
    }

    fn cpus(&self) -> Result<Vec<CpuAtPause>, PauseError> {
        self.hub.cpus(self.services)
    }

    fn is_paused(&self) -> bool {
        self.hub.is_pause_requested()
    }

    fn stop(&self, why: HostStop) {
        self.vm.stop_by_host(why);
    }

    fn host_files(&self) -> Result<SavedFiles, String> {
        lock(&self.services.host_fs).save()
    }

    fn suspend_devices(&self) -> Vec<SavedCard> {
        self.bus.suspend()
    }

    fn resume_devices(&self) {
        self.bus.resume();
    }

    fn ended(&self) -> BorrowedFd<'_> {
        self.hub.ended.as_fd()
    }

    fn requested(&self) -> BorrowedFd<'_> {
        self.hub.requested.as_fd()
    }

    fn take_guest_request(&self) -> Option<Result<(GuestRequest, PausedClock), PauseError>> {
        let mut count = [0u8; 8];
        let _ = rustix::io::read(&self.hub.requested, &mut count);
        let request = self.hub.lock().guest_request.take()?;
        Some(
            self.hub
                .wait_parked(self.vm, self.services, self.ram)
                .map(|clock| (request, clock)),
        )
    }
}
