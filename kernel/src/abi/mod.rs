//! The application binary interfaces: thin layers that turn an ABI's raw
//! integers and pointers into the core's types, call the ABI-neutral core
//! (`fd`, `fs`, `net`, `mm`, `sched`, `time`, `process`) and turn its
//! `Result<_, Errno>` back into the ABI's return form. No logic lives here.
//!
//! - [`hermit`]: hermit-abi, the `sys_*` functions Rust's std calls on
//!   `target_os = "hermit"`;
//! - [`linux`]: the Linux x86_64 system calls of unmodified static Linux
//!   programs, reached from their rewritten `syscall` sites.
//!
//! Shared by every ABI: [`pollfd`] (the `poll` event bits), [`user`], the checked access to memory the
//! application names (the one module here with pointer `unsafe`), and
//! [`exported!`], which every exported function is defined with: it gives
//! the function its unmangled C symbol without allowing `unsafe` in its
//! body, and passes every call through [`trace`] (`strace` on the kernel
//! command line logs `name(args) = result`, as strace does).
#![deny(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

pub(crate) mod hermit;
pub(crate) mod linux;
mod pollfd;
pub(crate) mod trace;
mod user;

use eremite_interface::errno::{self, Errno};

use crate::fd;

/// Offset of `d_name` in `struct linux_dirent64` (after `d_ino`, `d_off`,
/// `d_reclen` and `d_type`), which hermit-abi's `dirent64` copies.
const DIRENT_NAME_OFFSET: usize = 19;

/// `getdents64(2)` into `buf`: the bytes of the records written. Both
/// ABIs share the record layout.
fn dirents64(fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    let mut used = 0;
    let mut is_too_small = false;
    fd::read_dir(fd, buf.len(), |entry| {
        let reclen = (DIRENT_NAME_OFFSET + entry.name.len() + 1).next_multiple_of(8);
        let Some(record) = buf.get_mut(used..used + reclen) else {
            is_too_small = used == 0;
            return false;
        };
        let Ok(reclen16) = u16::try_from(reclen) else {
            return false;
        };
        record.fill(0);
        record[0..8].copy_from_slice(&entry.ino.to_le_bytes());
        record[8..16].copy_from_slice(&entry.next.to_le_bytes());
        record[16..18].copy_from_slice(&reclen16.to_le_bytes());
        record[18] = entry.dirent_type;
        record[DIRENT_NAME_OFFSET..DIRENT_NAME_OFFSET + entry.name.len()]
            .copy_from_slice(entry.name);
        used += reclen;
        true
    })?;
    if is_too_small {
        // Not even one entry fits.
        return Err(errno::EINVAL);
    }
    Ok(used)
}

/// Define functions exported with C linkage under their own names.
///
/// Exporting an unmangled symbol counts as `unsafe_code`, which the kernel
/// denies; the allowance covers only the attribute: the body is a nested
/// function that denies `unsafe_code` again. Forms:
/// - `fn name(args) -> T { body }` and `fn name(args) { body }`: traced
///   with their result after the call;
/// - `fn name(args) -> ! { body }`: traced before the call, which ends
///   the program;
/// - `unsafe fn name(args) { body }`: a function whose contract is unsafe
///   (`freeaddrinfo`): its body forwards that contract and may use
///   `unsafe`, with a SAFETY comment;
/// - `untraced fn` and `untraced unsafe fn`: the same without the tracer,
///   for the allocator family, which std calls for every allocation (a
///   load and a branch there cost malloc+free 8 % in `./x bench
///   syscalls`) and which is no system call on Linux.
macro_rules! exported {
    () => {};
    ($(#[$meta:meta])* untraced fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block $($rest:tt)*) => {
        $(#[$meta])*
        #[allow(unsafe_code, reason = "an unmangled symbol; the body denies unsafe code")]
        #[unsafe(no_mangle)]
        pub extern "C" fn $name($($arg: $ty),*) $(-> $ret)? {
            #[deny(unsafe_code)]
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            body($($arg),*)
        }
        $crate::abi::exported! { $($rest)* }
    };
    ($(#[$meta:meta])* untraced unsafe fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block $($rest:tt)*) => {
        $(#[$meta])*
        #[allow(unsafe_code, reason = "an unsafe contract, forwarded by the body")]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) $(-> $ret)? $body
        $crate::abi::exported! { $($rest)* }
    };
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> ! $body:block $($rest:tt)*) => {
        $(#[$meta])*
        #[allow(unsafe_code, reason = "an unmangled symbol; the body denies unsafe code")]
        #[unsafe(no_mangle)]
        pub extern "C" fn $name($($arg: $ty),*) -> ! {
            #[deny(unsafe_code)]
            #[inline(always)]
            fn body($($arg: $ty),*) -> ! $body
            if $crate::abi::trace::is_on() {
                // Copies whose addresses the tracer takes, here only.
                let traced = ($($arg,)*);
                let ($($arg,)*) = traced;
                $crate::abi::trace::log(
                    stringify!($name),
                    &[$(&$arg as &dyn $crate::abi::trace::TraceValue),*],
                    None,
                );
            }
            body($($arg),*)
        }
        $crate::abi::exported! { $($rest)* }
    };
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block $($rest:tt)*) => {
        $(#[$meta])*
        #[allow(unsafe_code, reason = "an unmangled symbol; the body denies unsafe code")]
        #[unsafe(no_mangle)]
        pub extern "C" fn $name($($arg: $ty),*) $(-> $ret)? {
            // Out of line, so that what it calls inlines into it as into
            // a function of its own; the untraced path is a check and a
            // tail call.
            #[deny(unsafe_code)]
            #[inline(never)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            if $crate::abi::trace::is_on() {
                // Copies whose addresses the tracer takes, here only.
                let traced = ($($arg,)*);
                let ($($arg,)*) = traced;
                let result = body($($arg),*);
                $crate::abi::trace::log(
                    stringify!($name),
                    &[$(&$arg as &dyn $crate::abi::trace::TraceValue),*],
                    Some(&result),
                );
                result
            } else {
                body($($arg),*)
            }
        }
        $crate::abi::exported! { $($rest)* }
    };
    ($(#[$meta:meta])* unsafe fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block $($rest:tt)*) => {
        $(#[$meta])*
        #[allow(unsafe_code, reason = "an unsafe contract, forwarded by the body")]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(never)]
            unsafe fn body($($arg: $ty),*) $(-> $ret)? $body
            if $crate::abi::trace::is_on() {
                let traced = ($($arg,)*);
                let ($($arg,)*) = traced;
                // SAFETY: the caller's contract, which this function has
                // too, is forwarded unchanged.
                let result = unsafe { body($($arg),*) };
                $crate::abi::trace::log(
                    stringify!($name),
                    &[$(&$arg as &dyn $crate::abi::trace::TraceValue),*],
                    Some(&result),
                );
                result
            } else {
                // SAFETY: as above.
                unsafe { body($($arg),*) }
            }
        }
        $crate::abi::exported! { $($rest)* }
    };
}
pub(crate) use exported;
