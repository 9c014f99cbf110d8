//! examples/threads: std::thread and std::sync on one and on two vCPUs.

use eremite_tests::{Run, boot};

/// Run the threads example on `cpus` vCPUs and check every check passed.
fn threads_on(cpus: &str) -> Run {
    // 100 threads alive at once with std's 1 MiB default stacks need more
    // than 64 MiB of guest memory.
    let run = boot(
        "threads",
        &["--memory", "256M", "--cpus", cpus, "--stats"],
        &[],
    );
    run.expect_code(0);
    assert!(run.stdout.starts_with(&format!("cpus: {cpus}\n")), "{run}");
    assert!(run.stdout.ends_with("threads passed\n"), "{run}");
    assert!(
        run.stdout.lines().filter(|l| l.starts_with("ok ")).count() >= 19,
        "{run}"
    );
    assert!(!run.stderr.contains("  vector "), "no CPU exception: {run}");
    run
}

#[test]
fn threads_and_every_std_sync_primitive_work_on_one_cpu() {
    let run = threads_on("1");
    // The spinning thread and the floating-point threads were preempted by
    // timer interrupts (switches themselves stay at CPL3).
    assert!(run.stat("other interrupts") >= 3, "{run}");
}

#[test]
fn threads_and_every_std_sync_primitive_work_on_two_cpus() {
    let run = threads_on("2");
    // The second CPU was started, and the CPUs woke each other (IPIs) or
    // halted when idle.
    assert_eq!(run.stat("hypercall StartCpu"), 1, "{run}");
    assert!(run.stat("gate") >= 1, "an idle CPU halts: {run}");
}

#[test]
fn threads_spawned_and_joined_across_cpus_do_not_get_lost() {
    // Every other thread runs on the other CPU, so each join waits for a
    // cross-CPU wake-up: a lost IPI or a race in the idle loop hangs here.
    for cpus in ["2", "3"] {
        let run = boot("threads", &["--cpus", cpus], &["spawn-join", "3000"]);
        run.expect_code(0);
        assert_eq!(run.stdout, "spawned and joined 3000 threads\n", "{run}");
    }
}

#[test]
fn a_deadlock_is_reported_instead_of_hanging() {
    for cpus in ["1", "2"] {
        let run = boot("threads", &["--cpus", cpus], &["deadlock"]);
        run.expect_code(127);
        assert!(run.stderr.contains("deadlock"), "{run}");
    }
}
