//! Which system calls each kind of VMM thread may make once the guest
//! runs: the data the seccomp filters are built from (`seccomp`). Every
//! call here is one the VMM was seen to make under `strace -f` across its
//! features (mounts, tap, passt, switch, several vCPUs, Linux programs,
//! signals), or one the Rust runtime makes on a path those runs did not
//! take (a thread's start and end, a panic's abort, the allocator growing
//! its heap). Anything else stops the VMM with a message naming the call.
//!
//! Kinds, from the widest:
//! - [`VCPU`]: runs the guest, serves hypercalls (the mount sandbox's file
//!   calls) and starts device workers ([`WORKER_START`]), so it also holds
//!   [`DEVICE`] (a worker inherits its starter's filter and adds its own).
//! - [`DEVICE`]: a device's worker moving frames between a virtqueue and
//!   the tap, passt or the switch.
//! - [`MAIN`]: the thread that built the VM, from the moment every vCPU
//!   thread has started: it waits for a stop, stops the devices, reaps
//!   passt and reports.
//! - [`SWITCH`]: the `eremite switch` process, once it listens.
//! - [`DEBUGGER`]: the GDB server's thread (`--gdb`).
//! - [`API`]: the control socket's thread (`--api`).
//!
//! [`COMMON`] is in every kind: what any thread of a Rust program needs.

/// How one call's arguments are restricted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Args {
    /// Any arguments.
    Any,
    /// `ioctl` with one of these requests (argument 1).
    Requests(&'static [u64]),
    /// `mmap`/`mprotect` without `PROT_EXEC` in argument 2: no new code
    /// is ever mapped once the guest runs.
    NoExec,
    /// `prctl` with one of these options (argument 0).
    Options(&'static [u64]),
}

/// A system call a kind of thread may make.
#[derive(Clone, Copy, Debug)]
pub(super) struct Allowed {
    pub(super) number: i64,
    pub(super) args: Args,
}

macro_rules! calls {
    ($($name:ident $(: $args:expr)?),* $(,)?) => {
        &[$(Allowed {
            number: sys::$name,
            args: calls!(@args $($args)?),
        }),*]
    };
    (@args) => { Args::Any };
    (@args $args:expr) => { $args };
}

/// System call numbers under their names, for the `calls!` lists (the
/// last few only name calls for messages).
#[allow(non_upper_case_globals, dead_code)]
mod sys {
    macro_rules! numbers {
        ($($name:ident = $sys:ident),* $(,)?) => {
            $(pub(super) const $name: i64 = libc::$sys;)*
            /// Every call named here, for messages.
            pub(super) const ALL: &[(i64, &str)] = &[$((libc::$sys, stringify!($name))),*];
        };
    }
    numbers! {
        accept4 = SYS_accept4, brk = SYS_brk, clock_gettime = SYS_clock_gettime,
        clock_nanosleep = SYS_clock_nanosleep, clone = SYS_clone, clone3 = SYS_clone3,
        close = SYS_close, epoll_create1 = SYS_epoll_create1, epoll_ctl = SYS_epoll_ctl,
        epoll_pwait = SYS_epoll_pwait, epoll_wait = SYS_epoll_wait, eventfd2 = SYS_eventfd2,
        exit = SYS_exit, exit_group = SYS_exit_group, fchmod = SYS_fchmod,
        fchmodat = SYS_fchmodat, fcntl = SYS_fcntl, fdatasync = SYS_fdatasync,
        fstat = SYS_fstat, fsync = SYS_fsync, ftruncate = SYS_ftruncate, futex = SYS_futex,
        getdents64 = SYS_getdents64, getpid = SYS_getpid, getrandom = SYS_getrandom,
        gettid = SYS_gettid, ioctl = SYS_ioctl, kill = SYS_kill, linkat = SYS_linkat,
        lseek = SYS_lseek, madvise = SYS_madvise, mkdirat = SYS_mkdirat, mmap = SYS_mmap,
        mincore = SYS_mincore, mprotect = SYS_mprotect, mremap = SYS_mremap, munmap = SYS_munmap,
        nanosleep = SYS_nanosleep, newfstatat = SYS_newfstatat, openat2 = SYS_openat2,
        poll = SYS_poll, ppoll = SYS_ppoll, prctl = SYS_prctl, pread64 = SYS_pread64,
        pwrite64 = SYS_pwrite64, read = SYS_read, readlinkat = SYS_readlinkat,
        readv = SYS_readv, recvfrom = SYS_recvfrom, recvmsg = SYS_recvmsg,
        renameat = SYS_renameat, renameat2 = SYS_renameat2, restart_syscall = SYS_restart_syscall,
        rseq = SYS_rseq, rt_sigaction = SYS_rt_sigaction, rt_sigprocmask = SYS_rt_sigprocmask,
        rt_sigreturn = SYS_rt_sigreturn, seccomp = SYS_seccomp, sched_getaffinity = SYS_sched_getaffinity,
        sched_setaffinity = SYS_sched_setaffinity, sched_yield = SYS_sched_yield,
        sendmsg = SYS_sendmsg, sendto = SYS_sendto, set_robust_list = SYS_set_robust_list,
        shutdown = SYS_shutdown, sigaltstack = SYS_sigaltstack, statx = SYS_statx,
        symlinkat = SYS_symlinkat, tgkill = SYS_tgkill, timer_create = SYS_timer_create,
        timer_settime = SYS_timer_settime, timer_delete = SYS_timer_delete, unlink = SYS_unlink,
        unlinkat = SYS_unlinkat, wait4 = SYS_wait4, write = SYS_write, writev = SYS_writev,
        // Allowed to no thread; named for the message that stops the VMM.
        socket = SYS_socket, connect = SYS_connect, bind = SYS_bind, listen = SYS_listen,
        execve = SYS_execve, execveat = SYS_execveat, open = SYS_open, openat = SYS_openat,
        ptrace = SYS_ptrace, mount = SYS_mount, process_vm_writev = SYS_process_vm_writev,
    }
}

/// The name of system call `number`, if this file knows it.
pub(super) fn name(number: i64) -> Option<&'static str> {
    sys::ALL
        .iter()
        .find(|(n, _)| *n == number)
        .map(|(_, name)| *name)
}

