//! The ELF note that marks an eremite image.
//!
//! The kernel emits it (section `.note.eremite`, type [`NOTE_TYPE`], name
//! [`NOTE_NAME`]); its descriptor is [`ImageNote`]. The VMM refuses an ELF
//! file without it ("not an eremite image") or with another interface
//! version.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Note name, including the terminating NUL.
pub const NOTE_NAME: &[u8] = b"EREMITE\0";
/// Note type.
pub const NOTE_TYPE: u32 = 0x4552_4d01;

/// Descriptor of the image note.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ImageNote {
    /// [`crate::INTERFACE_VERSION`] of the kernel linked into the image.
    pub version: u32,
    /// Zero.
    pub reserved: u32,
}
