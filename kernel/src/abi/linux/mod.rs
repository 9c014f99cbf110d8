//! The Linux x86_64 system-call ABI, for unmodified static Linux programs
//! (`docs/linux.md`): one table line per call, converting the registers
//! into the core's types and the core's result back into Linux's
//! (a value, or `-errno` in RAX).
//!
//! The program's `syscall` sites reach [`dispatch`] as function calls
//! (the VMM rewrote them, see `arch::SyscallFrame`). A call whose return
//! address is not a rewritten site came through a function pointer into
//! page 0 (a null function pointer): it is reported as the fault it
//! would be on Linux. Numbers this layer does not know get `ENOSYS` and
//! are counted; with `--verbose` the kernel lists them at exit.
//!
//! `fork`, `vfork`, `execve` and `wait4` are `ENOSYS`: a unikernel runs one
//! program.

mod file;
mod identity;
mod mem;
mod net;
use eremite_interface::linux_syscalls as nr;
mod poll;
mod process;
mod signal;
mod sites;
mod start;
mod symbols;
mod sync;
mod time;

use core::mem::offset_of;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use eremite_interface::errno::{self, Errno};
use eremite_interface::{BootInfo, KernelReport, LINUX_UNKNOWN_SLOTS, UnknownCall, layout};

use super::{trace, user};
use crate::arch::{self, SyscallFrame};
use crate::console::klog;
use crate::sync::Lock;

pub(crate) use signal::{SIGNALS_PENDING, deliver_interrupted, deliver_pending};
pub(crate) use start::start;

/// What a system call returns: a value or an error.
type SysResult = Result<u64, Errno>;

/// A 32-bit `int` argument: Linux reads the low half of the register.
#[allow(
    clippy::cast_possible_truncation,
    reason = "the ABI's int is the low 32 bits"
)]
fn int(register: u64) -> i32 {
    register as u32 as i32
}

/// A 32-bit unsigned argument (flags, modes).
#[allow(
    clippy::cast_possible_truncation,
    reason = "the ABI's unsigned int is the low 32 bits"
)]
fn uint(register: u64) -> u32 {
    register as u32
}

/// A size argument.
#[allow(
    clippy::cast_possible_truncation,
    reason = "usize is 64 bits on x86_64"
)]
fn size(register: u64) -> usize {
    register as usize
}

/// A signed 64-bit argument (offsets).
fn signed(register: u64) -> i64 {
    register.cast_signed()
}

/// A pointer argument.
fn ptr<T>(register: u64) -> *mut T {
    core::ptr::with_exposed_provenance_mut(size(register))
}

/// A value for RAX.
fn value(n: usize) -> u64 {
    n as u64
}

/// A file descriptor as a result.
fn fd_value(fd: i32) -> u64 {
    u64::from(fd.cast_unsigned())
}

/// How often each unknown number was asked for (numbers up to 511).
static UNKNOWN: [AtomicU32; 512] = [const { AtomicU32::new(0) }; 512];

/// List the numbers that got `ENOSYS`, and how many calls trapped (with
/// `--verbose`, at exit).
pub(crate) fn report_unknown() {
    let traps = TRAPS.load(Ordering::Relaxed);
    if traps > 0 {
        klog!("linux: {traps} system calls came by the trap path (sites left as syscall)");
    }
    for (number, count) in UNKNOWN.iter().enumerate() {
        let count = count.load(Ordering::Relaxed);
        if count > 0 {
            klog!(
                "linux: system call {number} ({}) is not implemented; asked {count} times",
                nr::name(number as u64)
            );
        }
    }
}

/// Where a rewritten system call arrives (from `arch`, on the thread's
/// system-call stack), with its registers in `frame`.
pub(crate) extern "C" fn dispatch(frame: &mut SyscallFrame) -> u64 {
    if !sites::is_rewritten(frame.rip) {
        process::null_call(frame);
    }
    run(frame)
}

/// System calls that came by the trap path (a `syscall` left in place).
static TRAPS: AtomicU64 = AtomicU64::new(0);

/// Where a `syscall` left in place arrives (through LSTAR).
pub(crate) extern "C" fn dispatch_trap(frame: &mut SyscallFrame) -> u64 {
    let traps = TRAPS.fetch_add(1, Ordering::Relaxed) + 1;
    arch::write_report_word(report_field(offset_of!(KernelReport, linux_traps)), traps);
    run(frame)
}

/// Write `value` to the kernel report's field at `offset`.
fn report(offset: usize, value: u64) {
    arch::write_report_word(report_field(offset), value);
}

