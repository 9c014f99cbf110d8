//! Architecture-specific code. Only x86_64 exists; everything outside this
//! module is free of `cfg(target_arch)`.

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub(crate) use x86_64::*;
