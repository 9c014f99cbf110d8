//! A vCPU's whole architectural state, as KVM holds it, read and written
//! back for snapshots (`crate::snapshot`).
//!
//! What is saved is what KVM's x86 state ioctls give: general and special
//! registers, the XSAVE area (FPU, SSE, AVX) with XCR0, the debug
//! registers, the local APIC's register page (its timer's current count
//! with it), the pending-event state, the run state (halted or running)
//! and every MSR the host's KVM lists that can be read. The time-stamp
//! counter's MSRs are left out: the guest's clocks go on from the new
//! VM's counter, corrected through the boot info (`crate::snapshot`), and
//! under PVM the guest reads the host's counter anyway.

#![allow(unsafe_code)]

use kvm_bindings::{
    Msrs, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs,
    kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use kvm_ioctls::{Kvm, VcpuFd};
use serde::{Deserialize, Serialize};

/// MSRs not saved: IA32_TIME_STAMP_COUNTER, IA32_TSC_ADJUST and
/// IA32_TSC_DEADLINE (the guest's timer runs in the local APIC's one-shot
/// mode, whose count the APIC page carries).
const UNSAVED_MSRS: [u32; 3] = [0x10, 0x3b, 0x6e0];

/// How many MSRs one `KVM_GET_MSRS` reads at most.
const MSR_BATCH: usize = 64;

/// Everything KVM holds of one vCPU.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(test, derive(Default))]
pub(crate) struct CpuState {
    regs: kvm_regs,
    sregs: kvm_sregs,
    xsave: kvm_xsave,
    xcrs: kvm_xcrs,
    debug_regs: kvm_debugregs,
    lapic: kvm_lapic_state,
    events: kvm_vcpu_events,
    mp_state: kvm_mp_state,
    msrs: Vec<kvm_msr_entry>,
}

/// A KVM call that failed while saving or restoring a vCPU.
#[derive(Debug, thiserror::Error)]
#[error("cannot {what}: {source}")]
pub(crate) struct StateError {
    pub(crate) what: &'static str,
    #[source]
    pub(crate) source: kvm_ioctls::Error,
}

fn failed(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> StateError {
    move |source| StateError { what, source }
}

/// The MSRs worth saving on this host: KVM's list without the TSC's.
pub(crate) fn saved_msr_indices(kvm: &Kvm) -> Result<Vec<u32>, StateError> {
    let list = kvm
        .get_msr_index_list()
        .map_err(failed("list the MSRs (KVM_GET_MSR_INDEX_LIST)"))?;
    Ok(list
        .as_slice()
        .iter()
        .copied()
        .filter(|index| !UNSAVED_MSRS.contains(index))
        .collect())
}

/// The words of `cpuid` that say what the CPU can do, for comparing two
/// hosts: every entry's, but with the APIC IDs zeroed. KVM reports the
/// IDs of the host CPU its thread ran on (leaf 1 EBX[31:24], the x2APIC
/// ID in EDX of leaves 0xB and 0x1F, AMD's leaf 0x8000001E), so they
/// differ from call to call on one host.
pub(crate) fn feature_words(cpuid: &kvm_bindings::CpuId) -> Vec<u32> {
    cpuid
        .as_slice()
        .iter()
        .flat_map(|e| {
            let (mut eax, mut ebx, mut ecx, mut edx) = (e.eax, e.ebx, e.ecx, e.edx);
            match e.function {
                0x1 => ebx &= 0x00ff_ffff,
                0xb | 0x1f => edx = 0,
                0x8000_001e => (eax, ebx, ecx, edx) = (0, 0, 0, 0),
                _ => {}
            }
            [e.function, e.index, e.flags, eax, ebx, ecx, edx]
        })
        .collect()
}

/// Whether this host's XSAVE area fits `kvm_xsave`'s 4 KiB (it does unless
/// the guest may use AMX tiles; then the state cannot be saved whole).
pub(crate) fn xsave_fits(vm: &kvm_ioctls::VmFd) -> bool {
    let size = vm.check_extension_int(kvm_ioctls::Cap::Xsave2);
    size <= 0 || usize::try_from(size).is_ok_and(|s| s <= size_of::<kvm_xsave>())
}

/// Read the MSRs of `indices` that this vCPU can give. `KVM_GET_MSRS`
/// stops at the first MSR it cannot read: that one is skipped and the
/// read goes on after it.
fn read_msrs(fd: &VcpuFd, indices: &[u32]) -> Result<Vec<kvm_msr_entry>, StateError> {
    let mut saved = Vec::with_capacity(indices.len());
    let mut rest = indices;
    while !rest.is_empty() {
        let batch = &rest[..rest.len().min(MSR_BATCH)];
        let entries: Vec<kvm_msr_entry> = batch
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).expect("a batch fits");
        let read = fd.get_msrs(&mut msrs).map_err(failed("read the MSRs"))?;
        saved.extend_from_slice(&msrs.as_slice()[..read]);
        // Unless the batch was read whole, the one at `read` failed.
        let done = if read < batch.len() { read + 1 } else { read };
        rest = &rest[done..];
    }
    Ok(saved)
}

impl CpuState {
    /// Read the state of a vCPU that is out of `KVM_RUN`, after its last
    /// exit was completed (`KVM_RUN` with `immediate_exit`).
    pub(crate) fn save(fd: &VcpuFd, msr_indices: &[u32]) -> Result<Self, StateError> {
        Ok(Self {
            regs: fd.get_regs().map_err(failed("read the registers"))?,
            sregs: fd
                .get_sregs()
                .map_err(failed("read the special registers"))?,
            xsave: fd.get_xsave().map_err(failed("read the XSAVE area"))?,
            xcrs: fd.get_xcrs().map_err(failed("read XCR0"))?,
            debug_regs: fd
                .get_debug_regs()
                .map_err(failed("read the debug registers"))?,
            lapic: fd.get_lapic().map_err(failed("read the local APIC"))?,
            events: fd
                .get_vcpu_events()
                .map_err(failed("read the pending events"))?,
            mp_state: fd.get_mp_state().map_err(failed("read the run state"))?,
            msrs: read_msrs(fd, msr_indices)?,
        })
    }

    /// Write the state back into a new vCPU of a VM made like the saved
    /// one (same CPUID, set before).
    pub(crate) fn restore(&self, fd: &VcpuFd) -> Result<(), StateError> {
        // Special registers first (they set the mode the rest is read in),
        // the local APIC before the events (an event may name a vector it
        // holds), the run state last, as KVM's own save and restore order.
        fd.set_sregs(&self.sregs)
            .map_err(failed("set the special registers"))?;
        fd.set_regs(&self.regs)
            .map_err(failed("set the registers"))?;
        fd.set_xcrs(&self.xcrs).map_err(failed("set XCR0"))?;
        // SAFETY: `kvm_xsave` is the whole buffer KVM reads: the snapshot
        // was refused when this host's XSAVE area is larger (`xsave_fits`),
        // and a snapshot from another host with a different CPUID is
        // refused before any vCPU state is written.
        unsafe { fd.set_xsave(&self.xsave) }.map_err(failed("set the XSAVE area"))?;
        fd.set_debug_regs(&self.debug_regs)
            .map_err(failed("set the debug registers"))?;
        fd.set_lapic(&self.lapic)
            .map_err(failed("set the local APIC"))?;
        for chunk in self.msrs.chunks(MSR_BATCH) {
            let msrs = Msrs::from_entries(chunk).expect("a batch fits");
            let written = fd.set_msrs(&msrs).map_err(failed("set the MSRs"))?;
            if written != chunk.len() {
                return Err(StateError {
                    what: "set the MSRs (one was refused)",
                    source: kvm_ioctls::Error::new(libc::EINVAL),
                });
            }
        }
        fd.set_vcpu_events(&self.events)
            .map_err(failed("set the pending events"))?;
        fd.set_mp_state(self.mp_state)
            .map_err(failed("set the run state"))
    }
}
