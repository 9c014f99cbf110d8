//! Unmodified static Linux programs through eremite's Linux ABI
//! (`docs/linux.md`): C programs built with musl, `-static` and
//! `-static-pie` (`examples/c`), and the Rust examples built with stable
//! Rust for `x86_64-unknown-linux-musl`. `./x test` builds them all.

use eremite_tests::{Run, boot_image, c_image, linux_image, root};

fn both_kinds(name: &str, options: &[&str], args: &[&str], check: impl Fn(&Run)) {
    for is_pie in [false, true] {
        let run = boot_image(&c_image(name, is_pie), options, args);
        check(&run);
    }
}

#[test]
fn a_musl_c_program_gets_its_arguments_environment_and_exit_code() {
    both_kinds(
        "hello",
        &["-e", "GREETING=bonjour"],
        &["42", "two words"],
        |run| {
            run.expect_code(42);
            assert!(run.stdout.starts_with("hello from musl, argc=3\n"), "{run}");
            assert!(run.stdout.contains("argv[2]=two words\n"), "{run}");
            assert!(run.stdout.contains("GREETING=bonjour\n"), "{run}");
            assert!(
                run.stdout.contains("/proc/self/exe is argv[0]: yes\n"),
                "{run}"
            );
            assert!(run.stderr.is_empty(), "{run}");
        },
    );
}

#[test]
fn pthreads_share_a_mutex_a_condvar_and_tls_on_one_and_two_cpus() {
    for cpus in ["1", "2"] {
        both_kinds("pthreads", &["--cpus", cpus], &[], |run| {
            run.expect_code(0);
            assert_eq!(
                run.stdout,
                "main is named pthreads, names kept\ncounter=80000 sum=28 own=7\ncreated and joined 1000 threads\n",
                "{run}"
            );
        });
    }
}

#[test]
fn c_sockets_over_loopback_pass_the_same_checks_as_on_linux() {
    // examples/c/sockets.c passes on Linux too (it is written to).
    for cpus in ["1", "2"] {
        both_kinds("sockets", &["--cpus", cpus], &[], |run| {
            run.expect_code(0);
            let oks = run.stdout.lines().filter(|l| l.starts_with("ok ")).count();
            assert_eq!(oks, 34, "{run}");
            assert!(run.stdout.ends_with("sockets passed\n"), "{run}");
        });
    }
}

#[test]
fn pipes_select_and_epoll_pass_the_same_checks_as_on_linux() {
    // examples/c/readiness.c: level, edge and one-shot epoll over pipes,
    // an eventfd and sockets; select; SIGPIPE ignored. It passes on Linux.
    for cpus in ["1", "2"] {
        both_kinds("readiness", &["--cpus", cpus], &[], |run| {
            run.expect_code(0);
            let oks = run.stdout.lines().filter(|l| l.starts_with("ok ")).count();
            assert_eq!(oks, 52, "{run}");
            assert!(run.stdout.ends_with("readiness passed\n"), "{run}");
        });
    }
}

#[test]
fn a_write_to_a_pipe_nobody_reads_ends_the_program_with_sigpipe() {
    both_kinds("readiness", &[], &["sigpipe"], |run| {
        run.expect_code(141);
        assert_eq!(run.stdout, "writing to a pipe with no reader\n", "{run}");
    });
}

#[test]
fn signal_handlers_take_faults_and_signals_sent_to_self() {
    // examples/c/signals.c: SIGSEGV on an alternate stack, SIGFPE, a
    // handler that repairs a fault and returns, one that edits the saved
    // registers, raise/kill, blocked then unblocked, SA_RESETHAND, and a
    // busy thread preempted after all that (a recovered fault once left
    // the CPU's interrupts off). It passes on Linux.
    for cpus in ["1", "2"] {
        both_kinds("signals", &["--cpus", cpus], &[], |run| {
            run.expect_code(0);
            let oks = run.stdout.lines().filter(|l| l.starts_with("ok ")).count();
            assert_eq!(oks, 22, "{run}");
            assert!(run.stdout.ends_with("signals passed\n"), "{run}");
        });
    }
}

#[test]
fn a_stack_overflow_reaches_the_handler_on_the_alternate_stack() {
    both_kinds("signals", &[], &["overflow"], |run| {
        run.expect_code(3);
        assert_eq!(
            run.stdout, "stack overflow caught on the alternate stack\n",
            "{run}"
        );
    });
}

#[test]
fn rust_reports_a_thread_stack_overflow_through_its_signal_handler() {
    // std's SIGSEGV handler, on the thread's signal stack, recognises the
    // guard page: the message Rust prints on Linux, then abort (134).
    let run = boot_image(&linux_image("fault"), &[], &["overflow"]);
    run.expect_code(134);
    assert!(
        run.stderr.contains("thread 'deep' (")
            && run.stderr.contains(") has overflowed its stack")
            && run.stderr.contains("fatal runtime error: stack overflow"),
        "{run}"
    );
}

