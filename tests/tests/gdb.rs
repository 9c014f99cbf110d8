//! `eremite run --gdb`: GDB in batch mode against `examples/debuggee`
//! (built with full debug information), as a user would drive it.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use eremite_tests::{Run, eremite_cli, image, linux_image, require_kvm, run_command, spawn_image};

/// A port nothing listens on now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// Boot `debuggee MODE` under `--gdb` with `options`, run GDB with
/// `commands` against it (sending GDB a SIGINT, as Ctrl-C does, after
/// `interrupt_after` if given), and return what GDB and eremite printed.
fn debug(
    mode: &str,
    options: &[&str],
    commands: &[&str],
    interrupt_after: Option<Duration>,
) -> (Run, Run) {
    debug_image(&image("debuggee"), mode, options, commands, interrupt_after)
}

/// [`debug`] for any image or Linux program.
fn debug_image(
    image: &Path,
    mode: &str,
    options: &[&str],
    commands: &[&str],
    interrupt_after: Option<Duration>,
) -> (Run, Run) {
    require_kvm();
    let port = free_port().to_string();
    let mut eremite_options = vec!["--gdb", &port];
    eremite_options.extend_from_slice(options);
    let guest = spawn_image(image, &eremite_options, &[mode]);
    let mut gdb = Command::new("timeout");
    // GDB retries a refused connection until the VMM listens.
    gdb.args(["100", "gdb", "-batch", "-nx"])
        .arg(image)
        .args(["-ex", "set tcp connect-timeout 60"])
        .args(["-ex", &format!("target remote 127.0.0.1:{port}")]);
    for command in commands {
        gdb.args(["-ex", command]);
    }
    let gdb_run = match interrupt_after {
        None => run_command(&mut gdb),
        Some(delay) => {
            let child = gdb
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("cannot start gdb");
            std::thread::sleep(delay);
            // `timeout` runs GDB as its child: signal that.
            let status = Command::new("pkill")
                .args(["-INT", "-P", &child.id().to_string(), "-x", "gdb"])
                .status()
                .expect("pkill");
            assert!(status.success(), "no gdb to interrupt");
            let output = child.wait_with_output().expect("gdb's output");
            Run {
                code: output.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            }
        }
    };
    (gdb_run, guest.wait())
}

#[test]
fn breakpoints_backtraces_variables_steps_and_finish_in_a_rust_program() {
    let (gdb, guest) = debug(
        "steps",
        &[],
        &[
            "break debuggee::advance",
            "continue",
            "continue",
            "continue",
            "continue",
            "continue",
            "info breakpoints",
            "bt",
            "print point",
            "print by",
            "print/x $fs_base",
            "print $ymm15",
            "info registers eflags",
            "delete",
            "break debuggee::square",
            "continue",
            "finish",
            "print $rax",
            "break sys_write",
            "continue",
            "bt 1",
            "print $pc",
            "stepi",
            "print $pc",
            "delete",
            "continue",
        ],
        None,
    );
    let out = &gdb.stdout;
    assert!(
        out.contains("breakpoint already hit 5 times"),
        "{gdb}\n{guest}"
    );
    assert!(
        out.contains("in debuggee::main () at debuggee/src/main.rs"),
        "{gdb}"
    );
    // The fifth call's argument: (1, 1) moved by 1, 2, 3, 4.
    assert!(out.contains("= debuggee::Point {x: 11, y: 31}"), "{gdb}");
    assert!(out.contains("= 5\n"), "{gdb}");
    // The TLS base (a thread's, never 0) and an AVX register, whole.
    // (`$3`: the third `print`.)
    let fs_base = out
        .lines()
        .find_map(|l| l.strip_prefix("$3 = 0x"))
        .unwrap_or("0");
    assert_ne!(u64::from_str_radix(fs_base, 16).unwrap_or(0), 0, "{gdb}");
    assert!(out.contains("v8_float: ["), "{gdb}");
    assert!(out.contains("eflags         0x"), "{gdb}");
    assert!(
        out.contains("Breakpoint 2, debuggee::square (n=7)"),
        "{gdb}"
    );
    // `finish` came back to main with 7 * 7 in RAX (GDB does not read a
    // Rust function's return value itself: "Value returned has type:
    // u64. Cannot determine contents").
    assert!(out.contains("Value returned"), "{gdb}");
    assert!(out.contains("= 49\n"), "{gdb}");
    // A breakpoint in the library OS, and a step in it.
    assert!(out.contains("sys_write () at src/abi/mod.rs"), "{gdb}");
    let pcs: Vec<&str> = out.lines().filter(|l| l.contains("<sys_write")).collect();
    assert_eq!(pcs.len(), 2, "{gdb}");
    assert_ne!(pcs[0], pcs[1], "stepi did not move\n{gdb}");
    assert!(out.contains("exited normally"), "{gdb}");
    guest.expect_code(0);
    assert!(
        guest.stdout.contains("point: Point { x: 16, y: 63 }"),
        "{guest}"
    );
    assert!(guest.stdout.contains("square: 49"), "{guest}");
}

