//! Linux x86_64 system-call numbers (`arch/x86/entry/syscalls/
//! syscall_64.tbl`), and their names for the tracer and the report of
//! unknown calls.

macro_rules! numbers {
    ($($name:ident = $number:literal, $text:literal;)*) => {
        $( #[allow(dead_code, reason = "named for the tracer; not every call is implemented yet")]
           pub(super) const $name: u64 = $number; )*

        /// The name of system call `number`.
        pub(super) fn name(number: u64) -> &'static str {
            match number {
                $( $number => $text, )*
                _ => "unknown",
            }
        }
    };
}

numbers! {
    READ = 0, "read";
    WRITE = 1, "write";
    OPEN = 2, "open";
    CLOSE = 3, "close";
    STAT = 4, "stat";
    FSTAT = 5, "fstat";
    LSTAT = 6, "lstat";
    POLL = 7, "poll";
    LSEEK = 8, "lseek";
    MMAP = 9, "mmap";
    MPROTECT = 10, "mprotect";
    MUNMAP = 11, "munmap";
    BRK = 12, "brk";
    RT_SIGACTION = 13, "rt_sigaction";
    RT_SIGPROCMASK = 14, "rt_sigprocmask";
    RT_SIGRETURN = 15, "rt_sigreturn";
    IOCTL = 16, "ioctl";
    PREAD64 = 17, "pread64";
    PWRITE64 = 18, "pwrite64";
    READV = 19, "readv";
    WRITEV = 20, "writev";
    ACCESS = 21, "access";
    PIPE = 22, "pipe";
    SELECT = 23, "select";
    SCHED_YIELD = 24, "sched_yield";
    MREMAP = 25, "mremap";
    MADVISE = 28, "madvise";
    DUP = 32, "dup";
    DUP2 = 33, "dup2";
    NANOSLEEP = 35, "nanosleep";
    GETPID = 39, "getpid";
    SOCKET = 41, "socket";
    CONNECT = 42, "connect";
    ACCEPT = 43, "accept";
    SENDTO = 44, "sendto";
    RECVFROM = 45, "recvfrom";
    SENDMSG = 46, "sendmsg";
    RECVMSG = 47, "recvmsg";
    SHUTDOWN = 48, "shutdown";
    BIND = 49, "bind";
    LISTEN = 50, "listen";
    GETSOCKNAME = 51, "getsockname";
    GETPEERNAME = 52, "getpeername";
    SETSOCKOPT = 54, "setsockopt";
    GETSOCKOPT = 55, "getsockopt";
    CLONE = 56, "clone";
    FORK = 57, "fork";
    VFORK = 58, "vfork";
    EXECVE = 59, "execve";
    EXIT = 60, "exit";
    WAIT4 = 61, "wait4";
    KILL = 62, "kill";
    UNAME = 63, "uname";
    FCNTL = 72, "fcntl";
    FSYNC = 74, "fsync";
    FDATASYNC = 75, "fdatasync";
    TRUNCATE = 76, "truncate";
    FTRUNCATE = 77, "ftruncate";
    GETCWD = 79, "getcwd";
    CHDIR = 80, "chdir";
    FCHDIR = 81, "fchdir";
    RENAME = 82, "rename";
    MKDIR = 83, "mkdir";
    RMDIR = 84, "rmdir";
    CREAT = 85, "creat";
    LINK = 86, "link";
    UNLINK = 87, "unlink";
    SYMLINK = 88, "symlink";
    READLINK = 89, "readlink";
    CHMOD = 90, "chmod";
    FCHMOD = 91, "fchmod";
    UMASK = 95, "umask";
    GETTIMEOFDAY = 96, "gettimeofday";
    GETRLIMIT = 97, "getrlimit";
    SYSINFO = 99, "sysinfo";
    GETUID = 102, "getuid";
    GETGID = 104, "getgid";
    GETEUID = 107, "geteuid";
    GETEGID = 108, "getegid";
    GETPPID = 110, "getppid";
    SIGALTSTACK = 131, "sigaltstack";
    PRCTL = 157, "prctl";
    ARCH_PRCTL = 158, "arch_prctl";
    GETTID = 186, "gettid";
    TKILL = 200, "tkill";
    TIME = 201, "time";
    FUTEX = 202, "futex";
    SCHED_SETAFFINITY = 203, "sched_setaffinity";
    SCHED_GETAFFINITY = 204, "sched_getaffinity";
    EPOLL_CREATE = 213, "epoll_create";
    GETDENTS64 = 217, "getdents64";
    SET_TID_ADDRESS = 218, "set_tid_address";
    CLOCK_GETTIME = 228, "clock_gettime";
    CLOCK_GETRES = 229, "clock_getres";
    CLOCK_NANOSLEEP = 230, "clock_nanosleep";
    EXIT_GROUP = 231, "exit_group";
    EPOLL_WAIT = 232, "epoll_wait";
    EPOLL_CTL = 233, "epoll_ctl";
    TGKILL = 234, "tgkill";
    OPENAT = 257, "openat";
    MKDIRAT = 258, "mkdirat";
    NEWFSTATAT = 262, "newfstatat";
    UNLINKAT = 263, "unlinkat";
    RENAMEAT = 264, "renameat";
    LINKAT = 265, "linkat";
    SYMLINKAT = 266, "symlinkat";
    READLINKAT = 267, "readlinkat";
    FCHMODAT = 268, "fchmodat";
    FACCESSAT = 269, "faccessat";
    PSELECT6 = 270, "pselect6";
    PPOLL = 271, "ppoll";
    SET_ROBUST_LIST = 273, "set_robust_list";
    EPOLL_PWAIT = 281, "epoll_pwait";
    EVENTFD = 284, "eventfd";
    ACCEPT4 = 288, "accept4";
    EVENTFD2 = 290, "eventfd2";
    EPOLL_CREATE1 = 291, "epoll_create1";
    DUP3 = 292, "dup3";
    PIPE2 = 293, "pipe2";
    PRLIMIT64 = 302, "prlimit64";
    RENAMEAT2 = 316, "renameat2";
    GETRANDOM = 318, "getrandom";
    STATX = 332, "statx";
    RSEQ = 334, "rseq";
    CLONE3 = 435, "clone3";
    FACCESSAT2 = 439, "faccessat2";
    EPOLL_PWAIT2 = 441, "epoll_pwait2";
}
