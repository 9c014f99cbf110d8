//! The program and its threads: `clone`, `exit`/`exit_group`, identity
//! (`getpid` is 1, every id 0: the program is root of its own machine),
//! `uname`, resource limits, `arch_prctl`, `set_tid_address`, `getrandom`.

use alloc::collections::BTreeMap;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use eremite_interface::errno;

use super::{SysResult, nr, ptr, user, value};
use crate::arch::{self, SyscallFrame};
use crate::console::klog;
use crate::sched::{self, ThreadStart};
use crate::sync::Lock;
use crate::{bootinfo, fault, mm, process, random};

/// The program's process id.
pub(super) const PID: u64 = 1;

/// Stack for a thread's system calls (the kernel code they run).
pub(super) const SYSCALL_STACK_BYTES: usize = crate::arch::LINUX_SYSCALL_STACK_BYTES;

/// A call into page 0 from no rewritten site (see `dispatch`).
pub(super) fn null_call(frame: &SyscallFrame) -> ! {
    fault::report_bad_call(frame.nr, frame.rip)
}

/// `fork`, `vfork`, `execve`, `wait4`: a unikernel runs one program.
pub(super) fn one_process(number: u64) -> SysResult {
    static HAS_SAID: AtomicU32 = AtomicU32::new(0);
    if HAS_SAID.swap(1, Ordering::Relaxed) == 0 {
        klog!(
            "linux: {} is not available: a unikernel runs one program (ENOSYS)",
            nr::name(number)
        );
    }
    Err(errno::ENOSYS)
}

/// `exit_group(2)`: the program ends.
pub(super) fn exit_group(code: i32) -> ! {
    super::report_unknown();
    process::exit(code & 0xff)
}

/// `exit(2)`: the calling thread ends (the main thread's exit ends the
/// program, as the last thread's does on Linux for programs whose main
/// thread never exits before the others).
pub(super) fn exit_thread(code: i32) -> ! {
    if sched::current_tid() == sched::MAIN_TID {
        exit_group(code);
    }
    super::signal::thread_exited();
    sched::exit_current()
}

// `clone` flags (`include/uapi/linux/sched.h`).
const CLONE_VM: u64 = 0x100;
const CLONE_FS: u64 = 0x200;
const CLONE_FILES: u64 = 0x400;
const CLONE_SIGHAND: u64 = 0x800;
const CLONE_THREAD: u64 = 0x10000;
const CLONE_SYSVSEM: u64 = 0x40000;
const CLONE_SETTLS: u64 = 0x80000;
const CLONE_PARENT_SETTID: u64 = 0x100000;
const CLONE_CHILD_CLEARTID: u64 = 0x200000;
const CLONE_DETACHED: u64 = 0x400000;
const CLONE_CHILD_SETTID: u64 = 0x1000000;
/// The low byte: the signal sent to the parent when the child ends.
const CSIGNAL: u64 = 0xff;

/// What a thread (not a process) needs: one address space, one file
/// table, one set of signal handlers.
const THREAD_FLAGS: u64 = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD;
const KNOWN_FLAGS: u64 = THREAD_FLAGS
    | CLONE_SYSVSEM
    | CLONE_SETTLS
    | CLONE_PARENT_SETTID
    | CLONE_CHILD_CLEARTID
    | CLONE_DETACHED
    | CLONE_CHILD_SETTID
    | CSIGNAL;

/// A new thread's registers, from `clone` until the thread takes them.
struct Child {
    frame: SyscallFrame,
    set_tid: Option<u64>,
    /// The parent's signal mask, which the child starts with.
    signal_mask: u64,
}

static CHILDREN: Lock<BTreeMap<u64, Child>> = Lock::new(BTreeMap::new());
static NEXT_CHILD: AtomicU64 = AtomicU64::new(1);