/// `set var` on an argument that lives in a register: the program
/// computes with the new value (x: 1 + 100 + 2 + 3 + 4 + 5).
#[test]
fn set_var_changes_what_the_program_computes() {
    let (gdb, guest) = debug(
        "steps",
        &[],
        &[
            "break debuggee::advance",
            "continue",
            "set var by = 100",
            "print by",
            "delete",
            "continue",
        ],
        None,
    );
    assert!(gdb.stdout.contains("= 100\n"), "{gdb}\n{guest}");
    guest.expect_code(0);
    assert!(
        guest.stdout.contains("point: Point { x: 115, y: 63 }"),
        "{guest}"
    );
}

#[test]
fn ctrl_c_stops_every_vcpu_and_kill_ends_the_vm() {
    let (gdb, guest) = debug(
        "spin",
        &["--cpus", "2"],
        &["continue", "info threads", "thread apply all bt 12", "kill"],
        Some(Duration::from_secs(3)),
    );
    let out = &gdb.stdout;
    assert!(out.contains("received signal SIGINT"), "{gdb}\n{guest}");
    // The guest's threads: main, the second vCPU's first context, the
    // sleeper and the spinner; two on the vCPUs, the others switched away
    // and unwound from what the scheduler saved.
    for thread in ["Thread 1.1 ", "Thread 1.2 ", "Thread 1.3 ", "Thread 1.4 "] {
        assert!(out.contains(thread), "no {thread}\n{gdb}");
    }
    // std for hermit passes no thread names: spawned threads keep their
    // spawner's (the program's, as on Linux); a CPU's first context is
    // `idle`.
    assert!(out.contains("(debuggee, vCPU "), "{gdb}");
    assert!(
        out.contains(", vCPU 0)") && out.contains(", vCPU 1)"),
        "{gdb}"
    );
    assert!(out.contains("(idle, "), "{gdb}");
    assert!(out.contains(", waiting)"), "{gdb}");
    // The sleeper unwinds from wherever its CPU is, the idle gate
    // included (it has unwind information for this).
    assert!(out.contains("debuggee::nap ()"), "{gdb}");
    // Main and the spinner share vCPU 0: one runs, the other was
    // preempted, and unwinds through the interrupt upcall (its CFI) to
    // the loop.
    assert_eq!(out.matches("debuggee::spin ()").count(), 2, "{gdb}");
    assert!(out.contains(" in eremite_irq_upcall ()"), "{gdb}");
    guest.expect_code(137);
    assert!(
        guest.stderr.contains("eremite: GDB killed the guest"),
        "{guest}"
    );
}

#[test]
fn the_guests_clock_stands_still_at_a_breakpoint_and_detach_lets_it_finish() {
    let (gdb, guest) = debug(
        "clock",
        &[],
        &[
            "break debuggee::pause_here",
            "continue",
            "shell sleep 3",
            "detach",
        ],
        None,
    );
    assert!(
        gdb.stdout.contains("Breakpoint 1, debuggee::pause_here"),
        "{gdb}\n{guest}"
    );
    guest.expect_code(0);
    let took: u64 = guest
        .stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("pause_here took ")?
                .strip_suffix(" ms")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no time printed\n{guest}"));
    assert!(
        took < 1000,
        "the 3 s at the breakpoint counted: {took} ms\n{guest}"
    );
}

/// Watchpoints: the debug registers do not work under PVM, so the VMM
/// steps every instruction and compares the memory after each.
#[test]
fn a_watchpoint_stops_after_each_write_of_the_watched_variable() {
    let (gdb, guest) = debug(
        "watch",
        &[],
        &[
            "break debuggee::pause_here",
            "continue",
            "watch debuggee::COUNTER",
            "continue",
            "continue",
            "continue",
            "delete",
            "continue",
        ],
        None,
    );
    let out = &gdb.stdout;
    assert_eq!(
        out.matches("Hardware watchpoint 2: debuggee::COUNTER\n\nOld value")
            .count(),
        3,
        "{gdb}\n{guest}"
    );
    // 0, then + 1, + 2, + 3.
    for value in ["(1)}}", "(3)}}", "(6)}}"] {
        assert!(out.contains(&format!("New value = core::sync::atomic::Atomic<u64> {{v: core::cell::UnsafeCell<core::sync::atomic::private::Align8<u64>> {{value: core::sync::atomic::private::Align8<u64> {value}")), "{value}\n{gdb}");
    }
    assert!(out.contains("exited normally"), "{gdb}");
    guest.expect_code(0);
    assert!(guest.stdout.contains("counter: 6"), "{guest}");
}

