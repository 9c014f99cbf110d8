//! The only code that talks to KVM: create the VM, give it guest RAM,
//! prepare the vCPUs, and run each on its own thread, decoding each exit.
//!
//! The boot vCPU starts at the image's entry; the others wait until the
//! guest starts them with the `StartCpu` hypercall. When any vCPU stops
//! the VM (the guest's `Exit`, a triple fault, a KVM error), the main
//! thread kicks the others out of `KVM_RUN` with a signal and joins them.
//!
//! Exits are expensive (tens of microseconds on the PVM hosts we run on),
//! so every one is counted in [`ExitStats`] and shown by `--stats`. The
//! virtio devices' fast paths take none: a queue notification signals an
//! eventfd inside KVM (`KVM_IOEVENTFD`), and a device interrupt is an
//! eventfd that KVM turns into an MSI (`KVM_IRQFD` over a
//! `KVM_SET_GSI_ROUTING` entry); see [`attach_devices`]. Other accesses to
//! a device's registers exit and are served by the [`MmioBus`].
//! `SIGINT`, `SIGTERM`, `SIGHUP` and `SIGQUIT` sent to eremite are
//! forwarded to the guest as an MSI of their own ([`host_signals`]); the
//! main thread ends the run itself when one comes twice or `--timeout`
//! passes ([`HostStop`]).

#![allow(unsafe_code)]

pub(crate) mod control;
pub(crate) mod debug;
pub(crate) mod host_signals;
mod sampler;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use eremite_interface::hypercall::{ExitKind, Port};
use eremite_interface::trap;
use kvm_bindings::{
    KVM_IRQ_ROUTING_MSI, KVM_MAX_CPUID_ENTRIES, KvmIrqRouting, Msrs, kvm_irq_routing_entry,
    kvm_irq_routing_msi, kvm_msr_entry, kvm_userspace_memory_region, kvm_xcrs,
};
use kvm_ioctls::{IoEventAddress, Kvm, VcpuExit, VcpuFd, VmFd};

use crate::affinity::Placement;
use crate::confine::{self, ThreadKind};
use crate::devices::{MmioBus, QUEUE_NOTIFY_OFFSET};
use crate::hypercall::{self, Next, Services};
use crate::memory::GuestRam;
use crate::profile::{Interrupted, Samples};
use crate::{arch, lock};

/// Something KVM refused.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// `/dev/kvm` cannot be opened.
    #[error(
        "cannot open /dev/kvm: {0} (eremite needs KVM: is the kvm module loaded and may this user open /dev/kvm?)"
    )]
    Unavailable(kvm_ioctls::Error),
    /// An ioctl failed.
    #[error("KVM refused to {what}: {source}")]
    Ioctl {
        /// What the VMM was doing.
        what: &'static str,
        /// The error KVM returned.
        source: kvm_ioctls::Error,
    },
    /// A vCPU thread could not be pinned (`--pin-vcpus`).
    #[error(transparent)]
    Pin(#[from] crate::affinity::AffinityError),
    /// A thread could not enter its seccomp filter.
    #[error("cannot confine the {0} thread: {1}")]
    Confine(&'static str, std::io::Error),
}

fn ioctl(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> KvmError {
    move |source| KvmError::Ioctl { what, source }
}

/// VM exits by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExitStats {
    /// Hypercalls, by port (in [`Port::ALL`] order).
    pub hypercalls: [u64; Port::ALL.len()],
    /// Hypercalls the VMM refused: the request could not be read (bad
    /// address or width; not counted under its port) or had bad fields
    /// (also counted under its port).
    pub bad_hypercalls: u64,
    /// Port I/O to ports that are not hypercalls.
    pub other_io: u64,
    /// Exception frames the guest's stubs offered to a debugger (`--gdb`:
    /// breakpoints, steps, and with GDB attached any exception).
    pub debug_traps: u64,
    /// MMIO accesses to a virtio device's registers (`QueueNotify` writes
    /// that KVM hands to an ioeventfd take no exit and are not counted).
    pub device_mmio: u64,
    /// Other MMIO accesses outside RAM.
    pub mmio: u64,
    /// `KVM_RUN` interrupted by a host signal.
    pub interrupted: u64,
}

impl ExitStats {
    /// Add another vCPU's counts.
    fn add(&mut self, other: &ExitStats) {
        for (mine, theirs) in self.hypercalls.iter_mut().zip(other.hypercalls) {
            *mine += theirs;
        }
        self.bad_hypercalls += other.bad_hypercalls;
        self.other_io += other.other_io;
        self.debug_traps += other.debug_traps;
        self.device_mmio += other.device_mmio;
        self.mmio += other.mmio;
        self.interrupted += other.interrupted;
    }

    /// All exits counted.
    pub fn total(&self) -> u64 {
        self.hypercalls.iter().sum::<u64>()
            + self.bad_hypercalls
            + self.other_io
            + self.debug_traps
            + self.device_mmio
            + self.mmio
            + self.interrupted
    }
}

/// Why a vCPU stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The guest asked to stop.
    Guest(Next),
    /// Triple fault (KVM_EXIT_SHUTDOWN).
    Shutdown(CpuState),
    /// `hlt` with nothing to wake the vCPU.
    Halted(CpuState),
    /// KVM could not run or emulate the guest.
    InternalError { suberror: u32, state: CpuState },
    /// KVM could not enter the guest at all.
    FailEntry { reason: u64, state: CpuState },
    /// An exit this VMM does not expect.
    Unexpected { exit: &'static str, state: CpuState },
    /// The host ended the run ([`HostStop`]).
    Host(HostStop),
}

/// Why the VMM itself ended a run the guest had not ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostStop {
    /// The run took longer than the deadline (`--timeout`).
    Timeout(std::time::Duration),
    /// A second forwarded signal (`SIGINT`, `SIGTERM`, ...) came while
    /// the guest had not ended after the first (`host_signals`).
    Signal(i32),
    /// GDB killed it (`--gdb`).
    Debugger,
    /// The control socket asked (`eremite vm SOCKET stop`).
    Control,
    /// A snapshot that was to end the run was written (`eremite vm SOCKET
    /// snapshot DIR --stop`, `eremite::vm::snapshot_and_stop`).
    Snapshot,
}