/// The address of the kernel report's field at `offset` (which the VMM
/// reads after the run, for `--stats`).
fn report_field(offset: usize) -> u64 {
    layout::BOOT_INFO_ADDR + (BootInfo::REPORT_OFFSET + offset) as u64
}

/// The report's slots for unimplemented calls: the numbers in them and
/// their counts, in order of first appearance.
static UNKNOWN_SLOTS: Lock<[UnknownCall; LINUX_UNKNOWN_SLOTS]> = Lock::new(
    [UnknownCall {
        number: 0,
        count: 0,
    }; LINUX_UNKNOWN_SLOTS],
);

/// Count a call to the unimplemented `number`, for `--verbose` and
/// `--stats`.
#[cold]
fn count_unknown(number: u64) {
    if let Some(count) = usize::try_from(number).ok().and_then(|n| UNKNOWN.get(n)) {
        count.fetch_add(1, Ordering::Relaxed);
    }
    let Ok(number) = u32::try_from(number) else {
        return;
    };
    let mut slots = UNKNOWN_SLOTS.lock();
    let found = slots
        .iter()
        .position(|s| s.count > 0 && s.number == number)
        .or_else(|| slots.iter().position(|s| s.count == 0));
    if let Some(i) = found {
        slots[i].number = number;
        slots[i].count = slots[i].count.saturating_add(1);
        let word = u64::from(number) | (u64::from(slots[i].count) << 32);
        let slot = offset_of!(KernelReport, linux_unknown) + i * size_of::<UnknownCall>();
        arch::write_report_word(report_field(slot), word);
    }
}

/// Make the call and trace it.
fn run(frame: &mut SyscallFrame) -> u64 {
    let result = raw(call(frame));
    if trace::is_on() {
        log(frame, result);
    }
    result
}

/// The tracer's line for a call (its arguments are still in the frame).
#[cold]
#[inline(never)]
fn log(frame: &SyscallFrame, result: u64) {
    let a = frame.args;
    let shown: [&dyn trace::TraceValue; 6] = [&a[0], &a[1], &a[2], &a[3], &a[4], &a[5]];
    trace::log(nr::name(frame.nr), &shown, Some(&result.cast_signed()));
}

/// RAX for a result: the value, or `-errno`.
fn raw(result: SysResult) -> u64 {
    match result {
        Ok(v) => v,
        Err(e) => i64::from(e.negated()).cast_unsigned(),
    }
}

