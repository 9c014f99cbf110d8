//! The I/O APIC (Intel 82093AA data sheet, 3.0 "Register description"),
//! through which QEMU `-M microvm` raises its virtio-MMIO devices'
//! interrupt lines. Only the PVH boot path uses it; on our VMM a device
//! interrupt is an MSI and there is no I/O APIC.
//!
//! The PVH entry maps its page at [`pvh::IOAPIC_ADDR`] CPL3-accessible
//! and uncached, so the kernel programs it at CPL3 with plain MMIO: an
//! index register (`IOREGSEL`) selects a register, the data window
//! (`IOWIN`) reads or writes it, 32 bits at a time.

use eremite_interface::pvh;

/// `IOREGSEL`: which register `IOWIN` shows.
const IOREGSEL: u64 = 0x00;
/// `IOWIN`: the selected register.
const IOWIN: u64 = 0x10;
/// The low and high halves of pin `n`'s redirection entry.
const fn redirection_low(pin: u32) -> u32 {
    0x10 + 2 * pin
}
const fn redirection_high(pin: u32) -> u32 {
    0x11 + 2 * pin
}
/// Redirection entry, low half: masked (bit 16). Fixed delivery, physical
/// destination, active high and edge triggered are all zero bits.
const MASKED: u32 = 1 << 16;

fn write(register: u32, value: u32) {
    // SAFETY: the PVH entry maps the page at IOAPIC_ADDR (the I/O APIC's
    // registers, no RAM behind them) CPL3-accessible and uncached, and only
    // the PVH boot path calls this; IOREGSEL and IOWIN are 16-byte aligned
    // 32-bit registers in it, written with the 32-bit accesses the data
    // sheet requires. No Rust reference covers that memory. The index and
    // data writes are a pair: only the boot CPU calls this, before any
    // other CPU runs.
    unsafe {
        core::ptr::write_volatile((pvh::IOAPIC_ADDR + IOREGSEL) as *mut u32, register);
        core::ptr::write_volatile((pvh::IOAPIC_ADDR + IOWIN) as *mut u32, value);
    }
}

/// Deliver interrupt line `pin` as `vector` to the CPU whose APIC ID is
/// `apic_id`: fixed delivery, physical destination, active high, edge
/// triggered (a virtio-MMIO line stays high until the driver acknowledges
/// the device's `InterruptStatus`, which the driver does before it asks
/// for the next interrupt, so each new one is a new rising edge). Masked
/// while it changes. Only during boot, on the boot CPU.
///
/// # Panics
/// If `pin` is not one of the I/O APIC's pins.
pub(crate) fn route(pin: u32, vector: u8, apic_id: u8) {
    assert!(pin < pvh::IOAPIC_PINS, "I/O APIC pin {pin} does not exist");
    write(redirection_low(pin), MASKED);
    write(redirection_high(pin), u32::from(apic_id) << 24);
    write(redirection_low(pin), u32::from(vector));
}
