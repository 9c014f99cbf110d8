//! The only code that talks to KVM: create the VM, give it guest RAM,
//! prepare the boot vCPU, and run it, decoding each exit.
//!
//! Exits are expensive (tens of microseconds on the PVM hosts we run on),
//! so every one is counted in [`ExitStats`] and shown by `--stats`.

#![allow(unsafe_code)]

use eremite_interface::hypercall::Port;
use kvm_bindings::{
    KVM_MAX_CPUID_ENTRIES, Msrs, kvm_msr_entry, kvm_userspace_memory_region, kvm_xcrs,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};

use crate::arch;
use crate::hypercall::{self, Next, Services};
use crate::memory::GuestRam;

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
    /// MMIO accesses outside RAM.
    pub mmio: u64,
    /// `KVM_RUN` interrupted by a host signal.
    pub interrupted: u64,
}

impl ExitStats {
    /// All exits counted.
    pub fn total(&self) -> u64 {
        self.hypercalls.iter().sum::<u64>()
            + self.bad_hypercalls
            + self.other_io
            + self.mmio
            + self.interrupted
    }
}

/// Why the vCPU stopped.
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
}

/// Where the vCPU was when it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuState {
    /// Instruction pointer.
    pub rip: u64,
    /// Current privilege level (from CS).
    pub cpl: u8,
}

/// A VM with one vCPU and its RAM registered.
pub(crate) struct Machine {
    kvm: Kvm,
    _vm: VmFd,
    vcpu: VcpuFd,
}

impl Machine {
    /// Open KVM, create a VM over `ram` and its boot vCPU.
    pub(crate) fn new(ram: &GuestRam) -> Result<Self, KvmError> {
        let kvm = Kvm::new().map_err(KvmError::Unavailable)?;
        let vm = kvm.create_vm().map_err(ioctl("create a VM"))?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: ram.size_bytes(),
            userspace_addr: ram.host_base(),
        };
        // SAFETY: the region describes `ram`'s mapping exactly (host base
        // and size from `GuestRam`), which stays mapped for as long as the
        // VM exists: `run` (the only user of the VM) borrows `ram` and the
        // VM is dropped with this `Machine` before `ram` in `crate::run`.
        unsafe { vm.set_user_memory_region(region) }.map_err(ioctl("register guest memory"))?;
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
        cap.args[0] = 24;
        vm.enable_cap(&cap)
            .map_err(ioctl("create the interrupt controller"))?;
        let vcpu = vm.create_vcpu(0).map_err(ioctl("create a vCPU"))?;
        Ok(Self { kvm, _vm: vm, vcpu })
    }

    /// Put the boot vCPU in 64-bit mode at CPL3 at `entry` (see
    /// [`arch`]): CPUID, XCR0, control and segment registers, GPRs.
    pub(crate) fn prepare_boot_cpu(&mut self, entry: u64) -> Result<(), KvmError> {
        let cpuid = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(ioctl("report the supported CPUID"))?;
        self.vcpu
            .set_cpuid2(&cpuid)
            .map_err(ioctl("set the vCPU's CPUID"))?;
        let leaf = |function: u32, index: u32| {
            cpuid
                .as_slice()
                .iter()
                .find(|e| e.function == function && e.index == index)
                .copied()
        };
        let has_xsave = leaf(1, 0).is_some_and(|e| e.ecx & (1 << 26) != 0);

        let sregs = self
            .vcpu
            .get_sregs()
            .map_err(ioctl("read the special registers"))?;
        self.vcpu
            .set_sregs(&arch::long_mode_sregs(sregs, has_xsave))
            .map_err(ioctl("set the special registers"))?;
        if has_xsave {
            let supported =
                leaf(0xd, 0).map_or(0b11, |e| u64::from(e.edx) << 32 | u64::from(e.eax));
            let mut xcrs = kvm_xcrs {
                nr_xcrs: 1,
                ..Default::default()
            };
            xcrs.xcrs[0].xcr = 0;
            xcrs.xcrs[0].value = arch::xcr0(supported);
            self.vcpu.set_xcrs(&xcrs).map_err(ioctl("set XCR0"))?;
        }
        self.vcpu
            .set_regs(&arch::entry_regs(entry))
            .map_err(ioctl("set the registers"))
    }

    /// The guest's TSC frequency in kHz.
    pub(crate) fn tsc_khz(&self) -> Result<u32, KvmError> {
        self.vcpu
            .get_tsc_khz()
            .map_err(ioctl("report the TSC frequency"))
    }

    /// The guest's TSC now (MSR IA32_TIME_STAMP_COUNTER).
    pub(crate) fn guest_tsc(&self) -> Result<u64, KvmError> {
        const IA32_TSC: u32 = 0x10;
        let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
            index: IA32_TSC,
            ..Default::default()
        }])
        .expect("one entry fits");
        let read = self
            .vcpu
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

    /// Run the vCPU until the guest stops; count every exit in `stats`.
    pub(crate) fn run(
        &mut self,
        ram: &GuestRam,
        services: &mut Services<'_>,
        stats: &mut ExitStats,
    ) -> Result<Stop, KvmError> {
        loop {
            let exit = match self.vcpu.run() {
                Ok(exit) => exit,
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    stats.interrupted += 1;
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
                VcpuExit::MmioRead(_, data) => {
                    data.fill(0xff);
                    stats.mmio += 1;
                    None
                }
                VcpuExit::MmioWrite(..) => {
                    stats.mmio += 1;
                    None
                }
                VcpuExit::Intr => {
                    stats.interrupted += 1;
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
            if let Some(stop) = stop {
                return Ok(stop);
            }
        }
    }

    fn state(&self) -> CpuState {
        let rip = self.vcpu.get_regs().map_or(0, |r| r.rip);
        let cpl = self.vcpu.get_sregs().map_or(0, |s| s.cs.dpl);
        CpuState { rip, cpl }
    }

    fn internal_suberror(&mut self) -> u32 {
        let run = self.vcpu.get_kvm_run();
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