/// Where a vCPU was when it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuState {
    /// Which vCPU.
    pub cpu: u32,
    /// Instruction pointer.
    pub rip: u64,
    /// Current privilege level (from CS).
    pub cpl: u8,
}

/// GSIs (interrupt routes) that the split irqchip reserves for a
/// userspace IOAPIC, as QEMU does; we have none, but device routes start
/// above them.
const IOAPIC_PINS: u32 = 24;

/// MSI address (Intel SDM vol. 3A, 11.11.1): `0xFEE` in bits 31..20, the
/// destination APIC ID in bits 19..12, redirection hint and destination
/// mode 0 (physical). Data (11.11.2): the vector in bits 7..0, delivery
/// mode 0 (fixed) and trigger mode 0 (edge).
pub(crate) const MSI_ADDRESS_BASE: u32 = 0xFEE0_0000;

/// A VM with its vCPUs, its RAM and its devices registered.
pub(crate) struct Machine {
    kvm: Kvm,
    _vm: VmFd,
    vcpus: Vec<VcpuFd>,
    /// Where each vCPU starts the run: the boot vCPU running and the
    /// others waiting for the guest, unless restored from a snapshot.
    starts: Vec<hypercall::CpuStart>,
}

/// Register each device's fast paths with KVM: its queues' notification
/// events (`KVM_IOEVENTFD` on `QueueNotify`, 4 bytes, datamatch the queue
/// index: such a write signals the event without an exit; other values and
/// widths still exit) and its interrupt event, bound (`KVM_IRQFD`) to GSI
/// `IOAPIC_PINS + n`, which `KVM_SET_GSI_ROUTING` routes as an MSI with the
/// device's vector to CPU 0 (fixed delivery, edge, physical destination
/// APIC ID 0). A write to the event then interrupts the guest without an
/// exit.
fn attach_devices(vm: &VmFd, bus: &MmioBus) -> Result<(), KvmError> {
    let gsi = |n: usize| IOAPIC_PINS + u32::try_from(n).expect("at most MAX_VIRTIO_DEVICES");
    let entries: Vec<kvm_irq_routing_entry> = bus
        .slots()
        .iter()
        .enumerate()
        .map(|(n, slot)| {
            let mut entry = kvm_irq_routing_entry {
                gsi: gsi(n),
                type_: KVM_IRQ_ROUTING_MSI,
                ..Default::default()
            };
            entry.u.msi = kvm_irq_routing_msi {
                address_lo: MSI_ADDRESS_BASE,
                address_hi: 0,
                data: u32::from(slot.window.vector),
                ..Default::default()
            };
            entry
        })
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    let routing = KvmIrqRouting::from_entries(&entries).map_err(|_| KvmError::Ioctl {
        what: "route device interrupts (too many routes)",
        source: kvm_ioctls::Error::new(libc::EINVAL),
    })?;
    vm.set_gsi_routing(&routing)
        .map_err(ioctl("route device interrupts (KVM_SET_GSI_ROUTING)"))?;
    for (n, slot) in bus.slots().iter().enumerate() {
        let card = lock(&slot.card);
        for (queue, event) in card.queue_notify_events() {
            let addr = IoEventAddress::Mmio(slot.window.addr + QUEUE_NOTIFY_OFFSET);
            vm.register_ioevent(event, &addr, queue)
                .map_err(ioctl("register a device notification (KVM_IOEVENTFD)"))?;
        }
        vm.register_irqfd(card.interrupt_event(), gsi(n))
            .map_err(ioctl("bind a device interrupt (KVM_IRQFD)"))?;
    }
    Ok(())
}

