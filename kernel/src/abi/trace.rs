//! System-call tracing: with `strace` on the kernel command line
//! (`eremite run --cmdline strace ...`) every ABI call is written to the
//! guest's stderr as `name(args) = result`, as strace(1) does; `strace=a,b`
//! traces only the calls named (without `sys_`, e.g. `strace=open,read`).
//! Every function defined with [`super::exported!`] passes through here,
//! so a new ABI gets it for free; only hermit's allocator family
//! (`sys_malloc`, `sys_free`, ...) is left out, as no system call.
//!
//! Off, it costs one relaxed load per call. On, a line is formatted into a
//! buffer on the stack and written at once, so lines from several CPUs do
//! not mix; arguments are shown as integers, pointers in hex, and negative
//! results also by their errno name.

use core::fmt::{self, Write as _};
use core::sync::atomic::{AtomicBool, Ordering};

use eremite_interface::errno::Errno;
use eremite_interface::hypercall::Stream;
use spin::Once;

use crate::bootinfo;
use crate::console;

static IS_ON: AtomicBool = AtomicBool::new(false);
/// The calls to trace (`strace=a,b`); every call when empty.
static ONLY: Once<&'static [u8]> = Once::new();

/// The command-line parameter.
const PARAM: &[u8] = b"strace";

/// Read `strace[=names]` from the kernel command line (once, at boot).
pub(crate) fn init() {
    let Some(info) = bootinfo::info() else {
        return;
    };
    for token in bootinfo::strings(&info.cmdline) {
        let only: &'static [u8] = match token.strip_prefix(PARAM) {
            Some([]) => &[],
            Some([b'=', names @ ..]) => names,
            _ => continue,
        };
        ONLY.call_once(|| only);
        IS_ON.store(true, Ordering::Relaxed);
    }
}

/// Whether `name` (with its `sys_` prefix) is traced.
fn is_traced(name: &str) -> bool {
    let short = name.strip_prefix("sys_").unwrap_or(name).as_bytes();
    match ONLY.get() {
        Some(only) if !only.is_empty() => only.split(|&b| b == b',').any(|n| n == short),
        _ => true,
    }
}

/// An argument or result, as the trace shows it.
pub(crate) trait TraceValue {
    fn show(&self, out: &mut dyn fmt::Write) -> fmt::Result;
}

macro_rules! unsigned {
    ($($t:ty),*) => {$(
        impl TraceValue for $t {
            fn show(&self, out: &mut dyn fmt::Write) -> fmt::Result {
                write!(out, "{self}")
            }
        }
    )*};
}
unsigned!(u8, u16, u32, u64, usize, bool);

macro_rules! signed {
    ($($t:ty),*) => {$(
        impl TraceValue for $t {
            /// Negative values may be `-errno`: the name too.
            fn show(&self, out: &mut dyn fmt::Write) -> fmt::Result {
                write!(out, "{self}")?;
                match i32::try_from(*self) {
                    Ok(n) if n < 0 => match Errno(-n).name() {
                        "E?" => Ok(()),
                        name => write!(out, " ({name})"),
                    },
                    _ => Ok(()),
                }
            }
        }
    )*};
}
signed!(i8, i16, i32, i64, isize);

impl<T> TraceValue for *const T {
    fn show(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        match self.is_null() {
            true => write!(out, "NULL"),
            false => write!(out, "{:#x}", *self as usize),
        }
    }
}

impl<T> TraceValue for *mut T {
    fn show(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        self.cast_const().show(out)
    }
}

impl TraceValue for extern "C" fn(usize) {
    fn show(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        write!(out, "{:#x}", *self as usize)
    }
}

impl TraceValue for () {
    fn show(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        write!(out, "()")
    }
}

/// A line being formatted, cut at its capacity.
struct Line {
    bytes: [u8; 256],
    len: usize,
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.bytes.len() - self.len;
        let n = s.len().min(room);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

fn write_line(name: &str, args: &[&dyn TraceValue], result: Option<&dyn TraceValue>) {
    let mut line = Line {
        bytes: [0; 256],
        len: 0,
    };
    let _ = write!(line, "{}(", name.strip_prefix("sys_").unwrap_or(name));
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            let _ = line.write_str(", ");
        }
        let _ = arg.show(&mut line);
    }
    let _ = line.write_str(")");
    if let Some(result) = result {
        let _ = line.write_str(" = ");
        let _ = result.show(&mut line);
    }
    // The newline always fits: it replaces the last byte of a full line.
    let end = line.len.min(line.bytes.len() - 1);
    line.bytes[end] = b'\n';
    let _ = console::write(Stream::Stderr, &line.bytes[..=end]);
}

/// Whether tracing is on (one relaxed load): `exported!` gathers a
/// call's arguments only then.
#[inline(always)]
pub(crate) fn is_on() -> bool {
    IS_ON.load(Ordering::Relaxed)
}

/// Trace a call of `name` with `args` and its result (`None` before a
/// call that does not return), when [`is_on`].
#[cold]
#[inline(never)]
pub(crate) fn log(name: &str, args: &[&dyn TraceValue], result: Option<&dyn TraceValue>) {
    if is_traced(name) {
        write_line(name, args, result);
    }
}
