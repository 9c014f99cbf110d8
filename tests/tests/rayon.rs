//! examples/rayon: a real crate's parallel iterators on one and two vCPUs.

use eremite_tests::boot;

#[test]
fn rayon_computes_the_serial_answers_on_one_and_two_cpus() {
    for cpus in ["1", "2"] {
        let run = boot("rayon", &["--memory", "256M", "--cpus", cpus], &[]);
        run.expect_code(0);
        assert!(
            run.stdout.starts_with(&format!("rayon threads: {cpus}\n")),
            "{run}"
        );
        assert_eq!(
            run.stdout.lines().filter(|l| l.starts_with("ok ")).count(),
            5,
            "{run}"
        );
        assert!(run.stdout.ends_with("rayon passed\n"), "{run}");
    }
}