impl Machine {
    /// Open KVM, create a VM over `ram` with `cpus` vCPUs and the devices
    /// on `bus`.
    pub(crate) fn new(ram: &GuestRam, cpus: u32, bus: &MmioBus) -> Result<Self, KvmError> {
        let kvm = Kvm::new().map_err(KvmError::Unavailable)?;
        let vm = kvm.create_vm().map_err(ioctl("create a VM"))?;
        // One slot per RAM range (below and above the 3–4 GiB hole).
        for (slot, range) in (0u32..).zip(ram.host_regions()) {
            let region = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: range.guest_addr,
                memory_size: range.len,
                userspace_addr: range.host_addr,
            };
            // SAFETY: the region describes one of `ram`'s mappings exactly
            // (guest address, host address and size from `GuestRam`), and
            // the ranges are disjoint. The mappings stay for as long as the
            // VM exists: `run` (the only user of the VM) borrows `ram` and
            // the VM is dropped with this `Machine` before `ram` in
            // `crate::run`.
            unsafe { vm.set_user_memory_region(region) }.map_err(ioctl("register guest memory"))?;
        }
        // The in-kernel local APIC: its timer interrupts the guest and its
        // registers are served inside the host kernel, without a VMM exit.
        // "Split" mode leaves out the PIC and IOAPIC, which nothing uses:
        // with the full irqchip (KVM_CREATE_IRQCHIP), tearing the vCPU
        // down took about 11 ms here, tripling `eremite run hello`'s wall
        // time; split, it costs nothing measurable. The argument is the
        // number of IOAPIC routes reserved for userspace (24, as QEMU).
        let mut cap = kvm_bindings::kvm_enable_cap {
            cap: kvm_bindings::KVM_CAP_SPLIT_IRQCHIP,
            ..Default::default()
        };
        cap.args[0] = u64::from(IOAPIC_PINS);
        vm.enable_cap(&cap)
            .map_err(ioctl("create the interrupt controller"))?;
        // The vCPU index is also its local APIC ID (KVM's default).
        let vcpus = (0..cpus)
            .map(|i| vm.create_vcpu(u64::from(i)).map_err(ioctl("create a vCPU")))
            .collect::<Result<_, _>>()?;
        // Last, so that it delays no setup step. On this host's kernel
        // (6.18, HZ=250) each KVM_IOEVENTFD frees the old I/O bus after a
        // normal SRCU grace period (`call_srcu`), and closing the VM waits
        // for it (`srcu_barrier`): a VM with a device that ends within
        // about 15 ms of its start waits out the rest then (hello with
        // `--net`: 4 ms → 19 ms in all), a longer one waits for nothing.
        // Registering the events before guest memory instead makes the
        // memory's expedited grace period wait for that one during setup:
        // 4–11 ms more before every boot (hello: 11 ms in all).
        attach_devices(&vm, bus)?;
        let starts = (0..cpus)
            .map(|cpu| match cpu {
                0 => hypercall::CpuStart::Started,
                _ => hypercall::CpuStart::Waiting,
            })
            .collect();
        Ok(Self {
            kvm,
            _vm: vm,
            vcpus,
            starts,
        })
    }

    /// The VM's file descriptor (for `KVM_SIGNAL_MSI` from a signal
    /// handler, see `host_signals`).
    pub(crate) fn vm_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd as _;
        self._vm.as_raw_fd()
    }

    /// Put every vCPU in 64-bit mode at CPL3 (see [`arch`]): CPUID, XCR0,
    /// control and segment registers; the boot vCPU also gets its
    /// registers, to start at `entry`. With `syscall_entries` (a Linux
    /// program), vCPU `n`'s `syscall` goes to entry `n`.
    pub(crate) fn prepare_cpus(
        &mut self,
        entry: u64,
        syscall_entries: &[u64],
    ) -> Result<(), KvmError> {
        let cpuid = self.supported_cpuid()?;
        let leaf = |function: u32, index: u32| {
            cpuid
                .as_slice()
                .iter()
                .find(|e| e.function == function && e.index == index)
                .copied()
        };
        let has_xsave = leaf(1, 0).is_some_and(|e| e.ecx & (1 << 26) != 0);
        let supported_xcr0 =
            leaf(0xd, 0).map_or(0b11, |e| u64::from(e.edx) << 32 | u64::from(e.eax));
        for (cpu, vcpu) in (0u32..).zip(&self.vcpus) {
            vcpu.set_cpuid2(&cpuid)
                .map_err(ioctl("set the vCPU's CPUID"))?;
            let sregs = vcpu
                .get_sregs()
                .map_err(ioctl("read the special registers"))?;
            vcpu.set_sregs(&arch::long_mode_sregs(sregs, cpu, has_xsave))
                .map_err(ioctl("set the special registers"))?;
            if has_xsave {
                let mut xcrs = kvm_xcrs {
                    nr_xcrs: 1,
                    ..Default::default()
                };
                xcrs.xcrs[0].xcr = 0;
                xcrs.xcrs[0].value = arch::xcr0(supported_xcr0);
                vcpu.set_xcrs(&xcrs).map_err(ioctl("set XCR0"))?;
            }
            if let Some(&lstar) = syscall_entries.get(cpu as usize) {
                let entries = arch::syscall_msrs(lstar).map(|(index, data)| kvm_msr_entry {
                    index,
                    data,
                    ..Default::default()
                });
                let msrs = Msrs::from_entries(&entries).expect("three entries fit");
                let written = vcpu
                    .set_msrs(&msrs)
                    .map_err(ioctl("set the system-call MSRs"))?;
                if written != entries.len() {
                    return Err(KvmError::Ioctl {
                        what: "set the system-call MSRs",
                        source: kvm_ioctls::Error::new(libc::EINVAL),
                    });
                }
            }
        }
        self.vcpus[0]
            .set_regs(&arch::entry_regs(entry))
            .map_err(ioctl("set the registers"))
    }

    /// The CPUID every vCPU gets: all KVM supports on this host.
    pub(crate) fn supported_cpuid(&self) -> Result<kvm_bindings::CpuId, KvmError> {
        self.kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(ioctl("report the supported CPUID"))
    }

    /// The MSRs a snapshot saves, and whether this host's XSAVE area fits
    /// the state a snapshot keeps (`None` if it does not).
    pub(crate) fn snapshot_msrs(&self) -> Result<Option<Vec<u32>>, KvmError> {
        if !arch::cpu_state::xsave_fits(&self._vm) {
            return Ok(None);
        }
        arch::cpu_state::saved_msr_indices(&self.kvm)
            .map(Some)
            .map_err(|e| KvmError::Ioctl {
                what: e.what,
                source: e.source,
            })
    }

    /// Put every vCPU where a snapshot left it: the CPUID of this host
    /// (which the caller checked is the snapshot's), then each parked
    /// vCPU's saved state; vCPUs that waited for their start wait again.
    pub(crate) fn restore_cpus(&mut self, cpus: &[control::CpuAtPause]) -> Result<(), KvmError> {
        let cpuid = self.supported_cpuid()?;
        for ((vcpu, at), start) in self.vcpus.iter().zip(cpus).zip(&mut self.starts) {
            vcpu.set_cpuid2(&cpuid)
                .map_err(ioctl("set the vCPU's CPUID"))?;
            *start = match at {
                control::CpuAtPause::Waiting => hypercall::CpuStart::Waiting,
                control::CpuAtPause::Parked(state) => {
                    state.restore(vcpu).map_err(|e| KvmError::Ioctl {
                        what: e.what,
                        source: e.source,
                    })?;
                    hypercall::CpuStart::Started
                }
            };
        }
        Ok(())
    }

    /// The guest's TSC frequency in kHz.
    pub(crate) fn tsc_khz(&self) -> Result<u32, KvmError> {
        self.vcpus[0]
            .get_tsc_khz()
            .map_err(ioctl("report the TSC frequency"))
    }

    /// The guest's TSC now (MSR IA32_TIME_STAMP_COUNTER).
    pub(crate) fn guest_tsc(&self) -> Result<u64, KvmError> {
        control::guest_tsc(&self.vcpus[0])
    }

    /// Run the VM until the guest stops: the boot vCPU at once, each
    /// application processor when the guest starts it (`StartCpu`), each
    /// on its own thread, placed as `placement` says. The first vCPU to stop stops them all.
    /// Returns that stop and the exits of every vCPU.
    pub(crate) fn run(
        self,
        ram: &GuestRam,
        services: &Services<'_>,
        bus: &MmioBus,
        placement: &Placement,
        options: RunOptions<'_>,
    ) -> Result<(Stop, ExitStats, Option<Samples>), KvmError> {
        let RunOptions {
            timeout,
            profile_hz,
            debugger,
            api,
        } = options;
        let (hub, server) = debugger.map(|d| (d.hub, d.server)).unzip();
        let (control, api_server) = api.map(|a| (a.hub, a.server)).unzip();
        let vm = RunningVm::new(self.vcpus.len(), hub, control);
        services.cpus.set(&self.starts);
        let starts = &self.starts;
        install_kick_handler();
        let results: Vec<Result<(ExitStats, Option<Samples>), KvmError>> =
            std::thread::scope(|scope| {
                let threads: Vec<_> = (0u32..)
                    .zip(self.vcpus)
                    .map(|(cpu, vcpu)| {
                        let vm = &vm;
                        let thread = std::thread::Builder::new().name(format!("vcpu{cpu}"));
                        thread
                            .spawn_scoped(scope, move || {
                                let result = confine::enter(ThreadKind::Vcpu)
                                    .map_err(|e| KvmError::Confine(ThreadKind::Vcpu.name(), e))
                                    .and_then(|()| placement.pin_vcpu(cpu).map_err(KvmError::from))
                                    .and_then(|()| {
                                        Vcpu {
                                            cpu,
                                            fd: vcpu,
                                            samples: profile_hz.map(|_| Samples::default()),
                                            debug: hub,
                                            control,
                                            is_running: starts[cpu as usize]
                                                == hypercall::CpuStart::Started,
                                        }
                                        .serve(ram, services, bus, vm, profile_hz)
                                    });
                                vm.finish(result.as_ref().ok().and_then(|(stop, ..)| *stop));
                                result.map(|(_, stats, samples)| (stats, samples))
                            })
                            // As `scope.spawn` would: no thread, no VM.
                            .expect("the host starts a vCPU thread")
                    })
                    .collect();
                // The GDB server, on a thread of its own: it ends when GDB
                // goes or the VM ends.
                let server = server.map(|serve| {
                    std::thread::Builder::new()
                        .name("gdb".into())
                        .spawn_scoped(scope, serve)
                        .expect("the host starts the GDB server's thread")
                });
                // The control socket's server, on a thread of its own: it
                // ends when the VM ends.
                let api_server = api_server.map(|serve| {
                    let controller = control::Controller {
                        hub: control.expect("a server comes with its hub"),
                        vm: &vm,
                        services,
                        ram,
                        bus,
                    };
                    std::thread::Builder::new()
                        .name("api".into())
                        .spawn_scoped(scope, move || serve(&controller))
                        .expect("the host starts the control socket's thread")
                });
                // Every thread this one starts has started: from here on it
                // only waits, stops the others and reports.
                let confined = confine::enter(ThreadKind::Main);
                if confined.is_err() {
                    vm.finish(None);
                }
                vm.wait_for_stop(services, timeout);
                if let Some(server) = server {
                    // It ends once it sees the VM end.
                    let _ = server.join();
                }
                if let Some(server) = api_server {
                    let _ = server.join();
                }
                threads
                    .into_iter()
                    .map(|t| t.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                    .chain(std::iter::once(
                        confined
                            .map(|()| (ExitStats::default(), None))
                            .map_err(|e| KvmError::Confine(ThreadKind::Main.name(), e)),
                    ))
                    .collect()
            });
        let mut stats = ExitStats::default();
        let mut all_samples = profile_hz.map(|_| Samples::default());
        for result in results {
            let (vcpu_stats, samples) = result?;
            stats.add(&vcpu_stats);
            if let (Some(all), Some(samples)) = (&mut all_samples, samples) {
                all.merge(samples);
            }
        }
        let stop = lock(&vm.stop).expect("a vCPU thread ends only after the VM stopped");
        Ok((stop, stats, all_samples))
    }
}

