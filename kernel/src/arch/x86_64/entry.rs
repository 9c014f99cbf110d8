//! The image entry points and the image note.
//!
//! The VMM starts the boot CPU at `_start` at CPL3 with `rdi` = boot info
//! address and a small boot stack; `_start` aligns the stack and calls
//! [`crate::boot::kernel_start`]. Application processors start at
//! `eremite_ap_start` with `rdi` = their index and a stack the boot CPU
//! gave them (`StartCpu`). The note tells the VMM that this ELF file is an
//! eremite image and which interface version it speaks.

use eremite_interface::INTERFACE_VERSION;
use eremite_interface::note::NOTE_TYPE;

core::arch::global_asm!(
    ".section .text._start,\"ax\",@progbits",
    ".global _start",
    ".type _start,@function",
    "_start:",
    "    xor ebp, ebp",
    "    and rsp, -16",
    "    call {start}",
    "    ud2",
    ".size _start, . - _start",
    "",
    ".global eremite_ap_start",
    ".type eremite_ap_start,@function",
    "eremite_ap_start:",
    "    xor ebp, ebp",
    "    and rsp, -16",
    "    call {ap_start}",
    "    ud2",
    ".size eremite_ap_start, . - eremite_ap_start",
    "",
    ".section .note.eremite,\"a\",@note",
    ".p2align 2",
    "    .long 8",           // name size, "EREMITE\0"
    "    .long 8",           // descriptor size, ImageNote
    "    .long {note_type}",
    "    .ascii \"EREMITE\\0\"",
    "    .long {version}",
    "    .long 0",
    start = sym crate::boot::kernel_start,
    ap_start = sym crate::boot::ap_start,
    note_type = const NOTE_TYPE,
    version = const INTERFACE_VERSION,
);

unsafe extern "C" {
    /// Where application processors start (see the module documentation).
    static eremite_ap_start: u8;
}

/// The address an application processor starts at.
pub(crate) fn ap_entry() -> u64 {
    &raw const eremite_ap_start as u64
}