#[test]
fn the_c_file_system_transcript_matches_linux_line_for_line() {
    // examples/c/fsdiff.c at the system-call level (openat, pread/pwrite,
    // readv/writev, fcntl, dup3, *at calls, statx, getcwd, /dev/null):
    // the same binary natively in tmpfs and in eremite.
    for is_pie in [false, true] {
        let program = c_image("fsdiff", is_pie);
        let base = eremite_tests::scratch_base();
        let dir = base.join(format!("eremite-c-fsdiff-{}-{is_pie}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let native = std::process::Command::new(&program)
            .arg(&dir)
            .output()
            .expect("cannot run fsdiff natively");
        let native = String::from_utf8_lossy(&native.stdout).into_owned();
        assert!(native.ends_with("end of transcript\n"), "{native}");
        let run = boot_image(&program, &[], &["/fsdiff"]);
        run.expect_code(0);
        for (number, (l, e)) in native.lines().zip(run.stdout.lines()).enumerate() {
            assert_eq!(e, l, "transcripts differ at line {}\n{run}", number + 1);
        }
        assert_eq!(native.lines().count(), run.stdout.lines().count(), "{run}");
        assert!(native.lines().count() > 100, "{native}");
    }
}

#[test]
fn mmap_hints_map_fixed_mremap_and_madvise_behave_as_on_linux() {
    // examples/c/memory.c (passes on Linux): a free hint is honoured,
    // MAP_FIXED replaces part of a mapping, MAP_FIXED_NOREPLACE refuses,
    // mremap shrinks, grows and moves, MADV_DONTNEED zeroes.
    for cpus in ["1", "2"] {
        both_kinds("memory", &["--cpus", cpus], &[], |run| {
            run.expect_code(0);
            let oks = run.stdout.lines().filter(|l| l.starts_with("ok ")).count();
            assert_eq!(oks, 19, "{run}");
            assert!(run.stdout.ends_with("memory passed\n"), "{run}");
        });
    }
}

#[test]
fn wild_pointers_in_system_calls_are_efault_and_change_nothing() {
    // examples/c/wildptr.c (passes on Linux): 22 calls, each with page 0,
    // the kernel's image, memory beyond RAM and the top of the address
    // space for its pointer.
    both_kinds("wildptr", &[], &[], |run| {
        run.expect_code(0);
        let oks = run.stdout.lines().filter(|l| l.starts_with("ok ")).count();
        assert_eq!(oks, 23, "{run}");
        assert!(run.stdout.ends_with("wildptr passed\n"), "{run}");
    });
}

#[test]
fn mount_and_initrd_work_for_linux_programs() {
    // --mount: the C file-system transcript below a host tmpfs directory
    // matches the native one (O_APPEND set by F_SETFL included).
    let base = eremite_tests::scratch_base();
    let program = c_image("fsdiff", false);
    let native_dir = base.join(format!("eremite-c-fsdiff-native-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&native_dir);
    let native = std::process::Command::new(&program)
        .arg(&native_dir)
        .output()
        .expect("cannot run fsdiff natively");
    let native = String::from_utf8_lossy(&native.stdout).into_owned();
    let host = base.join(format!("eremite-c-fsdiff-mount-{}", std::process::id()));
    std::fs::create_dir_all(&host).unwrap();
    let mount = format!("{}:/mnt", host.display());
    let run = boot_image(&program, &["--mount", &mount], &["/mnt/fsdiff"]);
    let _ = std::fs::remove_dir_all(&host);
    run.expect_code(0);
    assert_eq!(run.stdout, native, "{run}");

    // --initrd: a file unpacked into / before the program starts.
    let initrd = base.join(format!("eremite-linux-initrd-{}", std::process::id()));
    std::fs::create_dir_all(initrd.join("etc")).unwrap();
    std::fs::write(initrd.join("etc/greeting"), "bonjour from the initrd\n").unwrap();
    let initrd_arg = initrd.display().to_string();
    for is_pie in [false, true] {
        let run = boot_image(
            &c_image("hello", is_pie),
            &[
                "--initrd",
                &initrd_arg,
                "--env",
                "GREETING_FILE=/etc/greeting",
            ],
            &[],
        );
        run.expect_code(0);
        assert!(
            run.stdout
                .contains("/etc/greeting says: bonjour from the initrd\n"),
            "{run}"
        );
    }
    let _ = std::fs::remove_dir_all(&initrd);
}

#[test]
fn a_syscall_next_to_red_zone_data_is_left_in_place_and_still_served() {
    both_kinds("redzone", &["--verbose", "--stats"], &[], |run| {
        run.expect_code(0);
        assert_eq!(run.stdout, "pid 1, red zone kept 123\n", "{run}");
        for line in [
            "sites left as syscall           1",
            "calls by the trap path          1",
        ] {
            assert!(run.stderr.contains(line), "no {line:?} in {run}");
        }
        // The site was left (not rewritten), and it trapped.
        assert!(
            run.stderr.contains(" rewritten, 1 left on the trap path"),
            "{run}"
        );
        assert!(
            run.stderr.contains("1 system calls came by the trap path"),
            "{run}"
        );
    });
}

#[test]
fn fork_and_execve_fail_with_enosys_and_say_why_once() {
    both_kinds("oneprocess", &["--verbose"], &[], |run| {
        run.expect_code(0);
        assert!(
            run.stdout.contains("fork: -1 Function not implemented\n"),
            "{run}"
        );
        assert!(
            run.stdout.contains("execve: -1 Function not implemented\n"),
            "{run}"
        );
        assert_eq!(
            run.stderr.matches("a unikernel runs one program").count(),
            1,
            "{run}"
        );
    });
}

#[test]
fn stats_show_the_sites_and_every_unimplemented_call_asked_for() {
    both_kinds("oneprocess", &["--stats"], &[], |run| {
        run.expect_code(0);
        assert_eq!(
            run.stdout
                .matches("io_uring_setup: -1 Function not implemented\n")
                .count(),
            2,
            "{run}"
        );
        let section = run
            .stderr
            .split("eremite: Linux system calls\n")
            .nth(1)
            .unwrap_or_else(|| panic!("no Linux section in {run}"));
        let line = |label: &str| -> u64 {
            section
                .lines()
                .find_map(|l| l.trim().strip_prefix(label))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {label} in {run}"))
        };
        assert!(line("sites rewritten") > 10, "{run}");
        assert_eq!(line("sites left as syscall"), 0, "{run}");
        assert_eq!(line("calls by the trap path"), 0, "{run}");
        assert_eq!(line("io_uring_setup (425) ENOSYS"), 2, "{run}");
    });
}

#[test]
fn a_call_through_a_null_function_pointer_faults() {
    both_kinds("oneprocess", &[], &["nullcall"], |run| {
        run.expect_code(139);
        assert!(run.stderr.contains("page fault"), "{run}");
        assert!(run.stderr.contains("a call to 0x0"), "{run}");
    });
}

#[test]
fn rust_built_with_stable_for_musl_runs_unmodified() {
    let run = boot_image(&linux_image("hello"), &[], &["alpha", "beta"]);
    run.expect_code(0);
    // The same output as the hermit build of the same source.
    assert!(run.stdout.starts_with("Hello from eremite!\n"), "{run}");
    assert!(run.stdout.contains(r#"args: ["alpha", "beta"]"#), "{run}");
    assert!(run.stdout.contains("checksum: 0xf55488fc2c6ef761"), "{run}");
    assert!(
        run.stdout
            .contains("sqrt(2) = 1.414214, tan(2) = -2.185040, cosh(2) = 3.762196"),
        "{run}"
    );
}

#[test]
fn rust_threads_and_every_std_sync_primitive_work_through_the_linux_abi() {
    for cpus in ["1", "2"] {
        let run = boot_image(
            &linux_image("threads"),
            &["--memory", "256M", "--cpus", cpus],
            &[],
        );
        run.expect_code(0);
        assert!(run.stdout.ends_with("threads passed\n"), "{run}");
        assert!(
            run.stdout.lines().filter(|l| l.starts_with("ok ")).count() >= 18,
            "{run}"
        );
    }
}

#[test]
fn rayon_runs_on_two_cpus_through_the_linux_abi() {
    let run = boot_image(
        &linux_image("rayon"),
        &["--memory", "256M", "--cpus", "2"],
        &[],
    );
    run.expect_code(0);
    assert!(run.stdout.ends_with("rayon passed\n"), "{run}");
}

#[test]
fn the_file_system_transcript_through_the_linux_abi_matches_linux() {
    let native = root().join("examples/target/x86_64-unknown-linux-gnu/release/fsdiff");
    let dir = std::env::temp_dir().join(format!("eremite-linux-fsdiff-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let expected = std::process::Command::new(native)
        .arg(&dir)
        .output()
        .expect("the native fsdiff runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(expected.status.success());
    let run = boot_image(&linux_image("fsdiff"), &[], &["/fsdiff"]);
    run.expect_code(0);
    assert_eq!(
        run.stdout,
        String::from_utf8_lossy(&expected.stdout),
        "{run}"
    );
}

#[test]
fn ten_thousand_mappings_keep_exactly_their_rights_on_two_cpus() {
    // examples/c/mapstress.c: 10,000 mappings whose pages are used from
    // both CPUs, given new rights and partly unmapped three times, then
    // probed with real loads and stores from both: every access faults
    // exactly when the rights say so (no stale TLB entry lets one
    // through, none makes an allowed one fail) and data survives. The
    // output, counts included, is Linux's.
    let program = c_image("mapstress", false);
    let native = std::process::Command::new(&program)
        .output()
        .expect("cannot run mapstress natively");
    let native = String::from_utf8_lossy(&native.stdout).into_owned();
    assert!(native.ends_with("mapstress passed\n"), "{native}");
    let run = boot_image(&program, &["--cpus", "2"], &[]);
    run.expect_code(0);
    assert_eq!(run.stdout, native, "{run}");
}
