//! Machine-specific setup. Only x86_64 exists so far; everything else in
//! the VMM is architecture-neutral and calls through here.

mod x86_64;

pub(crate) use x86_64::*;
pub use x86_64::{MachineError, PageTableError};
