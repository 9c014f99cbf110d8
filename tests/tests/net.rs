//! Networking: std::net over the guest's own loopback interface
//! (examples/net), and the network card (`--net`) on a tap inside a
//! network namespace each test creates, talking only to addresses there.

use eremite_tests::{NetNs, boot};

#[test]
fn tcp_and_udp_over_loopback_work_on_one_and_two_cpus() {
    for cpus in ["1", "2"] {
        let run = boot("net", &["--cpus", cpus], &[]);
        run.expect_code(0);
        assert_eq!(
            run.stdout.lines().filter(|l| l.starts_with("ok ")).count(),
            10,
            "{run}"
        );
        assert!(run.stdout.ends_with("net passed\n"), "{run}");
    }
}

#[test]
fn a_guest_with_a_network_card_boots_and_exits() {
    let ns = NetNs::with_tap("etap0", "10.0.0.1/24");
    let run = ns.boot(
        "hello",
        &[
            "--net",
            "tap:etap0,mac=02:00:00:00:00:02",
            "--ip",
            "10.0.0.2/24",
            "--gateway",
            "10.0.0.1",
            "--stats",
        ],
        &["--exit", "7"],
    );
    run.expect_code(7);
    assert!(run.stdout.starts_with("Hello from eremite!\n"), "{run}");
    assert!(
        run.stderr
            .contains("eremite: network card (tap etap0, MAC 02:00:00:00:00:02)"),
        "{run}"
    );
    for label in [
        "device MMIO",
        "frames sent",
        "frames received",
        "interrupts",
    ] {
        // Without a driver in the guest the card stays untouched.
        assert_eq!(run.stat(label), 0, "{label}: {run}");
    }
    assert!(run.stat("total") <= 10, "{run}");
    assert!(ns.has_link("etap0"), "the tap outlives the VM");
}

#[test]
fn a_missing_tap_is_one_line_and_125() {
    let ns = NetNs::new();
    let image = eremite_tests::image("hello");
    let run = ns.eremite_cli(&["run", "--net", "tap:etap-none", image.to_str().unwrap()]);
    run.expect_code(125);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines,
        [
            "eremite: cannot open tap device etap-none: no such interface (create it with `ip tuntap add etap-none mode tap`)"
        ],
        "{run}"
    );
}