/// How often the main thread looks for a stop asked by the host while the
/// guest runs (a signal handler cannot wake a condition variable).
const HOST_LOOK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// What a run watches for besides the guest.
pub(crate) struct RunOptions<'a> {
    /// Stop the run after this long (`--timeout`).
    pub(crate) timeout: Option<std::time::Duration>,
    /// Sample every vCPU this often (`--profile`).
    pub(crate) profile_hz: Option<u32>,
    /// Serve GDB (`--gdb`).
    pub(crate) debugger: Option<Debugger<'a>>,
    /// Serve a control socket (`--api`).
    pub(crate) api: Option<Api<'a>>,
}

/// The control socket's server loop, given the running VM.
pub(crate) type ApiServer<'a> = Box<dyn FnOnce(&dyn control::VmControl) + Send + 'a>;

/// A control socket's server for a run (`--api`): the hub the vCPUs park
/// at, and the server's loop, run on a thread of its own.
pub(crate) struct Api<'a> {
    pub(crate) hub: &'a control::ControlHub,
    pub(crate) server: ApiServer<'a>,
}

/// A GDB server for a run (`--gdb`): the hub the vCPUs park at, and the
/// server's loop, run on a thread of its own.
pub(crate) struct Debugger<'a> {
    pub(crate) hub: &'a debug::DebugHub,
    pub(crate) server: Box<dyn FnOnce() + Send + 'a>,
}

