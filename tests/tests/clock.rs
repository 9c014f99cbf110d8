//! examples/clock: sleeping, `Instant` and `SystemTime`.

use eremite_tests::boot;

#[test]
fn a_long_sleep_halts_the_cpu_without_exits() {
    // The idle CPU arms its APIC timer and halts in the CPL0 gate: one
    // halt, ended by one timer interrupt, and no exit to the VMM but the
    // console and the exit.
    let run = boot("clock", &["--stats"], &["2500"]);
    run.expect_code(0);
    assert!(run.stdout.contains("clocks are consistent"), "{run}");
    assert!((1..=3).contains(&run.stat("gate")), "{run}");
    assert!(run.stat("other interrupts") <= 3, "{run}");
    assert_eq!(
        run.stat("total"),
        run.stat("hypercall ConsoleWrite") + 1,
        "{run}"
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
