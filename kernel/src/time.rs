//! Time from the TSC: monotonic nanoseconds since boot and wall-clock time.
//!
//! The VMM hands over the TSC frequency, the guest TSC at boot and the host
//! wall-clock time at that moment; reading a clock is then one `rdtsc` and
//! no exit. Time a debugger held the VM stopped is left out (the VMM
//! counts it in the boot info, `arch::stopped_ticks`), so the guest's clocks
//! stand still at a breakpoint, and its wall clock lags the host's after.
//! After a pause or a restore (`eremite vm`, `eremite restore`) the VMM
//! also sets a wall-clock offset, so the wall clock is the host's again
//! while the monotonic clock goes on from where it stopped. (The TSC is
//! invariant on the hosts we run on; KVM reports its frequency with
//! `KVM_GET_TSC_KHZ`.)

use spin::Once;

use crate::arch;

struct Clock {
    tsc_khz: u64,
    boot_tsc: u64,
    boot_wall_ns: u64,
}

static CLOCK: Once<Clock> = Once::new();

/// Set up the clocks; `tsc_khz` must not be zero.
pub(crate) fn init(tsc_khz: u64, boot_tsc: u64, boot_wall_ns: u64) {
    CLOCK.call_once(|| Clock {
        tsc_khz,
        boot_tsc,
        boot_wall_ns,
    });
}

fn clock() -> &'static Clock {
    // Before `init` (only during the first lines of boot) time stands still.
    static STILL: Clock = Clock {
        tsc_khz: u64::MAX,
        boot_tsc: 0,
        boot_wall_ns: 0,
    };
    CLOCK.get().unwrap_or(&STILL)
}

/// Convert TSC ticks to nanoseconds.
pub(crate) fn ticks_to_ns(ticks: u64) -> u64 {
    let ns = u128::from(ticks) * 1_000_000 / u128::from(clock().tsc_khz);
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// Nanoseconds since boot, without the time a debugger held the VM
/// stopped; never goes backwards.
pub(crate) fn monotonic_ns() -> u64 {
    // Wrapping: after a restore on another host (or after its reboot) the
    // TSC may be below the boot's, and the VMM's `stopped_ticks` is then
    // the two's complement of what the counter went back by.
    let ticks = arch::rdtsc()
        .wrapping_sub(clock().boot_tsc)
        .wrapping_sub(arch::stopped_ticks());
    // A count that wrapped below zero would be a clock gone backwards:
    // never more than a few ticks of skew between CPUs early in a run.
    if ticks > u64::MAX / 2 {
        return 0;
    }
    ticks_to_ns(ticks)
}

/// Nanoseconds since the Unix epoch.
pub(crate) fn realtime_ns() -> u64 {
    clock()
        .boot_wall_ns
        .wrapping_add(monotonic_ns())
        .wrapping_add(arch::wall_offset_ns())
}