/// What the vCPU threads share while the VM runs.
pub(crate) struct RunningVm<'a> {
    /// The first stop, which ends the run.
    stop: Mutex<Option<Stop>>,
    /// Signalled when `stop` is set or a thread ends.
    changed: Condvar,
    is_stopping: AtomicBool,
    /// vCPU threads still running, with their pthread ids for kicking
    /// them out of `KVM_RUN`.
    running: Mutex<Vec<Option<libc::pthread_t>>>,
    /// With `--gdb`: where vCPUs park; told when the VM ends.
    debug: Option<&'a debug::DebugHub>,
    /// With `--api`: where vCPUs park for the control socket; told when the
    /// VM ends.
    control: Option<&'a control::ControlHub>,
}

impl<'a> RunningVm<'a> {
    fn new(
        cpus: usize,
        debug: Option<&'a debug::DebugHub>,
        control: Option<&'a control::ControlHub>,
    ) -> Self {
        Self {
            stop: Mutex::new(None),
            changed: Condvar::new(),
            is_stopping: AtomicBool::new(false),
            running: Mutex::new(vec![None; cpus]),
            debug,
            control,
        }
    }

    /// Kick every vCPU thread inside the guest out of `KVM_RUN`; whether
    /// there was any.
    fn kick_running(&self) -> bool {
        let running = lock(&self.running);
        // Under the lock: a thread removes itself from `running` (under it)
        // before it returns, so each id is live while it is signalled.
        for thread in running.iter().flatten() {
            control::kick(*thread);
        }
        running.iter().any(Option::is_some)
    }

