//! examples/net: std::net over the guest's own loopback interface, on one
//! and two vCPUs.

use eremite_tests::boot;

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
