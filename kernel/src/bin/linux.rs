//! The eremite kernel as an image of its own, for unmodified Linux
//! programs: the VMM loads it with the program beside it, and boot starts
//! the program through the Linux ABI (`abi/linux`) instead of calling a
//! Rust application's `main`.
#![no_std]
#![no_main]

use eremite_kernel as _;

/// The hermit application entry this image has none of: boot never calls
/// it here, since the VMM loads a Linux program with this image.
#[allow(unsafe_code, reason = "the unmangled name boot links against")]
#[unsafe(no_mangle)]
extern "C" fn runtime_entry(_argc: i32, _argv: *const *const u8, _env: *const *const u8) -> ! {
    panic!("this kernel image runs Linux programs; it has no hermit application")
}