    /// The host ends the run (`stop`), unless the guest ended it first.
    fn stop_by_host(&self, stop: HostStop) {
        let mut first = lock(&self.stop);
        if first.is_none() {
            *first = Some(Stop::Host(stop));
        }
        self.is_stopping.store(true, Ordering::SeqCst);
        if let Some(hub) = self.debug {
            hub.end(&Stop::Host(stop));
        }
        if let Some(hub) = self.control {
            hub.end();
        }
        self.changed.notify_all();
    }

    /// Record the first stop (later ones lose) and tell the main thread.
    fn finish(&self, stop: Option<Stop>) {
        let mut first = lock(&self.stop);
        if first.is_none() {
            // A thread that failed (an ioctl error) ends the VM too.
            *first = Some(stop.unwrap_or(Stop::Guest(Next::Stop {
                kind: ExitKind::KernelPanic,
                code: 0,
            })));
        }
        self.is_stopping.store(true, Ordering::SeqCst);
        if let (Some(hub), Some(stop)) = (self.debug, &*first) {
            hub.end(stop);
        }
        if let Some(hub) = self.control {
            hub.end();
        }
        self.changed.notify_all();
    }

    /// Block until some vCPU stopped the VM, or the host did (`timeout`
    /// passed, or a second signal asked: looked at every
    /// [`HOST_LOOK_INTERVAL`]), then kick every other vCPU out of the
    /// guest (and out of waiting for `StartCpu`) until all have ended.
    fn wait_for_stop(&self, services: &Services<'_>, timeout: Option<std::time::Duration>) {
        let started = std::time::Instant::now();
        let mut stop = lock(&self.stop);
        let host_stop = loop {
            if stop.is_some() {
                break None;
            }
            let host_stop = match (host_signals::stop_requested(), timeout) {
                (Some(signal), _) => Some(HostStop::Signal(signal)),
                (None, Some(limit)) if started.elapsed() >= limit => Some(HostStop::Timeout(limit)),
                _ => None,
            };
            if host_stop.is_some() {
                break host_stop;
            }
            stop = self
                .changed
                .wait_timeout(stop, HOST_LOOK_INTERVAL)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        };
        drop(stop);
        if let Some(host_stop) = host_stop {
            self.stop_by_host(host_stop);
        }
        services.cpus.stop_all();
        while self.kick_running() {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
}

/// The signal that interrupts a vCPU thread's `KVM_RUN`.
fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

/// Install a handler for [`kick_signal`] that does nothing, so the signal
/// interrupts `KVM_RUN` (which returns `EINTR`) instead of killing us.
fn install_kick_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    extern "C" fn ignore(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
    ONCE.call_once(|| {
        vmm_sys_util::signal::register_signal_handler(kick_signal(), ignore)
            .expect("a real-time signal takes a handler");
    });
}

/// One vCPU on its own thread.
struct Vcpu<'a> {
    cpu: u32,
    fd: VcpuFd,
    /// With `--profile`: where the guest was at each sampling signal.
    samples: Option<Samples>,
    /// With `--gdb`: where this vCPU parks for the debugger.
    debug: Option<&'a debug::DebugHub>,
    /// With `--api`: where this vCPU parks for the control socket.
    control: Option<&'a control::ControlHub>,
    /// It runs from the start of the run (the boot vCPU, or one a snapshot
    /// saved running); else it waits for the guest to start it.
    is_running: bool,
}

impl Vcpu<'_> {
    /// Wait until the guest starts this vCPU (the boot vCPU starts at
    /// once), then run it until the VM stops (sampled `profile_hz` times
    /// a second); `None` when another vCPU stopped it.
    fn serve(
        mut self,
        ram: &GuestRam,
        services: &Services<'_>,
        bus: &MmioBus,
        vm: &RunningVm,
        profile_hz: Option<u32>,
    ) -> Result<(Option<Stop>, ExitStats, Option<Samples>), KvmError> {
        let mut stats = ExitStats::default();
        if !self.is_running {
            let Some(start) = services.cpus.wait_for_start(self.cpu) else {
                return Ok((None, stats, self.samples));
            };
            self.fd
                .set_regs(&arch::start_regs(start.rip, start.rsp, start.arg))
                .map_err(ioctl("set the registers"))?;
            // With the in-kernel local APIC, KVM holds an application
            // processor until INIT and SIPI; ours starts as it is.
            self.fd
                .set_mp_state(kvm_bindings::kvm_mp_state {
                    mp_state: kvm_bindings::KVM_MP_STATE_RUNNABLE,
                })
                .map_err(ioctl("make the vCPU runnable"))?;
        }
        // SAFETY: `pthread_self` has no preconditions.
        lock(&vm.running)[self.cpu as usize] = Some(unsafe { libc::pthread_self() });

        let timer = profile_hz
            .map(|hz| sampler::SampleTimer::start(hz, kick_signal()))
            .transpose()
            .map_err(|e| KvmError::Ioctl {
                what: "arm the profiler's timer",
                source: kvm_ioctls::Error::new(e.raw_os_error().unwrap_or(libc::EINVAL)),
            });
        let result = timer.and_then(|_timer| {
            if let Some(hub) = self.debug {
                hub.started(self.cpu);
            }
            if let Some(hub) = self.control {
                hub.started(self.cpu);
            }
            self.run(ram, services, bus, vm, &mut stats)
        });
        if let Some(hub) = self.debug {
            hub.finished(self.cpu);
        }
        if let Some(hub) = self.control {
            hub.finished(self.cpu);
        }
        lock(&vm.running)[self.cpu as usize] = None;
        result.map(|stop| (stop, stats, self.samples))
    }