/// `clone(2)` for threads (musl's and Rust's flags): a new thread that
/// returns 0 from the call at the same place, on `stack`, with `tls` as
/// its FS base when asked. A new process (no `CLONE_VM`/`CLONE_THREAD`)
/// is `ENOSYS`.
pub(super) fn clone(
    frame: &SyscallFrame,
    flags: u64,
    stack: u64,
    parent_tid: u64,
    child_tid: u64,
    tls: u64,
) -> SysResult {
    if flags & THREAD_FLAGS != THREAD_FLAGS {
        return one_process(nr::CLONE);
    }
    if flags & !KNOWN_FLAGS != 0 || stack == 0 {
        return Err(errno::EINVAL);
    }
    let mut child = *frame;
    child.rsp = stack;
    let fs_base = if flags & CLONE_SETTLS != 0 {
        tls
    } else {
        arch::fs_base()
    };
    let clear_on_exit = (flags & CLONE_CHILD_CLEARTID != 0).then_some(child_tid);
    let set_tid = (flags & CLONE_CHILD_SETTID != 0).then_some(child_tid);
    if flags & CLONE_PARENT_SETTID != 0 {
        // Checked before the thread exists, so a bad pointer changes nothing.
        user::write(ptr::<u32>(parent_tid), 0)?;
    }
    let token = NEXT_CHILD.fetch_add(1, Ordering::Relaxed);
    CHILDREN.lock().insert(
        token,
        Child {
            frame: child,
            set_tid,
            signal_mask: super::signal::current_mask(),
        },
    );
    let Some(stack) = mm::Stack::new(SYSCALL_STACK_BYTES, mm::NO_THREAD) else {
        CHILDREN.lock().remove(&token);
        return Err(errno::ENOMEM);
    };
    let top = stack.top();
    let started = sched::spawn(ThreadStart {
        entry: child_start,
        arg: usize::try_from(token).unwrap_or(usize::MAX),
        stack_top: top,
        fs_base,
        stack: Some(stack),
        tls: None,
        clear_on_exit,
        core: None,
        syscall_stack: Some(top),
    });
    let tid = match started {
        Ok(tid) => tid,
        Err(e) => {
            CHILDREN.lock().remove(&token);
            return Err(e);
        }
    };
    if flags & CLONE_PARENT_SETTID != 0 {
        user::write(ptr::<u32>(parent_tid), tid)?;
    }
    Ok(u64::from(tid))
}

/// Where a `clone`d thread starts: it takes its registers and enters the
/// program, returning 0 from `clone`.
extern "C" fn child_start(token: usize) {
    let child = CHILDREN.lock().remove(&(token as u64));
    let Some(child) = child else {
        return;
    };
    if let Some(addr) = child.set_tid {
        let _ = user::write(ptr::<u32>(addr), sched::current_tid());
    }
    super::signal::thread_started(child.signal_mask);
    sched::enter_program(&child.frame, 0)
}

/// `set_tid_address(2)`: the word to clear when the thread exits.
pub(super) fn set_tid_address(addr: u64) -> SysResult {
    sched::set_clear_on_exit(Some(addr).filter(|&a| a != 0));
    Ok(u64::from(sched::current_tid()))
}

/// `arch_prctl(2)`: the FS base (the thread pointer of the program's TLS).
pub(super) fn arch_prctl(code: i32, addr: u64) -> SysResult {
    const ARCH_SET_FS: i32 = 0x1002;
    const ARCH_GET_FS: i32 = 0x1003;
    match code {
        ARCH_SET_FS => {
            arch::set_fs_base(addr);
            Ok(0)
        }
        ARCH_GET_FS => user::write(ptr::<u64>(addr), arch::fs_base()).map(|()| 0),
        _ => Err(errno::EINVAL),
    }
}

/// `struct utsname`: six strings of 65 bytes.
#[derive(Clone, Copy)]
#[repr(C)]
struct Utsname([[u8; 65]; 6]);

pub(super) fn uname(out: u64) -> SysResult {
    let fields: [&[u8]; 6] = [
        b"Linux",
        b"eremite",
        b"6.1.0-eremite",
        b"eremite unikernel",
        b"x86_64",
        b"(none)",
    ];
    let mut name = Utsname([[0; 65]; 6]);
    for (slot, text) in name.0.iter_mut().zip(fields) {
        slot[..text.len()].copy_from_slice(text);
    }
    user::write(ptr::<Utsname>(out), name).map(|()| 0)
}

