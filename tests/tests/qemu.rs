//! The same images on QEMU `-M microvm` through their PVH entry
//! (`eremite run --hypervisor qemu…`, see docs/qemu.md): under TCG, so the
//! kernel is not only ever tested against our own VMM, and under KVM.
//! `./x test` installs QEMU (Debian's `qemu-system-x86`). The network
//! tests put QEMU's tap in a namespace of their own, as tests/net.rs does.

use std::time::Instant;

use eremite_tests::{NetNs, Run, boot};

fn require_qemu() {
    let found = std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "qemu-system-x86_64 is missing: run the tests with `./x test`, which installs it (apt-get install qemu-system-x86)"
    );
}

fn tcg(name: &str, options: &[&str], guest_args: &[&str]) -> Run {
    require_qemu();
    let mut all = vec!["--hypervisor", "qemu-tcg"];
    all.extend_from_slice(options);
    boot(name, &all, guest_args)
}

#[test]
fn hello_runs_on_qemu_tcg_with_arguments_and_environment() {
    let started = Instant::now();
    let run = tcg(
        "hello",
        &["-e", "GREETING=bonjour à tous"],
        &["alpha", "beta gamma", ""],
    );
    run.expect_code(0);
    assert!(run.stdout.starts_with("Hello from eremite!\n"), "{run}");
    assert!(
        run.stdout.contains(r#"args: ["alpha", "beta gamma", ""]"#),
        "{run}"
    );
    assert!(run.stdout.contains("GREETING=bonjour à tous"), "{run}");
    // SSE at CPL3 works: the same checksum and libm results as on KVM.
    assert!(run.stdout.contains("checksum: 0xf55488fc2c6ef761"), "{run}");
    assert!(
        run.stdout
            .contains("sqrt(2) = 1.414214, tan(2) = -2.185040, cosh(2) = 3.762196"),
        "{run}"
    );
    assert!(run.stderr.is_empty(), "{run}");
    assert!(
        started.elapsed().as_secs() < 5,
        "a TCG boot took {:?}",
        started.elapsed()
    );
}

#[test]
fn exit_codes_come_back_from_qemu() {
    for code in [0, 1, 42, 127, 255] {
        tcg("hello", &[], &["--exit", &code.to_string()]).expect_code(code);
    }
}

#[test]
fn a_panic_on_qemu_is_an_abort() {
    let run = tcg("panic", &[], &[]);
    run.expect_code(134);
    assert!(
        run.stderr.contains("the list was empty (as planned)"),
        "{run}"
    );
}

#[test]
fn a_fault_on_qemu_is_reported_with_its_vector() {
    let run = tcg("fault", &[], &[]);
    run.expect_code(139);
    assert!(run.stderr.contains("CPU exception 14 page fault"), "{run}");
}

#[test]
fn timers_and_the_wall_clock_work_on_qemu() {
    let run = tcg("clock", &[], &[]);
    run.expect_code(0);
    assert!(run.stdout.contains("clocks are consistent"), "{run}");
}

#[test]
fn what_qemu_cannot_do_is_refused_clearly() {
    require_qemu();
    let run = boot(
        "hello",
        &["--hypervisor", "qemu-tcg", "--mount", "/tmp:/data"],
        &[],
    );
    run.expect_code(125);
    assert!(run.stderr.contains("--mount"), "{run}");
    let run = boot("hello", &["--hypervisor", "qemu-tcg", "--cpus", "17"], &[]);
    run.expect_code(125);
    assert!(run.stderr.contains("--cpus"), "{run}");
}

/// The threads example on `cpus` CPUs under QEMU with `accel_options`:
/// every check passed.
fn threads_pass_on_qemu(accel_options: &[&str], cpus: &str) {
    require_qemu();
    let mut options = accel_options.to_vec();
    // 100 threads alive at once with std's 1 MiB stacks need more than
    // the default 64 MiB (as in tests/threads.rs).
    options.extend_from_slice(&["--memory", "256M", "--cpus", cpus]);
    let run = boot("threads", &options, &[]);
    run.expect_code(0);
    assert!(run.stdout.starts_with(&format!("cpus: {cpus}\n")), "{run}");
    assert!(run.stdout.ends_with("threads passed\n"), "{run}");
    assert!(
        run.stdout.lines().filter(|l| l.starts_with("ok ")).count() >= 19,
        "{run}"
    );
}

/// Every other thread on another CPU, so each join waits for a cross-CPU
/// wake-up (an IPI between CPUs that the trampoline started).
fn spawn_join_on_qemu(accel_options: &[&str], cpus: &str) {
    require_qemu();
    let mut options = accel_options.to_vec();
    options.extend_from_slice(&["--cpus", cpus]);
    let run = boot("threads", &options, &["spawn-join", "1000"]);
    run.expect_code(0);
    assert_eq!(run.stdout, "spawned and joined 1000 threads\n", "{run}");
}

#[test]
fn threads_and_every_std_sync_primitive_work_on_two_cpus_on_qemu_tcg() {
    threads_pass_on_qemu(&["--hypervisor", "qemu-tcg"], "2");
}

#[test]
fn threads_spawned_and_joined_across_cpus_do_not_get_lost_on_qemu_tcg() {
    for cpus in ["2", "4"] {
        spawn_join_on_qemu(&["--hypervisor", "qemu-tcg"], cpus);
    }
}

#[test]
fn the_file_system_transcript_on_qemu_tcg_matches_linux() {
    require_qemu();
    eremite_tests::assert_fsdiff_matches_linux(&["--hypervisor", "qemu-tcg"]);
}

#[test]
fn hello_runs_on_qemu_kvm() {
    eremite_tests::require_kvm();
    require_qemu();
    let run = boot("hello", &["--hypervisor", "qemu-kvm"], &["on", "kvm"]);
    run.expect_code(0);
    assert!(run.stdout.contains(r#"args: ["on", "kvm"]"#), "{run}");
    assert!(run.stdout.contains("checksum: 0xf55488fc2c6ef761"), "{run}");
}

#[test]
fn panics_faults_and_exit_codes_on_qemu_kvm_are_what_they_are_on_our_vmm() {
    eremite_tests::require_kvm();
    require_qemu();
    let kvm = ["--hypervisor", "qemu-kvm"];
    boot("hello", &kvm, &["--exit", "42"]).expect_code(42);
    let panic = boot("panic", &kvm, &[]);
    panic.expect_code(134);
    assert!(
        panic.stderr.contains("the list was empty (as planned)"),
        "{panic}"
    );
    let fault = boot("fault", &kvm, &[]);
    fault.expect_code(139);
    assert!(
        fault.stderr.contains("CPU exception 14 page fault"),
        "{fault}"
    );
    let overflow = boot("memory", &kvm, &["overflow-thread"]);
    overflow.expect_code(139);
    assert!(
        overflow.stderr.contains("has overflowed its stack"),
        "{overflow}"
    );
}

#[test]
fn the_file_system_transcript_on_qemu_kvm_matches_linux() {
    eremite_tests::require_kvm();
    require_qemu();
    eremite_tests::assert_fsdiff_matches_linux(&["--hypervisor", "qemu-kvm"]);
}

#[test]
fn threads_and_every_std_sync_primitive_work_on_two_cpus_on_qemu_kvm() {
    eremite_tests::require_kvm();
    threads_pass_on_qemu(&["--hypervisor", "qemu-kvm"], "2");
    spawn_join_on_qemu(&["--hypervisor", "qemu-kvm"], "2");
}

/// Boot the HTTP echo server on QEMU with a virtio-net card on a tap in
/// a fresh namespace, check an echoed request and a second connection,
/// and stop it with `/quit`.
fn http_echo_works_through_qemu(options: &[&str]) {
    require_qemu();
    let ns = NetNs::with_tap("etap0", "10.0.0.1/24");
    let mut all = options.to_vec();
    all.extend_from_slice(&[
        "--net",
        "tap:etap0,mac=02:00:00:00:00:02",
        "--ip",
        "10.0.0.2/24",
        "--gateway",
        "10.0.0.1",
    ]);
    let guest = ns.spawn("httpd", &all, &["0.0.0.0:8080"]);
    ns.enter(|| {
        let answer = eremite_tests::http_to_guest(
            8080,
            "POST /submit?q=a%2Fb HTTP/1.1\r\nHost: guest.test\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 8\r\nConnection: close\r\n\r\nname=eve",
        );
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        for line in [
            "method: POST",
            "url: /submit?q=a%2Fb",
            "host: guest.test",
            "form: q=a/b",
            "form: name=eve",
        ] {
            assert!(answer.lines().any(|l| l == line), "no {line:?} in {answer}");
        }
        assert!(answer.contains("remote: 10.0.0.1:"), "{answer}");
        // More than one interrupt: a second connection, then the end.
        let answer = eremite_tests::http_to_guest(8080, "GET /two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert!(answer.contains("url: /two"), "{answer}");
        eremite_tests::http_to_guest(8080, "GET /quit HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    });
    let run = guest.wait();
    run.expect_code(0);
    assert!(
        run.stdout.starts_with("listening on 0.0.0.0:8080\n"),
        "{run}"
    );
    assert!(run.stdout.contains("served 3 connections"), "{run}");
}

#[test]
fn the_http_echo_server_answers_through_a_tap_on_qemu_tcg() {
    http_echo_works_through_qemu(&["--hypervisor", "qemu-tcg"]);
}

#[test]
fn the_http_echo_server_answers_through_a_tap_on_two_cpus_on_qemu_kvm() {
    eremite_tests::require_kvm();
    http_echo_works_through_qemu(&["--hypervisor", "qemu-kvm", "--cpus", "2"]);
}
