//! examples/hello: output, arguments, environment, exit codes, memory
//! sizes, and how few exits and CPL0 entries a boot takes.

use eremite_tests::boot;

#[test]
fn hello_greets_and_shows_its_arguments() {
    let run = boot("hello", &[], &["alpha", "beta gamma"]);
    run.expect_code(0);
    assert!(run.stdout.starts_with("Hello from eremite!\n"), "{run}");
    assert!(
        run.stdout.contains(r#"args: ["alpha", "beta gamma"]"#),
        "{run}"
    );
    assert!(run.stdout.contains("GREETING is not set"), "{run}");
    // The same LCG loop natively gives this value; floating point works
    // at CPL3 with SSE state enabled by the VMM.
    assert!(run.stdout.contains("checksum: 0xf55488fc2c6ef761"), "{run}");
    assert!(
        run.stdout
            .contains("sqrt(2) = 1.414214, tan(2) = -2.185040, cosh(2) = 3.762196")
    );
    assert!(run.stderr.is_empty(), "{run}");
}

#[test]
fn environment_variables_reach_the_guest() {
    let run = boot(
        "hello",
        &["--env", "GREETING=bonjour", "-e", "OTHER=x"],
        &[],
    );
    run.expect_code(0);
    assert!(run.stdout.contains("GREETING=bonjour"), "{run}");
}

#[test]
fn the_guest_exit_code_is_the_process_exit_code() {
    for code in [0, 1, 42, 255] {
        let run = boot("hello", &[], &["--exit", &code.to_string()]);
        run.expect_code(code);
    }
}

#[test]
fn boots_with_the_smallest_and_a_large_memory() {
    boot("hello", &["--memory", "8M"], &[]).expect_code(0);
    boot("hello", &["--memory", "3G"], &[]).expect_code(0);
}

#[test]
fn boots_with_memory_above_4_gib_and_the_kernel_uses_all_of_it() {
    for (memory, kernel_mib) in [("16M", 16), ("4G", 4096), ("8G", 8192), ("31G", 31744)] {
        let run = boot(
            "hello",
            &["--memory", memory, "--verbose"],
            &["--exit", "7"],
        );
        run.expect_code(7);
        assert!(run.stdout.starts_with("Hello from eremite!\n"), "{run}");
        assert!(
            run.stderr
                .contains(&format!("eremite kernel: {kernel_mib} MiB RAM")),
            "{run}"
        );
    }
}

#[test]
fn pinned_vcpus_run_and_bad_cpu_lists_are_one_line() {
    boot("hello", &["--cpus", "2", "--pin-vcpus", "0"], &[]).expect_code(0);
    let run = boot("hello", &["--pin-vcpus", "1023"], &[]);
    run.expect_code(125);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{run}");
    assert!(
        lines[0]
            .starts_with("eremite: cannot pin a vCPU to host CPU 1023: this process may run on "),
        "{run}"
    );
    let run = boot("hello", &["--pin-vcpus", "3-1"], &[]);
    run.expect_code(2);
    assert!(run.stderr.contains("the range 3-1 runs backwards"), "{run}");
}

#[test]
fn memory_beyond_the_maximum_is_a_usage_error() {
    let run = boot("hello", &["--memory", "32G"], &[]);
    assert_ne!(run.code, 0, "{run}");
    assert!(run.stderr.contains("8M..=31G"), "{run}");
}

#[test]
fn boot_takes_a_handful_of_exits_and_one_cpl0_entry() {
    // The kernel runs at CPL3 and buffers its console: a whole run of
    // hello is a few hypercalls, and the CPL0 supervisor is entered once:
    // the TLB gate, after the IDT (written at boot) was sealed. The main
    // stack's guard pages lose their rights without one: nothing has
    // touched them, so no TLB holds them.
    let run = boot("hello", &["--stats"], &[]);
    run.expect_code(0);
    let count = |label: &str| run.stat(label);
    assert!(count("total") <= 10, "{run}");
    assert_eq!(count("hypercall Exit"), 1, "{run}");
    assert_eq!(count("bad hypercall"), 0, "{run}");
    assert_eq!(count("eremite: CPL0 entries"), 1, "{run}");
    assert_eq!(count("gate: TLB flush"), 1, "{run}");
}

#[test]
fn verbose_shows_the_kernel_log_and_the_boot_breakdown() {
    let run = boot("hello", &["--verbose"], &[]);
    run.expect_code(0);
    assert!(run.stderr.contains("eremite kernel: 256 MiB RAM"), "{run}");
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("vmm setup"))
        .expect("breakdown line");
    for part in ["kernel init", "time to main", "guest run", "total"] {
        assert!(line.contains(part), "{line}");
    }
}

#[test]
fn hello_runs_at_cpl3_and_so_finishes_well_under_a_second() {
    // Not a benchmark: a guard against running the kernel or application
    // at CPL0. On the PVM hosts we use, CPL0 code is emulated at about
    // 0.5 us per instruction, and hello's loop of 5 million iterations
    // would then take many seconds; at CPL3 the whole run takes a few ms.
    let started = std::time::Instant::now();
    boot("hello", &[], &[]).expect_code(0);
    let elapsed = started.elapsed();
    assert!(
        elapsed < std::time::Duration::from_secs(1),
        "hello took {elapsed:?}"
    );
}