/// The table: one line per call.
fn call(frame: &mut SyscallFrame) -> SysResult {
    let [a, b, c, d, e, f] = frame.args;
    match frame.nr {
        nr::READ => file::read(int(a), b, size(c)),
        nr::WRITE => signal::on_broken_pipe(file::write(int(a), b, size(c))),
        nr::OPEN => file::openat(file::AT_FDCWD, a, uint(b), uint(c)),
        nr::CLOSE => file::close(int(a)),
        nr::STAT => file::fstatat(file::AT_FDCWD, a, b, 0),
        nr::FSTAT => file::fstat(int(a), b),
        nr::LSTAT => file::fstatat(file::AT_FDCWD, a, b, file::AT_SYMLINK_NOFOLLOW),
        nr::POLL => poll::poll(a, size(b), int(c)),
        nr::LSEEK => file::lseek(int(a), signed(b), int(c)),
        nr::MMAP => mem::mmap(a, size(b), uint(c), uint(d), int(e), signed(f)),
        nr::MPROTECT => mem::mprotect(a, size(b), uint(c)),
        nr::MUNMAP => mem::munmap(a, size(b), frame.rsp),
        nr::BRK => mem::brk(a),
        nr::RT_SIGACTION => signal::rt_sigaction(int(a), b, c, size(d)),
        nr::RT_SIGRETURN => signal::rt_sigreturn(frame),
        nr::RT_SIGPROCMASK => signal::rt_sigprocmask(frame, int(a), b, c, size(d)),
        nr::IOCTL => file::ioctl(int(a), uint(b), c),
        nr::PREAD64 => file::pread(int(a), b, size(c), signed(d)),
        nr::PWRITE64 => file::pwrite(int(a), b, size(c), signed(d)),
        nr::READV => file::readv(int(a), b, size(c)),
        nr::WRITEV => signal::on_broken_pipe(file::writev(int(a), b, size(c))),
        nr::ACCESS => file::faccessat(file::AT_FDCWD, a, uint(b)),
        nr::SCHED_YIELD => sync::sched_yield(),
        nr::MREMAP => mem::mremap(a, size(b), size(c), uint(d), e),
        nr::MADVISE => mem::madvise(a, size(b), int(c)),
        nr::DUP => file::dup(int(a)),
        nr::DUP2 => file::dup3(int(a), int(b), 0, true),
        nr::NANOSLEEP => time::nanosleep(a, b),
        nr::GETPID => Ok(process::PID),
        nr::SOCKET => net::socket(uint(a), uint(b), int(c)),
        nr::SOCKETPAIR => net::socketpair(uint(a), uint(b), int(c), d),
        nr::CONNECT => net::connect(int(a), b, uint(c)),
        nr::ACCEPT => net::accept4(int(a), b, c, 0),
        nr::ACCEPT4 => net::accept4(int(a), b, c, uint(d)),
        nr::SENDTO => net::sendto(int(a), b, size(c), uint(d), e, uint(f)),
        nr::RECVFROM => net::recvfrom(int(a), b, size(c), uint(d), e, f),
        nr::SENDMSG => net::sendmsg(int(a), b, uint(c)),
        nr::RECVMSG => net::recvmsg(int(a), b, uint(c)),
        nr::SHUTDOWN => net::shutdown(int(a), int(b)),
        nr::BIND => net::bind(int(a), b, uint(c)),
        nr::LISTEN => net::listen(int(a), int(b)),
        nr::GETSOCKNAME => net::getsockname(int(a), b, c),
        nr::GETPEERNAME => net::getpeername(int(a), b, c),
        nr::SETSOCKOPT => net::setsockopt(int(a), int(b), int(c), d, uint(e)),
        nr::GETSOCKOPT => net::getsockopt(int(a), int(b), int(c), d, e),
        nr::CLONE => process::clone(frame, a, b, c, d, e),
        nr::FORK | nr::VFORK | nr::EXECVE | nr::WAIT4 => process::one_process(frame.nr),
        nr::EXIT => process::exit_thread(int(a)),
        nr::KILL => signal::kill(frame, int(a), int(b)),
        nr::UNAME => process::uname(a),
        nr::FCNTL => file::fcntl(int(a), int(b), c),
        nr::FLOCK => file::flock(int(a), int(b)),
        nr::FSYNC => file::fsync(int(a), false),
        nr::FDATASYNC => file::fsync(int(a), true),
        nr::TRUNCATE => file::truncate(a, signed(b)),
        nr::FTRUNCATE => file::ftruncate(int(a), signed(b)),
        nr::GETCWD => file::getcwd(a, size(b)),
        nr::CHDIR => file::chdir(a),
        nr::FCHDIR => file::fchdir(int(a)),
        nr::RENAME => file::renameat(file::AT_FDCWD, a, file::AT_FDCWD, b),
        nr::MKDIR => file::mkdirat(file::AT_FDCWD, a, uint(b)),
        nr::RMDIR => file::unlinkat(file::AT_FDCWD, a, file::AT_REMOVEDIR),
        nr::CREAT => file::openat(
            file::AT_FDCWD,
            a,
            file::O_CREAT | file::O_WRONLY | file::O_TRUNC,
            uint(b),
        ),
        nr::LINK => file::linkat(file::AT_FDCWD, a, file::AT_FDCWD, b, 0),
        nr::LINKAT => file::linkat(int(a), b, int(c), d, uint(e)),
        nr::UNLINK => file::unlinkat(file::AT_FDCWD, a, 0),
        nr::SYMLINK => file::symlinkat(a, file::AT_FDCWD, b),
        nr::SYMLINKAT => file::symlinkat(a, int(b), c),
        nr::READLINK => file::readlinkat(file::AT_FDCWD, a, b, size(c)),
        nr::CHMOD => file::fchmodat(file::AT_FDCWD, a, uint(b)),
        nr::FCHMODAT => file::fchmodat(int(a), b, uint(c)),
        nr::FCHMOD => Ok(0),
        nr::CHOWN => file::fchownat(file::AT_FDCWD, a, 0),
        nr::LCHOWN => file::fchownat(file::AT_FDCWD, a, file::AT_SYMLINK_NOFOLLOW),
        nr::FCHOWNAT => file::fchownat(int(a), b, uint(e)),
        nr::FCHOWN => file::fchown(int(a)),
        nr::UMASK => Ok(process::umask(uint(a))),
        nr::GETTIMEOFDAY => time::gettimeofday(a),
        nr::GETRLIMIT => process::prlimit(0, int(a), 0, b),
        nr::SYSINFO => process::sysinfo(a),
        nr::GETUID => identity::get(false, false),
        nr::GETEUID => identity::get(false, true),
        nr::GETGID => identity::get(true, false),
        nr::GETEGID => identity::get(true, true),
        nr::SETUID => identity::set(false, uint(a)),
        nr::SETGID => identity::set(true, uint(a)),
        nr::SETREUID => identity::set_real_effective(false, uint(a), uint(b)),
        nr::SETREGID => identity::set_real_effective(true, uint(a), uint(b)),
        nr::SETRESUID => identity::set_all(false, uint(a), uint(b), uint(c)),
        nr::SETRESGID => identity::set_all(true, uint(a), uint(b), uint(c)),
        nr::GETRESUID => identity::get_all(false, a, b, c),
        nr::GETRESGID => identity::get_all(true, a, b, c),
        nr::SETFSUID => identity::set_fs(false, uint(a)),
        nr::SETFSGID => identity::set_fs(true, uint(a)),
        nr::GETGROUPS => identity::getgroups(int(a), b),
        nr::SETGROUPS => identity::setgroups(size(a), b),
        nr::GETPGRP => identity::group_of(0),
        nr::GETPGID | nr::GETSID => identity::group_of(int(a)),
        nr::SETPGID => identity::setpgid(int(a), int(b)),
        nr::SETSID => identity::setsid(),
        nr::GETPPID => Ok(0),
        nr::SIGALTSTACK => signal::sigaltstack(a, b, frame.rsp),
        nr::PRCTL => process::prctl(int(a), b),
        nr::ARCH_PRCTL => process::arch_prctl(int(a), b),
        nr::GETTID => Ok(u64::from(crate::sched::current_tid())),
        nr::TKILL => signal::tgkill(frame, 0, int(a), int(b)),
        nr::TIME => time::time(a),
        nr::FUTEX => sync::futex(a, int(b), uint(c), d, e, uint(f)),
        nr::SCHED_GETAFFINITY => sync::sched_getaffinity(int(a), size(b), c),
        nr::SCHED_SETAFFINITY => sync::sched_setaffinity(int(a), size(b), c),
        nr::GETDENTS64 => file::getdents64(int(a), b, size(c)),
        nr::SET_TID_ADDRESS => process::set_tid_address(a),
        nr::CLOCK_GETTIME => time::clock_gettime(int(a), b),
        nr::CLOCK_GETRES => time::clock_getres(int(a), b),
        nr::CLOCK_NANOSLEEP => time::clock_nanosleep(int(a), int(b), c, d),
        nr::EXIT_GROUP => process::exit_group(int(a)),
        nr::TGKILL => signal::tgkill(frame, int(a), int(b), int(c)),
        nr::OPENAT => file::openat(int(a), b, uint(c), uint(d)),
        nr::MKDIRAT => file::mkdirat(int(a), b, uint(c)),
        nr::NEWFSTATAT => file::fstatat(int(a), b, c, uint(d)),
        nr::UNLINKAT => file::unlinkat(int(a), b, uint(c)),
        nr::RENAMEAT => file::renameat(int(a), b, int(c), d),
        nr::RENAMEAT2 => file::renameat2(int(a), b, int(c), d, uint(e)),
        nr::READLINKAT => file::readlinkat(int(a), b, c, size(d)),
        nr::FACCESSAT | nr::FACCESSAT2 => file::faccessat(int(a), b, uint(c)),
        nr::PPOLL => poll::ppoll(a, size(b), c, d),
        nr::SET_ROBUST_LIST => Ok(0),
        nr::EVENTFD2 => poll::eventfd2(uint(a), uint(b)),
        nr::EVENTFD => poll::eventfd2(uint(a), 0),
        nr::SELECT => poll::select(int(a), b, c, d, e),
        nr::PSELECT6 => poll::pselect6(int(a), b, c, d, e),
        nr::EPOLL_CREATE => poll::epoll_create(int(a)),
        nr::EPOLL_CREATE1 => poll::epoll_create1(uint(a)),
        nr::EPOLL_CTL => poll::epoll_ctl(int(a), int(b), int(c), d),
        nr::EPOLL_WAIT => poll::epoll_wait(int(a), b, int(c), int(d)),
        nr::EPOLL_PWAIT => poll::epoll_pwait(int(a), b, int(c), int(d), e),
        nr::EPOLL_PWAIT2 => poll::epoll_pwait2(int(a), b, int(c), d, e),
        nr::PIPE => poll::pipe2(a, 0),
        nr::PIPE2 => poll::pipe2(a, uint(b)),
        nr::DUP3 => file::dup3(int(a), int(b), uint(c), false),
        nr::PRLIMIT64 => process::prlimit(int(a), int(b), c, d),
        nr::GETRANDOM => process::getrandom(a, size(b), uint(c)),
        nr::STATX => file::statx(int(a), b, uint(c), uint(d), e),
        nr::RSEQ | nr::CLONE3 => Err(errno::ENOSYS),
        number => {
            count_unknown(number);
            Err(errno::ENOSYS)
        }
    }
}
