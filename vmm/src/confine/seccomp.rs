//! A seccomp filter per kind of VMM thread, built with rust-vmm's
//! `seccompiler` from the lists in `rules`.
//!
//! [`prepare`] compiles the filters of the process's thread kinds and installs the `SIGSYS`
//! handler; from then on each thread calls [`enter`] with its kind as it
//! starts (the main thread once the vCPU threads have started, since a
//! thread inherits the filter of the thread that started it). A call
//! outside the list traps: the handler writes one line naming the thread
//! kind and the call, and the VMM exits with 159 (128 + `SIGSYS`).
//! Before [`prepare`] (a VMM that is not confined, such as the in-process
//! tests), [`enter`] does nothing.
//!
//! For the tests, `EREMITE_TEST_FORBIDDEN_CALL=KIND` makes the first
//! thread of that kind try `socket(2)` right after its filter is in
//! force.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::sync::OnceLock;

use seccompiler::BpfProgram;

use super::bpf::{self, Actions, ProgramError, Rule, Test};

use super::rules::{self, Allowed, Args};

/// What a VMM thread does, which decides the calls it may make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ThreadKind {
    /// The thread that built the VM, once the vCPUs run.
    Main,
    /// A vCPU thread.
    Vcpu,
    /// A device's worker.
    Device,
    /// The `eremite switch` process.
    Switch,
    /// The GDB server (`--gdb`).
    Debugger,
    /// The control socket's server (`--api`).
    Api,
}

impl ThreadKind {
    const ALL: [ThreadKind; 6] = [
        Self::Main,
        Self::Vcpu,
        Self::Device,
        Self::Switch,
        Self::Debugger,
        Self::Api,
    ];
    /// The kinds of a VMM process's threads.
    pub(crate) const VMM: [ThreadKind; 5] = [
        Self::Main,
        Self::Vcpu,
        Self::Device,
        Self::Debugger,
        Self::Api,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Main => "main",
            Self::Vcpu => "vcpu",
            Self::Device => "device",
            Self::Switch => "switch",
            Self::Debugger => "gdb",
            Self::Api => "api",
        }
    }

    fn allowed(self) -> impl Iterator<Item = &'static Allowed> {
        let lists: &[&[Allowed]] = match self {
            Self::Main => &[rules::COMMON, rules::MAIN],
            Self::Vcpu => &[
                rules::COMMON,
                rules::VCPU,
                rules::WORKER_START,
                rules::DEVICE,
            ],
            Self::Device => &[rules::COMMON, rules::DEVICE],
            Self::Switch => &[rules::COMMON, rules::SWITCH],
            Self::Debugger => &[rules::COMMON, rules::DEBUGGER],
            Self::Api => &[
                rules::COMMON,
                rules::API,
                rules::WORKER_START,
                rules::DEVICE,
            ],
        };
        lists.iter().flat_map(|list| list.iter())
    }
}

/// Exit status of a VMM stopped by its filter: 128 + `SIGSYS`.
pub(crate) const EXIT_FORBIDDEN_CALL: i32 = 128 + libc::SIGSYS;

/// The environment variable of the test hook (module documentation).
const TEST_HOOK: &str = "EREMITE_TEST_FORBIDDEN_CALL";

/// The compiled filters of this process's kinds, once [`prepare`] ran.
struct Filters {
    programs: Vec<(ThreadKind, BpfProgram)>,
    /// The kind whose thread tries a forbidden call (the test hook).
    tries_forbidden_call: Option<ThreadKind>,
}

static FILTERS: OnceLock<Filters> = OnceLock::new();

thread_local! {
    /// This thread's kind, for the `SIGSYS` message.
    static KIND: Cell<Option<ThreadKind>> = const { Cell::new(None) };
}

/// The filter for `kind`: its calls allowed, anything else traps.
pub(crate) fn filter(kind: ThreadKind) -> Result<BpfProgram, ProgramError> {
    let mut calls: BTreeMap<u32, Rule> = BTreeMap::new();
    for call in kind.allowed() {
        let number =
            u32::try_from(call.number).map_err(|_| ProgramError::BadNumber(call.number))?;
        let tests: Vec<Test> = match call.args {
            Args::Any => {
                calls.insert(number, Rule::Always);
                continue;
            }
            Args::Requests(values) => equals(1, values)?,
            Args::Options(values) => equals(0, values)?,
            Args::NoExec => vec![Test::Clear {
                arg: 2,
                mask: libc::PROT_EXEC as u32,
            }],
        };
        // (`Always`: already allowed with any arguments.)
        if let Rule::AnyOf(existing) = calls
            .entry(number)
            .or_insert_with(|| Rule::AnyOf(Vec::new()))
        {
            existing.extend(tests);
        }
    }
    bpf::program(
        &calls,
        Actions {
            allow: libc::SECCOMP_RET_ALLOW,
            deny: libc::SECCOMP_RET_TRAP,
            wrong_arch: libc::SECCOMP_RET_KILL_PROCESS,
        },
    )
}