static UMASK: AtomicU32 = AtomicU32::new(0o022);

/// `umask(2)`: the old mask.
pub(super) fn umask(mask: u32) -> u64 {
    u64::from(UMASK.swap(mask & 0o777, Ordering::Relaxed))
}

/// `struct rlimit`.
#[derive(Clone, Copy)]
#[repr(C)]
struct Rlimit {
    current: u64,
    max: u64,
}

const RLIM_INFINITY: u64 = u64::MAX;

/// `prlimit64(2)`/`getrlimit(2)` of this process: the limits it has
/// (stack 8 MiB, 65,536 files, the rest unlimited); new limits are
/// accepted and not enforced.
pub(super) fn prlimit(pid: i32, resource: i32, _new: u64, old: u64) -> SysResult {
    const RLIMIT_STACK: i32 = 3;
    const RLIMIT_NOFILE: i32 = 7;
    if pid != 0 && u64::from(pid.cast_unsigned()) != PID {
        return Err(errno::ESRCH);
    }
    if !(0..16).contains(&resource) {
        return Err(errno::EINVAL);
    }
    if old != 0 {
        let limit = match resource {
            // Every stack is RAM here (nothing is committed lazily), and
            // glibc sizes its threads' stacks by this limit: 2 MiB, as
            // Rust's threads get, rather than Linux's usual 8 MiB.
            RLIMIT_STACK => Rlimit {
                current: 2 << 20,
                max: RLIM_INFINITY,
            },
            RLIMIT_NOFILE => Rlimit {
                current: 65536,
                max: 65536,
            },
            _ => Rlimit {
                current: RLIM_INFINITY,
                max: RLIM_INFINITY,
            },
        };
        user::write(ptr::<Rlimit>(old), limit)?;
    }
    Ok(0)
}

/// `struct sysinfo` (64-bit).
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Sysinfo {
    uptime: i64,
    loads: [u64; 3],
    total_ram: u64,
    free_ram: u64,
    shared_ram: u64,
    buffer_ram: u64,
    total_swap: u64,
    free_swap: u64,
    procs: u16,
    pad: u16,
    total_high: u64,
    free_high: u64,
    mem_unit: u32,
    reserved: [u8; 4],
}

pub(super) fn sysinfo(out: u64) -> SysResult {
    let total = mm::ram_bytes();
    let info = Sysinfo {
        uptime: i64::try_from(crate::time::monotonic_ns() / 1_000_000_000).unwrap_or(0),
        total_ram: total,
        free_ram: total.saturating_sub(mm::heap_in_use_bytes() as u64),
        procs: 1,
        mem_unit: 1,
        ..Sysinfo::default()
    };
    user::write(ptr::<Sysinfo>(out), info).map(|()| 0)
}

/// `prctl(2)`: the calling thread's name (what a debugger shows); the
/// rest is `EINVAL`.
pub(super) fn prctl(option: i32, arg: u64) -> SysResult {
    const PR_SET_NAME: i32 = 15;
    const PR_GET_NAME: i32 = 16;
    match option {
        PR_SET_NAME => {
            let name = user::c_str_prefix(arg, sched::NAME_BYTES)?;
            sched::set_current_name(sched::thread_name(name));
            Ok(0)
        }
        PR_GET_NAME => {
            user::write(ptr::<sched::ThreadName>(arg), sched::current_name()).map(|()| 0)
        }
        _ => Err(errno::EINVAL),
    }
}

/// `getrandom(2)`.
pub(super) fn getrandom(buf: u64, len: usize, flags: u32) -> SysResult {
    const KNOWN: u32 = 0x1 /* NONBLOCK */ | 0x2 /* RANDOM */ | 0x4 /* INSECURE */;
    if flags & !KNOWN != 0 {
        return Err(errno::EINVAL);
    }
    let out = user::slice_mut(ptr(buf), len)?;
    random::fill(out);
    Ok(value(len))
}

/// The CPU count, for `sched_getaffinity`.
pub(super) fn cpu_count() -> usize {
    bootinfo::cpu_count()
}
