//! examples/clock: sleeping, `Instant` and `SystemTime`.

use eremite_tests::boot;

#[test]
fn a_long_sleep_sleeps_as_asked_in_a_few_exits() {
    // 2.5 s is more than the VMM's 1 s limit per Sleep hypercall: the
    // kernel splits it into a few calls instead of spinning on refusals.
    let run = boot("clock", &["--stats"], &["2500"]);
    run.expect_code(0);
    assert!(run.stdout.contains("clocks are consistent"), "{run}");
    let sleeps = run.stat("hypercall Sleep");
    assert!(
        (3..=6).contains(&sleeps),
        "{sleeps} Sleep hypercalls\n{run}"
    );
}

#[test]
fn the_wall_clock_is_the_hosts() {
    let run = boot("clock", &[], &["1"]);
    run.expect_code(0);
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("wall clock: "))
        .expect("wall clock line");
    let guest: u64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(
        guest.abs_diff(host.as_secs()) <= 5,
        "guest {guest} s, host {} s",
        host.as_secs()
    );
}