/// Tests that argument `arg` is one of `values` (each a 32-bit value).
fn equals(arg: u8, values: &[u64]) -> Result<Vec<Test>, ProgramError> {
    values
        .iter()
        .map(|&value| {
            let value = u32::try_from(value).map_err(|_| ProgramError::ValueTooWide(value))?;
            Ok(Test::Equals { arg, value })
        })
        .collect()
}

/// Compile the filters of `kinds` (the thread kinds of this process) and
/// install the `SIGSYS` handler; after this, [`enter`] confines the thread
/// that calls it.
pub(crate) fn prepare(kinds: &[ThreadKind]) -> io::Result<()> {
    let programs = kinds
        .iter()
        .copied()
        .map(|kind| filter(kind).map(|program| (kind, program)))
        .collect::<Result<_, _>>()
        .map_err(io::Error::other)?;
    let tries_forbidden_call = std::env::var(TEST_HOOK)
        .ok()
        .and_then(|name| ThreadKind::ALL.into_iter().find(|k| k.name() == name));
    install_sigsys_handler()?;
    let _ = FILTERS.set(Filters {
        programs,
        tries_forbidden_call,
    });
    Ok(())
}

/// Confine the calling thread to what `kind` may do (nothing happens
/// before [`prepare`]). Threads it starts from now on inherit the filter.
pub(crate) fn enter(kind: ThreadKind) -> io::Result<()> {
    let Some(filters) = FILTERS.get() else {
        return Ok(());
    };
    let Some((_, program)) = filters.programs.iter().find(|(k, _)| *k == kind) else {
        return Ok(());
    };
    KIND.with(|k| k.set(Some(kind)));
    seccompiler::apply_filter(program).map_err(io::Error::other)?;
    if filters.tries_forbidden_call == Some(kind) {
        try_forbidden_call();
    }
    Ok(())
}

/// The test hook: open a socket, which no VMM thread may.
#[allow(unsafe_code)]
fn try_forbidden_call() {
    // SAFETY: `socket` takes no pointers; the filter traps it before the
    // kernel acts, and if it did not, the descriptor is closed at once.
    let fd = unsafe { libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0) };
    if fd >= 0 {
        // SAFETY: the descriptor was just opened here and nothing else
        // owns it.
        unsafe { libc::close(fd as i32) };
    }
}

/// The fields of a `SIGSYS` `siginfo_t` on x86_64 (`struct
/// __sifields._sigsys`, after the three leading ints and their padding).
#[repr(C)]
struct SigsysInfo {
    signo: i32,
    errno: i32,
    code: i32,
    _pad: i32,
    call_addr: usize,
    syscall: i32,
    arch: u32,
}

/// A fixed buffer to format the message in, without allocating.
struct Line {
    bytes: [u8; 256],
    len: usize,
}

impl std::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = self.bytes.len() - self.len;
        let n = s.len().min(room);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

#[allow(unsafe_code)]
extern "C" fn on_sigsys(
    _signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid `siginfo_t` to an `SA_SIGINFO`
    // handler; for `SIGSYS` from seccomp its union holds `_sigsys`, whose
    // layout `SigsysInfo` repeats, and the struct is larger than it.
    let number = i64::from(unsafe { (*info.cast::<SigsysInfo>()).syscall });
    let kind = KIND.with(Cell::get).map_or("unconfined", ThreadKind::name);
    let mut line = Line {
        bytes: [0; 256],
        len: 0,
    };
    let _ = write!(
        line,
        "eremite: the VMM's {kind} thread made system call {number}"
    );
    if let Some(name) = rules::name(number) {
        let _ = write!(line, " ({name})");
    }
    let _ = writeln!(
        line,
        ", which its seccomp filter forbids: stopped (a bug in eremite, or a guest that took over the VMM)"
    );
    // SAFETY: `write` and `_exit` are async-signal-safe and allowed to
    // every thread kind; the buffer lives on this stack.
    unsafe {
        libc::write(2, line.bytes.as_ptr().cast(), line.len);
        libc::_exit(EXIT_FORBIDDEN_CALL);
    }
}

