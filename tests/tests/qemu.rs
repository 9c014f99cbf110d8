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
    let run = boot(
        "hello",
        &["--hypervisor", "qemu-tcg", "--timeout", "5s"],
        &[],
    );
    run.expect_code(125);
    assert!(run.stderr.contains("--timeout"), "{run}");
    let run = boot("hello", &["--hypervisor", "qemu-tcg", "--gdb", "1234"], &[]);
    run.expect_code(125);
    assert!(run.stderr.contains("QEMU does not support --gdb"), "{run}");
    // A Linux program needs eremite's VMM, which loads it.
    let run = eremite_tests::boot_image(
        &eremite_tests::c_image("hello", false),
        &["--hypervisor", "qemu-tcg"],
        &[],
    );
    run.expect_code(125);
    assert!(
        run.stderr.contains("QEMU does not support Linux programs"),
        "{run}"
    );
    // As on eremite's VMM, a vCPU count out of range is a usage error.
    let run = boot("hello", &["--hypervisor", "qemu-tcg", "--cpus", "17"], &[]);
    run.expect_code(2);
    assert!(run.stderr.contains("--cpus"), "{run}");
}

/// A QEMU VM joins an eremite switch (QEMU's `-netdev stream`): started
/// first, it starts the switch; an eremite VM then reaches it there.
#[test]
fn a_qemu_vm_and_an_eremite_vm_talk_over_a_switch() {
    use std::os::unix::fs::PermissionsExt;
    require_qemu();
    // A runtime directory of the test's own: its switch meets no other.
    let runtime = std::env::temp_dir().join(format!("eremite-qemu-switch-{}", std::process::id()));
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    let env = [("XDG_RUNTIME_DIR", runtime.as_path())];
    let net = eremite_tests::image("net");
    let server = eremite_tests::spawn_image_env(
        &net,
        &[
            "--hypervisor",
            "qemu",
            "--net",
            "switch:mixed",
            "--ip",
            "10.0.4.1/24",
        ],
        &["echo-server", "0.0.0.0:7000"],
        &env,
    );
    server.wait_for_output("listening on");
    let client = eremite_tests::spawn_image_env(
        &net,
        &["--net", "switch:mixed", "--ip", "10.0.4.2/24"],
        &["client", "10.0.4.1:7000", "1000000"],
        &env,
    )
    .wait();
    client.expect_code(0);
    assert!(client.stdout.contains("client passed"), "{client}");
    server.kill();
    // Without --ip a switch is refused on QEMU as on eremite's VMM.
    let run = boot(
        "hello",
        &["--hypervisor", "qemu", "--net", "switch:mixed"],
        &[],
    );
    run.expect_code(125);
    assert!(run.stderr.contains("needs the guest's address"), "{run}");
    let _ = std::fs::remove_dir_all(&runtime);
}

