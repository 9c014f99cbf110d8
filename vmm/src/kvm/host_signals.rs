//! `SIGINT`, `SIGTERM`, `SIGHUP` and `SIGQUIT` sent to eremite while a
//! guest runs (Ctrl-C, a service manager stopping it, a closed terminal)
//! go to the guest, as they would to the program on Linux: the handler
//! sets the signal's bit in the kernel report's `host_signals` word in
//! guest RAM (an atomic OR) and raises [`HOST_SIGNAL_VECTOR`] on vCPU 0
//! with `KVM_SIGNAL_MSI`, both async-signal-safe. The guest's kernel
//! takes the bits: a Linux program's handler runs (redis saves nothing
//! and exits 0), or the program ends with 128 + the signal, as an
//! unhandled signal ends a process.
//!
//! The same signal a second time stops the VM from the host side
//! ([`stop_requested`], which the main thread looks at), so a guest that
//! ignores the first, or cannot take it, cannot keep the terminal: the
//! run ends with a one-line message and 128 + the signal. The previous
//! dispositions come back when the run ends.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU64, Ordering};

use eremite_interface::layout::{BOOT_INFO_ADDR, HOST_SIGNAL_VECTOR};
use eremite_interface::{BootInfo, KernelReport};

use crate::memory::GuestRam;

/// The signals forwarded.
const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Bit `n - 1`: signal `n` was forwarded in this run.
static SENT: AtomicU64 = AtomicU64::new(0);
/// A signal that came twice: the host stops the run (0: none).
static STOP: AtomicI32 = AtomicI32::new(0);

/// The signal that asked the host to stop the run (it came twice), if
/// one did.
pub(crate) fn stop_requested() -> Option<i32> {
    Some(STOP.load(Ordering::SeqCst)).filter(|&signal| signal != 0)
}

/// `KVM_SIGNAL_MSI`: `_IOW(KVMIO, 0xa5, struct kvm_msi)`.
const KVM_SIGNAL_MSI: libc::c_ulong = 0x4020_AEA5;

/// `struct kvm_msi` (`include/uapi/linux/kvm.h`).
#[repr(C)]
struct KvmMsi {
    address_lo: u32,
    address_hi: u32,
    data: u32,
    flags: u32,
    devid: u32,
    pad: [u8; 12],
}

/// The host address of the guest's `host_signals` word (null when no run
/// forwards).
static WORD: AtomicPtr<AtomicU64> = AtomicPtr::new(std::ptr::null_mut());
/// The VM's file descriptor (-1 when no run forwards).
static VM_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn forward(signal: libc::c_int) {
    let (Ok(number), word) = (u32::try_from(signal), WORD.load(Ordering::SeqCst)) else {
        return;
    };
    if word.is_null() || !(1..=64).contains(&number) {
        return;
    }
    if SENT.fetch_or(1 << (number - 1), Ordering::SeqCst) & (1 << (number - 1)) != 0 {
        STOP.store(signal, Ordering::SeqCst);
        return;
    }
    // SAFETY: `word` points at the aligned `host_signals` field of the
    // kernel report in guest RAM, which stays mapped while `WORD` is set
    // (`Forwarding` clears it before the run's memory goes).
    unsafe { &*word }.fetch_or(1 << (number - 1), Ordering::SeqCst);
    let msi = KvmMsi {
        address_lo: crate::kvm::MSI_ADDRESS_BASE,
        address_hi: 0,
        data: u32::from(HOST_SIGNAL_VECTOR),
        flags: 0,
        devid: 0,
        pad: [0; 12],
    };
    // SAFETY: an ioctl on the VM's descriptor with a valid `kvm_msi`;
    // async-signal-safe (a system call). A failure leaves the bit set for
    // the guest's next look.
    unsafe { libc::ioctl(VM_FD.load(Ordering::SeqCst), KVM_SIGNAL_MSI, &raw const msi) };
}

/// Forwarding in force for one run; dropping it restores what was there.
pub(crate) struct Forwarding {
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

impl Forwarding {
    /// Forward the signals of [`FORWARDED`] to the VM `vm_fd` over `ram`.
    pub(crate) fn start(ram: &GuestRam, vm_fd: RawFd) -> io::Result<Self> {
        let offset = BootInfo::REPORT_OFFSET + std::mem::offset_of!(KernelReport, host_signals);
        let word = ram
            .host_ptr(BOOT_INFO_ADDR + offset as u64, 8)
            .ok_or_else(|| io::Error::other("the boot info page is not in guest RAM"))?;
        SENT.store(0, Ordering::SeqCst);
        STOP.store(0, Ordering::SeqCst);
        WORD.store(word.cast(), Ordering::SeqCst);
        VM_FD.store(vm_fd, Ordering::SeqCst);
        let mut forwarding = Self {
            previous: Vec::new(),
        };
        for signal in FORWARDED {
            // SAFETY: an all-zero `sigaction` is a valid starting value;
            // the handler is async-signal-safe (atomics and one ioctl).
            let previous = unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = forward as *const () as libc::sighandler_t;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&raw mut action.sa_mask);
                let mut previous: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, &raw const action, &raw mut previous) != 0 {
                    return Err(io::Error::last_os_error());
                }
                previous
            };
            forwarding.previous.push((signal, previous));
        }
        Ok(forwarding)
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        for (signal, previous) in &self.previous {
            // SAFETY: restores the disposition `sigaction` returned.
            unsafe { libc::sigaction(*signal, previous, std::ptr::null_mut()) };
        }
        WORD.store(std::ptr::null_mut(), Ordering::SeqCst);
        VM_FD.store(-1, Ordering::SeqCst);
    }
}