#[allow(unsafe_code)]
fn install_sigsys_handler() -> io::Result<()> {
    // SAFETY: an all-zero `sigaction` is a valid starting value; the
    // handler only formats into its own stack and calls `write` and
    // `_exit`.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigsys as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&raw mut action.sa_mask);
        if libc::sigaction(libc::SIGSYS, &raw const action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_kind_has_a_filter() {
        for kind in ThreadKind::ALL {
            assert!(!filter(kind).unwrap().is_empty(), "{kind:?}");
        }
    }

    /// What `rules` say of a call, straight from the lists.
    fn is_allowed(kind: ThreadKind, data: &bpf::SeccompData) -> bool {
        #[allow(clippy::cast_possible_truncation)]
        let low = |arg: usize| u64::from(data.args[arg] as u32);
        kind.allowed().any(|call| {
            call.number == i64::from(data.nr)
                && match call.args {
                    Args::Any => true,
                    Args::Requests(values) => values.contains(&low(1)),
                    Args::Options(values) => values.contains(&low(0)),
                    Args::NoExec => data.args[2] & libc::PROT_EXEC as u64 == 0,
                }
        })
    }

    #[test]
    fn each_filter_decides_every_call_as_its_lists_say() {
        // Arguments worth trying: every value some list names, in the
        // argument it is tested in and beside it, with high bits set, and
        // protections with and without `PROT_EXEC`.
        let mut values: Vec<u64> = vec![0, 1, u64::MAX];
        for kind in ThreadKind::ALL {
            for call in kind.allowed() {
                if let Args::Requests(list) | Args::Options(list) = call.args {
                    values.extend(list.iter().flat_map(|&v| [v, v + 1, v | 1 << 32]));
                }
            }
        }
        let protections = [0, libc::PROT_READ, libc::PROT_READ | libc::PROT_EXEC];
        for kind in ThreadKind::ALL {
            let program = filter(kind).unwrap();
            for nr in 0..512 {
                for &value in &values {
                    for prot in protections {
                        let data = bpf::SeccompData {
                            nr,
                            arch: bpf::AUDIT_ARCH_X86_64,
                            args: [value, value, prot as u64, 0, 0, 0],
                        };
                        let expected = if is_allowed(kind, &data) {
                            libc::SECCOMP_RET_ALLOW
                        } else {
                            libc::SECCOMP_RET_TRAP
                        };
                        assert_eq!(bpf::run(&program, &data), expected, "{kind:?} {data:?}");
                    }
                }
            }
        }
    }

    /// The kernel takes each filter (checked in a thread of its own,
    /// which the filter confines until it ends). How long each install
    /// took is printed, not asserted: that is a benchmark's figure
    /// (README, the boot rows), and these hosts are shared.
    #[test]
    fn the_kernel_takes_each_filter() {
        for kind in ThreadKind::ALL {
            let program = filter(kind).unwrap();
            let took = std::thread::spawn(move || {
                let start = std::time::Instant::now();
                seccompiler::apply_filter(&program).unwrap();
                start.elapsed()
            })
            .join()
            .unwrap();
            eprintln!(
                "{kind:?}: {} instructions, installed in {took:?}",
                filter(kind).unwrap().len()
            );
        }
    }

    #[test]
    fn no_kind_may_open_a_socket_or_run_a_program() {
        for kind in ThreadKind::ALL {
            for number in [
                libc::SYS_socket,
                libc::SYS_execve,
                libc::SYS_openat,
                libc::SYS_ptrace,
            ] {
                assert!(
                    kind.allowed().all(|call| call.number != number),
                    "{kind:?} may make {number}"
                );
            }
        }
    }

    #[test]
    fn the_kvm_requests_are_the_kernels() {
        // From <linux/kvm.h> on x86_64.
        let vcpu = rules::VCPU
            .iter()
            .find(|c| c.number == libc::SYS_ioctl)
            .unwrap();
        let Args::Requests(requests) = vcpu.args else {
            panic!("ioctl is restricted by request");
        };
        for known in [
            0xae80,
            0x8090_ae81,
            0x4090_ae82,
            0x8138_ae83,
            0x4138_ae84,
            0x4004_ae99,
        ] {
            assert!(requests.contains(&known), "{known:#x}");
        }
        assert_eq!(rules::KVM_SIGNAL_MSI, 0x4020_aea5);
    }

    /// Set in the child process of the test below.
    const CHILD: &str = "EREMITE_SECCOMP_TEST_CHILD";

    /// A filter is for good, so the test re-runs itself as a child that
    /// confines a thread as a device worker: an allowed call works, a
    /// socket stops the process with the message and 159.
    #[test]
    fn a_forbidden_call_stops_the_process_with_a_message() {
        if std::env::var_os(CHILD).is_some() {
            prepare(&[ThreadKind::Device]).unwrap();
            std::thread::spawn(|| {
                enter(ThreadKind::Device).unwrap();
                println!("confined");
                let _ = std::io::Write::flush(&mut std::io::stdout());
                try_forbidden_call();
                println!("still running");
            })
            .join()
            .unwrap();
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "confine::seccomp::tests::a_forbidden_call_stops_the_process_with_a_message",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(EXIT_FORBIDDEN_CALL),
            "{stdout}{stderr}"
        );
        assert!(
            stdout.contains("confined") && !stdout.contains("still running"),
            "{stdout}"
        );
        assert!(
            stderr.contains("eremite: the VMM's device thread made system call 41 (socket), which its seccomp filter forbids"),
            "{stderr}"
        );
    }
}
