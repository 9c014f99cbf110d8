//! examples/threads: std::thread and std::sync on one vCPU.

use eremite_tests::boot;

#[test]
fn threads_and_every_std_sync_primitive_work() {
    // 100 threads alive at once with std's 1 MiB default stacks need more
    // than the default 64 MiB of guest memory.
    let run = boot("threads", &["--memory", "256M", "--stats"], &[]);
    run.expect_code(0);
    assert!(run.stdout.ends_with("threads passed\n"), "{run}");
    assert!(
        run.stdout.lines().filter(|l| l.starts_with("ok ")).count() >= 16,
        "{run}"
    );
    // The spinning thread and the floating-point threads were preempted by
    // timer interrupts (the only CPL0 entries: switches stay at CPL3), and
    // no CPU exception happened.
    assert!(run.stat("other interrupts") >= 3, "{run}");
    assert!(!run.stderr.contains("  vector "), "{run}");
}

#[test]
fn a_deadlock_is_reported_instead_of_hanging() {
    let run = boot("threads", &[], &["deadlock"]);
    run.expect_code(127);
    assert!(run.stderr.contains("deadlock"), "{run}");
}