#[test]
fn a_programs_own_int3_stops_in_gdb_and_is_fatal_without_it() {
    let (gdb, guest) = debug("trap", &[], &["continue", "continue"], None);
    assert!(
        gdb.stdout.contains("received signal SIGTRAP"),
        "{gdb}\n{guest}"
    );
    assert!(gdb.stdout.contains("exited normally"), "{gdb}");
    guest.expect_code(0);
    assert!(guest.stdout.contains("after the trap"), "{guest}");

    // Without GDB: offered to nobody (one exit, counted), then fatal.
    let alone = eremite_tests::boot("debuggee", &["--stats"], &["trap"]);
    alone.expect_code(139);
    assert!(!alone.stdout.contains("after the trap"), "{alone}");
    assert_eq!(alone.stat("debugger traps"), 1, "{alone}");
}

#[test]
fn a_panic_and_a_fault_stop_in_gdb_before_the_vm_ends() {
    let (gdb, guest) = debug_image(
        &image("panic"),
        "",
        &[],
        &["continue", "bt 8", "continue"],
        None,
    );
    let out = &gdb.stdout;
    // Stopped after the message, in the abort the panic ends in.
    assert!(out.contains("received signal SIGTRAP"), "{gdb}\n{guest}");
    assert!(out.contains("rust_panic"), "{gdb}");
    assert!(out.contains("terminated with signal SIGABRT"), "{gdb}");
    guest.expect_code(134);
    assert!(guest.stderr.contains("the list was empty"), "{guest}");

    let (gdb, guest) = debug_image(
        &image("fault"),
        "null",
        &[],
        &["continue", "x/i $pc", "continue"],
        None,
    );
    let out = &gdb.stdout;
    // At the faulting instruction, before the kernel's report; passed on.
    assert!(out.contains("received signal SIGSEGV"), "{gdb}\n{guest}");
    assert!(out.contains("fault/src/main.rs:"), "{gdb}");
    assert!(out.contains("=> 0x") && out.contains("mov"), "{gdb}");
    assert!(out.contains("terminated with signal SIGSEGV"), "{gdb}");
    guest.expect_code(139);
    assert!(
        guest.stderr.contains("CPU exception 14 page fault"),
        "{guest}"
    );
}

/// A Linux program (busy, static-PIE, musl) under GDB with its own ELF
/// file: GDB learns the load address from the server (`qOffsets`).
#[test]
fn a_linux_program_is_debugged_with_its_own_symbols() {
    let (gdb, guest) = debug_image(
        &linux_image("busy"),
        "200",
        &[],
        &[
            "break cold_loop",
            "continue",
            "bt 3",
            "info threads",
            "delete",
            "continue",
        ],
        None,
    );
    let out = &gdb.stdout;
    // The main thread is named after the program, as on Linux; the other
    // named itself through `prctl(PR_SET_NAME)` (std's `Builder::name`).
    assert!(out.contains("(busy, "), "{gdb}");
    assert!(out.contains("(worker, "), "{gdb}");
    assert!(
        out.contains("Breakpoint 1, cold_loop () at busy/src/main.rs"),
        "{gdb}\n{guest}"
    );
    assert!(out.contains(" in work () at busy/src/main.rs"), "{gdb}");
    assert!(out.contains(" in main () at busy/src/main.rs"), "{gdb}");
    assert!(out.contains("exited normally"), "{gdb}");
    guest.expect_code(0);
    assert!(guest.stdout.starts_with("busy: "), "{guest}");
}

#[test]
fn a_bad_gdb_address_is_refused() {
    let run = eremite_cli(&["run", "--gdb", "not-a-port", "x"]);
    run.expect_code(2);
    assert!(run.stderr.contains("is not a port or HOST:PORT"), "{run}");
    // A port something else holds: one line, before the guest runs.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let image = image("debuggee");
    let run = eremite_cli(&["run", "--gdb", &port, image.to_str().unwrap(), "steps"]);
    run.expect_code(125);
    assert!(
        run.stderr.contains(&format!(
            "eremite: cannot wait for GDB on 127.0.0.1:{port}: "
        )),
        "{run}"
    );
    assert!(!run.stdout.contains("point:"), "{run}");
}