/// `_IOC(dir, 0xAE, nr, size)`: a KVM ioctl request.
const fn kvm(dir: u64, nr: u64, size: usize) -> u64 {
    dir << 30 | (size as u64) << 16 | 0xAE << 8 | nr
}
const NONE: u64 = 0;
const WRITE: u64 = 1;
const READ: u64 = 2;

/// `KVM_SIGNAL_MSI`: the host-signal handler raises the guest's vector;
/// a handler runs on whichever thread the signal lands.
pub(super) const KVM_SIGNAL_MSI: u64 = kvm(WRITE, 0xa5, 32);

/// The vCPU ioctls once the VM runs: run, start an application processor
/// (registers and state), read the registers for a fault's report.
const VCPU_IOCTLS: &[u64] = &[
    kvm(NONE, 0x80, 0), // KVM_RUN
    kvm(READ, 0x81, size_of::<kvm_bindings::kvm_regs>()),
    kvm(WRITE, 0x82, size_of::<kvm_bindings::kvm_regs>()),
    kvm(READ, 0x83, size_of::<kvm_bindings::kvm_sregs>()),
    kvm(WRITE, 0x84, size_of::<kvm_bindings::kvm_sregs>()),
    kvm(READ | WRITE, 0x88, size_of::<kvm_bindings::kvm_msrs>()),
    kvm(WRITE, 0x89, size_of::<kvm_bindings::kvm_msrs>()),
    // `--gdb`: a parked vCPU's x87 and SSE registers,
    kvm(READ, 0x8c, size_of::<kvm_bindings::kvm_fpu>()),
    kvm(WRITE, 0x8d, size_of::<kvm_bindings::kvm_fpu>()),
    // `--gdb`: its AVX registers (KVM_GET_XSAVE).
    kvm(READ, 0xa4, size_of::<kvm_bindings::kvm_xsave>()),
    kvm(READ, 0x98, size_of::<kvm_bindings::kvm_mp_state>()),
    kvm(WRITE, 0x99, size_of::<kvm_bindings::kvm_mp_state>()),
    // `--api`: what a vCPU parked for a snapshot saves (with the above):
    // KVM_GET_LAPIC, KVM_GET_VCPU_EVENTS, KVM_GET_DEBUGREGS, KVM_GET_XCRS.
    kvm(READ, 0x8e, size_of::<kvm_bindings::kvm_lapic_state>()),
    kvm(READ, 0x9f, size_of::<kvm_bindings::kvm_vcpu_events>()),
    kvm(READ, 0xa1, size_of::<kvm_bindings::kvm_debugregs>()),
    kvm(READ, 0xa6, size_of::<kvm_bindings::kvm_xcrs>()),
    KVM_SIGNAL_MSI,
];

