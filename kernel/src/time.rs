//! Time from the TSC: monotonic nanoseconds since boot and wall-clock time.
//!
//! The VMM hands over the TSC frequency, the guest TSC at boot and the host
//! wall-clock time at that moment; reading a clock is then one `rdtsc` and
//! no exit. Time a debugger held the VM stopped is left out (the VMM
//! counts it in the boot info, `arch::stopped_ticks`), so the guest's clocks
//! stand still at a breakpoint, and its wall clock lags the host's after. (The TSC is invariant on the hosts we run on; KVM reports its
//! frequency with `KVM_GET_TSC_KHZ`.)

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
    let ticks = arch::rdtsc().saturating_sub(clock().boot_tsc);
    ticks_to_ns(ticks.saturating_sub(arch::stopped_ticks()))
}

/// Nanoseconds since the Unix epoch.
pub(crate) fn realtime_ns() -> u64 {
    clock().boot_wall_ns.saturating_add(monotonic_ns())
}