/// The threads example on `cpus` CPUs under QEMU with `accel_options`:
/// every check passed.
fn threads_pass_on_qemu(accel_options: &[&str], cpus: &str) {
    require_qemu();
    let mut options = accel_options.to_vec();
    // 100 threads alive at once with std's 1 MiB stacks need more than
    // 64 MiB (as in tests/threads.rs).
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

/// A stand-in for QEMU: a shell script named `qemu-system-x86_64` with
/// `body`, in a directory of its own that lives as long as the value.
struct FakeQemu(std::path::PathBuf);

impl FakeQemu {
    fn new(tag: &str, body: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("eremite-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("qemu-system-x86_64");
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        Self(dir)
    }

    /// `eremite run OPTIONS hello -- ARGS` with this QEMU.
    fn boot_hello(&self, options: &[&str], args: &[&str]) -> Run {
        let output = std::process::Command::new(eremite_tests::eremite())
            .arg("run")
            .args(options)
            .arg(eremite_tests::image("hello"))
            .arg("--")
            .args(args)
            .env("EREMITE_QEMU", self.0.join("qemu-system-x86_64"))
            .output()
            .unwrap();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Drop for FakeQemu {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_qemu_that_cannot_start_the_vm_is_one_line_and_125() {
    // QEMU 7.2 with `-cpu host` on a host whose KVM refuses an MSR (AMD
    // under PVM): it reports, fails an assertion and aborts before the
    // guest runs.
    let qemu = FakeQemu::new(
        "msr-qemu",
        "echo 'qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69' >&2\n\
         echo \"qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion \\`ret == cpu->kvm_msr_buf->nmsrs' failed.\" >&2\n\
         kill -ABRT $$\n",
    );
    let run = qemu.boot_hello(&["--hypervisor", "qemu-kvm"], &[]);
    run.expect_code(125);
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    assert!(
        run.stderr.starts_with("eremite: QEMU failed")
            && run.stderr.contains("failed to set MSR 0x10a to 0x69")
            && run.stderr.contains("--hypervisor qemu-tcg"),
        "{run}"
    );
}

#[test]
fn a_cpu_without_rdrand_still_seeds_std_and_says_so() {
    require_qemu();
    // The real QEMU with RDRAND taken out of TCG's CPU model.
    let qemu = FakeQemu::new(
        "no-rdrand-qemu",
        "for a in \"$@\"; do shift; [ \"$a\" = max ] && a=max,-rdrand; set -- \"$@\" \"$a\"; done\n\
         exec qemu-system-x86_64 \"$@\"\n",
    );
    let seeds: Vec<String> = (0..2)
        .map(|_| {
            let run = qemu.boot_hello(&["--hypervisor", "qemu-tcg", "--verbose"], &["--random"]);
            run.expect_code(0);
            assert!(
                run.stderr.contains("this CPU has no working RDRAND"),
                "{run}"
            );
            let line = run.stdout.lines().find(|l| l.starts_with("random: "));
            line.unwrap_or_else(|| panic!("no seed\n{run}")).to_owned()
        })
        .collect();
    assert_ne!(seeds[0], seeds[1], "two boots got the same seed");
    // With RDRAND (our VMM passes the host's CPUID on): no warning.
    let run = boot("hello", &["--verbose"], &["--random"]);
    run.expect_code(0);
    assert!(!run.stderr.contains("RDRAND"), "{run}");
    assert!(run.stdout.contains("random: "), "{run}");
}

/// The TSC frequency and its source from the kernel's verbose log
/// ("TSC 2596134 kHz (measured)"), booting hello with `options`, through
/// `qemu` when given.
fn tsc_khz(qemu: Option<&FakeQemu>, options: &[&str]) -> (u64, String) {
    let mut all = vec!["--verbose"];
    all.extend_from_slice(options);
    let run = match qemu {
        Some(qemu) => qemu.boot_hello(&all, &[]),
        None => boot("hello", &all, &[]),
    };
    run.expect_code(0);
    let line = run
        .stderr
        .lines()
        .find_map(|l| l.split_once(", TSC ").map(|(_, tsc)| tsc))
        .unwrap_or_else(|| panic!("no TSC in the kernel log\n{run}"));
    let (khz, source) = line
        .split_once(" kHz (")
        .unwrap_or_else(|| panic!("malformed TSC line {line:?}"));
    (
        khz.parse().expect("a number of kHz"),
        source.trim_end_matches(')').to_owned(),
    )
}

#[test]
fn the_tsc_frequency_is_right_whether_reported_or_measured() {
    eremite_tests::require_kvm();
    require_qemu();
    // KVM_GET_TSC_KHZ: the reference.
    let (reference, source) = tsc_khz(None, &[]);
    assert_eq!(source, "from the hypervisor");
    // QEMU + KVM with an invariant TSC: CPUID leaf 0x4000_0010.
    let (reported, source) = tsc_khz(None, &["--hypervisor", "qemu-kvm"]);
    assert_eq!(source, "from the hypervisor");
    // TCG has no KVM leaf, nor has KVM without `invtsc`: the kernel
    // measures against the PIT (with exits to QEMU for every read).
    let without_invtsc = FakeQemu::new(
        "no-invtsc-qemu",
        "for a in \"$@\"; do shift; case \"$a\" in *,+invtsc) a=${a%,+invtsc};; esac; set -- \"$@\" \"$a\"; done\n\
         exec qemu-system-x86_64 \"$@\"\n",
    );
    let mut measured = Vec::new();
    for (what, qemu, hypervisor) in [
        ("under TCG", None, "qemu-tcg"),
        ("under KVM", Some(&without_invtsc), "qemu-kvm"),
    ] {
        let (khz, source) = tsc_khz(qemu, &["--hypervisor", hypervisor]);
        assert_eq!(source, "measured", "{what}");
        measured.push((what, khz));
    }
    for (what, khz) in [("reported on QEMU + KVM", reported)]
        .into_iter()
        .chain(measured)
    {
        let error = (khz as f64 - reference as f64).abs() / reference as f64;
        assert!(
            error < 0.01,
            "TSC {what}: {khz} kHz, KVM says {reference} kHz"
        );
    }
}