/// Thread names (`PR_SET_NAME`, as a new thread names itself) and reading
/// them back (the `SIGSYS` message).
const NAMES: &[u64] = &[libc::PR_SET_NAME as u64, libc::PR_GET_NAME as u64];

/// What every thread of a Rust program needs: memory (never executable),
/// locks, signals, its own start and end, time, the standard streams.
pub(super) const COMMON: &[Allowed] = calls![
    brk, clock_gettime, clock_nanosleep, close, exit, exit_group, futex, getpid,
    getrandom, gettid, madvise, mmap: Args::NoExec, mprotect: Args::NoExec, mremap,
    munmap, nanosleep, prctl: Args::Options(NAMES), restart_syscall, rseq,
    rt_sigprocmask, rt_sigreturn, sched_getaffinity, sched_yield, set_robust_list,
    sigaltstack, tgkill, write, writev,
];

/// A vCPU thread (with [`DEVICE`], which its workers need).
pub(super) const VCPU: &[Allowed] = calls![
    // The guest.
    ioctl: Args::Requests(VCPU_IOCTLS), sched_setaffinity,
    // The mount sandbox (`sandbox`): every path through openat2.
    openat2, read, pread64, pwrite64, lseek, getdents64, statx, newfstatat, fstat,
    mkdirat, unlinkat, renameat, renameat2, symlinkat, linkat, readlinkat, fchmod,
    fchmodat, ftruncate, fsync, fdatasync, fcntl,
    // The profiler's clock (`--profile`), armed once the vCPU starts.
    timer_create, timer_settime, timer_delete,
];

/// Starting a device's worker: when the guest's driver is ready (a vCPU
/// thread), or again after a snapshot (the control socket's thread). The
/// worker enters its own, narrower filter on top of its starter's (filters
/// only add limits), so a starter also holds [`DEVICE`].
pub(super) const WORKER_START: &[Allowed] = calls![
    eventfd2, clone3, clone, prctl: Args::Options(&[libc::PR_SET_NO_NEW_PRIVS as u64]), seccomp,
];

/// A device's worker thread.
pub(super) const DEVICE: &[Allowed] = calls![
    ioctl: Args::Requests(&[KVM_SIGNAL_MSI]), sched_setaffinity, read, readv,
    recvfrom, recvmsg, sendto, sendmsg, epoll_create1, epoll_ctl, epoll_wait,
    epoll_pwait, poll, ppoll,
    // passt died: reap it and read why from its log.
    wait4, lseek, statx, fstat, newfstatat,
];

/// The main thread once the vCPUs run.
pub(super) const MAIN: &[Allowed] = calls![
    ioctl: Args::Requests(&[KVM_SIGNAL_MSI]),
    // Host signals: their handlers go back when the run ends.
    rt_sigaction,
    // passt: its socket is shut, it is killed if need be and reaped.
    shutdown, kill, wait4,
];

/// The GDB server's thread (`--gdb`), its connection accepted: the
/// protocol on it, the hub's eventfd, and kicking vCPU threads (`tgkill`,
/// in [`COMMON`]).
pub(super) const DEBUGGER: &[Allowed] = calls![read, recvfrom, sendto, poll, ppoll];

/// The control socket's thread (`--api`): its connections, the descriptors
/// a client passes for a snapshot (written, never opened here: Landlock
/// would refuse), which pages of guest RAM are backed (`mincore`), and
/// kicking vCPU threads (`tgkill`, in [`COMMON`]); with [`WORKER_START`]
/// and [`DEVICE`], for the network card's worker it stops and starts
/// again around a snapshot.
pub(super) const API: &[Allowed] = calls![
    accept4, read, recvfrom, recvmsg, sendto, sendmsg, poll, ppoll, fcntl, pwrite64, ftruncate,
    fsync, fstat, statx, lseek, mincore,
];

/// The `eremite switch` process once it listens.
pub(super) const SWITCH: &[Allowed] = calls![
    accept4, read, recvfrom, recvmsg, sendto, sendmsg, poll, ppoll, fcntl,
    // A new port's socket is made non-blocking.
    ioctl: Args::Requests(&[libc::FIONBIO]),
    // Its socket file, removed when the last VM has gone.
    unlink, unlinkat,
];