    /// Run until the guest stops (`Some`) or another vCPU stopped the VM
    /// (`None`); count every exit in `stats`.
    fn run(
        &mut self,
        ram: &GuestRam,
        services: &Services<'_>,
        bus: &MmioBus,
        vm: &RunningVm,
        stats: &mut ExitStats,
    ) -> Result<Option<Stop>, KvmError> {
        loop {
            if vm.is_stopping.load(Ordering::SeqCst) {
                return Ok(None);
            }
            if let Some(hub) = self.debug
                && hub.is_stop_requested()
                && hub.park_asked(self.cpu, &self.fd)? == debug::AfterPark::Kill
            {
                return Ok(Some(Stop::Host(HostStop::Debugger)));
            }
            if let Some(hub) = self.control
                && hub.is_pause_requested()
            {
                hub.park(self.cpu, &mut self.fd)?;
                continue;
            }
            let exit = match self.fd.run() {
                Ok(exit) => exit,
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    stats.interrupted += 1;
                    self.sample(ram);
                    continue;
                }
                Err(e) => {
                    return Err(KvmError::Ioctl {
                        what: "run the vCPU",
                        source: e,
                    });
                }
            };
            let stop = match exit {
                VcpuExit::IoOut(trap::DEBUG_PORT, data) => {
                    stats.debug_traps += 1;
                    let value = <[u8; 4]>::try_from(data).map(u32::from_le_bytes);
                    match (self.debug, value) {
                        (Some(hub), Ok(value)) => match hub.trap(self.cpu, value, &self.fd, ram)? {
                            debug::AfterPark::Run => None,
                            debug::AfterPark::Kill => Some(Stop::Host(HostStop::Debugger)),
                        },
                        _ => None,
                    }
                }
                VcpuExit::IoOut(port, data) => match Port::from_port(port) {
                    Some(port) => match hypercall::decode(port, data, ram) {
                        Ok(call) => {
                            if call.request.is_err() {
                                stats.bad_hypercalls += 1;
                            }
                            stats.hypercalls
                                [Port::ALL.iter().position(|p| *p == port).unwrap_or(0)] += 1;
                            match hypercall::handle(call, ram, services) {
                                Next::Resume => None,
                                next @ Next::Stop { .. } => Some(Stop::Guest(next)),
                            }
                        }
                        Err(_) => {
                            stats.bad_hypercalls += 1;
                            None
                        }
                    },
                    None => {
                        stats.other_io += 1;
                        None
                    }
                },
                VcpuExit::IoIn(_, data) => {
                    data.fill(0xff); // nothing there: a floating bus
                    stats.other_io += 1;
                    None
                }
                VcpuExit::MmioRead(addr, data) => {
                    if bus.read(addr, data) {
                        stats.device_mmio += 1;
                    } else {
                        data.fill(0xff); // nothing there
                        stats.mmio += 1;
                    }
                    None
                }
                VcpuExit::MmioWrite(addr, data) => {
                    if bus.write(addr, data) {
                        stats.device_mmio += 1;
                    } else {
                        stats.mmio += 1;
                    }
                    None
                }
                VcpuExit::Intr => {
                    stats.interrupted += 1;
                    self.sample(ram);
                    None
                }
                VcpuExit::Hlt => Some(Stop::Halted(self.state())),
                VcpuExit::Shutdown => Some(Stop::Shutdown(self.state())),
                VcpuExit::FailEntry(reason, _) => Some(Stop::FailEntry {
                    reason,
                    state: self.state(),
                }),
                VcpuExit::InternalError => {
                    let suberror = self.internal_suberror();
                    Some(Stop::InternalError {
                        suberror,
                        state: self.state(),
                    })
                }
                other => {
                    let exit = exit_name(&other);
                    Some(Stop::Unexpected {
                        exit,
                        state: self.state(),
                    })
                }
            };
            if stop.is_some() {
                return Ok(stop);
            }
        }
    }

    /// With `--profile`, record where the guest is (a register read that
    /// fails loses the sample).
    fn sample(&mut self, ram: &GuestRam) {
        let Some(samples) = &mut self.samples else {
            return;
        };
        // The guest never loads CR3 (DESIGN.md, "Privilege": the VMM sets
        // it once), so it is read once: each ioctl costs microseconds.
        let cr3 = match samples.cr3 {
            Some(cr3) => cr3,
            None => match self.fd.get_sregs() {
                Ok(sregs) => *samples.cr3.insert(sregs.cr3),
                Err(_) => return,
            },
        };
        if let Ok(regs) = self.fd.get_regs() {
            samples.record(
                ram,
                Interrupted {
                    rip: regs.rip,
                    rbp: regs.rbp,
                    cr3,
                },
            );
        }
    }

    fn state(&self) -> CpuState {
        let rip = self.fd.get_regs().map_or(0, |r| r.rip);
        let cpl = self.fd.get_sregs().map_or(0, |s| s.cs.dpl);
        CpuState {
            cpu: self.cpu,
            rip,
            cpl,
        }
    }

    fn internal_suberror(&mut self) -> u32 {
        let run = self.fd.get_kvm_run();
        // SAFETY: after KVM_EXIT_INTERNAL_ERROR the kernel filled the
        // `internal` member of the exit union (Documentation/virt/kvm/api.rst,
        // "KVM_EXIT_INTERNAL_ERROR"); `suberror` is a plain integer, valid for
        // any bit pattern.
        unsafe { run.__bindgen_anon_1.internal.suberror }
    }
}

fn exit_name(exit: &VcpuExit<'_>) -> &'static str {
    match exit {
        VcpuExit::Debug(_) => "debug",
        VcpuExit::Exception => "exception",
        VcpuExit::Hypercall(_) => "hypercall",
        VcpuExit::SystemEvent(..) => "system event",
        VcpuExit::IrqWindowOpen => "irq window open",
        _ => "unknown",
    }
}
