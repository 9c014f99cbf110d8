//! The local APIC in xAPIC mode (SDM vol. 3A, chapter 11), programmed at
//! CPL3 with plain MMIO writes: the VMM maps its page uncached and
//! CPL3-accessible, and KVM's in-kernel APIC serves each write inside the
//! host kernel (about 3 µs here, no VMM exit). Each CPU has its own APIC
//! at the same address. The timer is one-shot: it ends the running
//! thread's time slice or an idle CPU's halt. Inter-processor interrupts
//! wake another CPU.

use eremite_interface::layout::{LAPIC_ADDR, SPURIOUS_VECTOR, TIMER_VECTOR};

/// End of interrupt.
const EOI: u64 = 0xB0;
/// Spurious-interrupt vector register; bit 8 enables the APIC.
const SVR: u64 = 0xF0;
/// LVT timer register: vector, mask (bit 16), mode (bits 17–18, 0 = one-shot).
const LVT_TIMER: u64 = 0x320;
/// Timer initial count; writing it starts the count-down.
const INITIAL_COUNT: u64 = 0x380;
/// Timer divide configuration; 0b1011 divides by 1.
const DIVIDE_CONFIG: u64 = 0x3E0;
/// Interrupt command register, low half (writing it sends) and high half
/// (destination in bits 24–31) (SDM vol. 3A, 11.6.1).
const ICR_LOW: u64 = 0x300;
const ICR_HIGH: u64 = 0x310;
/// ICR: level "assert", as every IPI but INIT de-assert needs.
const ICR_ASSERT: u32 = 1 << 14;
const DIVIDE_BY_1: u32 = 0b1011;
const SVR_ENABLE: u32 = 1 << 8;

fn write(register: u64, value: u32) {
    // SAFETY: the VMM maps the 4 KiB register page at LAPIC_ADDR (layout
    // contract); these offsets are 16-byte aligned registers inside it,
    // written with the 32-bit accesses the SDM requires. No Rust reference
    // covers that memory.
    unsafe { core::ptr::write_volatile((LAPIC_ADDR + register) as *mut u32, value) }
}

/// Enable the APIC and set the timer up as one-shot on [`TIMER_VECTOR`].
pub(crate) fn timer_init() {
    write(SVR, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
    write(DIVIDE_CONFIG, DIVIDE_BY_1);
    write(LVT_TIMER, u32::from(TIMER_VECTOR));
}

/// Interrupt once in about `ns` nanoseconds. KVM's APIC counts at 1 GHz
/// (one tick per ns) with a divider of 1.
pub(crate) fn timer_arm(ns: u32) {
    write(INITIAL_COUNT, ns.max(1));
}

/// Signal the end of the current interrupt.
pub(crate) fn eoi() {
    write(EOI, 0);
}

/// Send interrupt `vector` to the CPU whose APIC ID is `apic_id` (fixed
/// delivery, physical destination). The two writes must not be split by
/// another IPI sent from this CPU: callers hold a kernel lock, and the
/// interrupt upcall sends none while one is held.
pub(crate) fn send_ipi(apic_id: u32, vector: u8) {
    write(ICR_HIGH, apic_id << 24);
    write(ICR_LOW, ICR_ASSERT | u32::from(vector));
}

/// ICR delivery modes (SDM vol. 3A, 11.6.1): INIT and start-up.
const DELIVERY_INIT: u32 = 0b101 << 8;
const DELIVERY_STARTUP: u32 = 0b110 << 8;

/// Send an INIT IPI to the CPU whose APIC ID is `apic_id`: it resets and
/// waits for a start-up IPI (SDM vol. 3A, 9.4.4). Only while one CPU boots
/// the others, so no other IPI from this CPU can split the two writes.
pub(crate) fn send_init(apic_id: u32) {
    write(ICR_HIGH, apic_id << 24);
    write(ICR_LOW, ICR_ASSERT | DELIVERY_INIT);
}

/// Send a start-up IPI to `apic_id`: a CPU waiting after INIT starts in
/// real mode at `vector * 4096` (others ignore it). As [`send_init`].
pub(crate) fn send_startup(apic_id: u32, vector: u8) {
    write(ICR_HIGH, apic_id << 24);
    write(ICR_LOW, ICR_ASSERT | DELIVERY_STARTUP | u32::from(vector));
}
