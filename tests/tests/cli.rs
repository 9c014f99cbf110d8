//! The command line: user mistakes get one line and a documented code.

use eremite_tests::{
    boot_image, c_image, eremite, eremite_cli, image, require_kvm, root, run_command, scratch_base,
    spawn_image,
};
use std::process::Command;
use std::time::{Duration, Instant};

fn one_line_error(run: &eremite_tests::Run, code: i32, needle: &str) {
    run.expect_code(code);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line of error\n{run}");
    assert!(lines[0].starts_with("eremite: "), "{run}");
    assert!(lines[0].contains(needle), "{run}");
}

#[test]
fn a_missing_image_is_one_line_and_125() {
    let run = eremite_cli(&["run", "/nonexistent/image"]);
    one_line_error(&run, 125, "No such file");
}

#[test]
fn a_file_that_is_not_elf_is_refused() {
    let path = root().join("Cargo.toml");
    let run = eremite_cli(&["run", path.to_str().unwrap()]);
    one_line_error(&run, 125, "not an ELF file");
}

#[test]
fn a_dynamic_program_whose_library_or_interpreter_is_missing_is_one_line() {
    // Built here: one program that needs a library deleted after linking,
    // one whose interpreter does not exist.
    let dir = std::env::temp_dir().join(format!("eremite-cli-dynamic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("gone.c"), "int gone(void) { return 1; }\n").unwrap();
    std::fs::write(
        dir.join("main.c"),
        "int gone(void);\nint main(void) { return gone(); }\n",
    )
    .unwrap();
    let gcc = |args: &[&str]| {
        run_command(Command::new("gcc").current_dir(&dir).args(args)).expect_code(0);
    };
    gcc(&["-shared", "-fPIC", "-o", "libgone.so", "gone.c"]);
    gcc(&["-o", "needs-gone", "main.c", "-L.", "-lgone"]);
    gcc(&[
        "-o",
        "no-interpreter",
        "main.c",
        "gone.c",
        "-Wl,--dynamic-linker=/nonexistent/ld.so",
    ]);
    std::fs::remove_file(dir.join("libgone.so")).unwrap();
    let needs_gone = dir.join("needs-gone");
    let run = eremite_cli(&["run", needs_gone.to_str().unwrap()]);
    one_line_error(&run, 125, "needs libgone.so");
    let no_interpreter = dir.join("no-interpreter");
    let run = eremite_cli(&["run", no_interpreter.to_str().unwrap()]);
    one_line_error(&run, 125, "cannot read its interpreter /nonexistent/ld.so");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cpu_counts_outside_1_to_16_are_usage_errors() {
    let hello = image("hello");
    for cpus in ["17", "0"] {
        let run = eremite_cli(&["run", "--cpus", cpus, hello.to_str().unwrap()]);
        run.expect_code(2);
        assert!(
            run.stderr.starts_with("error: ") && run.stderr.contains("1..=16"),
            "{run}"
        );
    }
}

#[test]
fn a_fifo_given_as_the_image_or_the_initrd_is_refused_at_once() {
    let dir = scratch_base().join(format!("fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    let _ = std::fs::remove_file(&fifo);
    run_command(Command::new("mkfifo").arg(&fifo)).expect_code(0);
    let fifo = fifo.to_str().unwrap();
    let hello = image("hello");
    for args in [
        vec!["run", fifo],
        vec!["run", "--initrd", fifo, hello.to_str().unwrap()],
    ] {
        // Opening a FIFO to read waits for a writer: eremite must not.
        let started = Instant::now();
        let run = eremite_cli(&args);
        assert!(started.elapsed() < Duration::from_secs(10), "{run}");
        one_line_error(&run, 125, "not a regular file");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_hermit_program_that_forgot_eremite_is_told_how_to_link_it() {
    // hello with its EREMITE note renamed: as the program would be
    // without `use eremite as _;`.
    let mut bytes = std::fs::read(image("hello")).unwrap();
    let at = bytes
        .windows(8)
        .position(|w| w == b"EREMITE\0")
        .expect("hello has the note");
    bytes[at + 6] = b'X';
    let dir = scratch_base().join(format!("no-note-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hello");
    std::fs::write(&path, &bytes).unwrap();
    let run = eremite_cli(&["run", path.to_str().unwrap()]);
    one_line_error(&run, 125, "add `use eremite as _;` to the program");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_timeout_stops_a_guest_that_runs_on() {
    // It sleeps for ever.
    let started = Instant::now();
    let run = boot_image(
        &c_image("readiness", false),
        &["--timeout", "1500ms"],
        &["ignore-term"],
    );
    run.expect_code(124);
    assert!(started.elapsed() >= Duration::from_millis(1500), "{run}");
    assert!(
        run.stderr
            .contains("eremite: stopped the guest after the --timeout of 1500ms\n"),
        "{run}"
    );
}

#[test]
fn a_second_sigterm_stops_a_guest_that_ignores_the_first() {
    let mut guest = spawn_image(&c_image("readiness", false), &[], &["ignore-term"]);
    std::thread::sleep(Duration::from_millis(1500));
    let pid = guest.pid().to_string();
    let term = || {
        run_command(Command::new("kill").args(["-TERM", &pid])).expect_code(0);
    };
    term();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        guest.is_running(),
        "the first SIGTERM is the program's to ignore"
    );
    term();
    let run = guest.wait();
    run.expect_code(143);
    assert_eq!(run.stdout, "ignoring SIGTERM and SIGINT\n", "{run}");
    assert!(
        run.stderr.contains(
            "eremite: stopped the guest: SIGTERM came a second time (the guest had not ended after the first)\n"
        ),
        "{run}"
    );
}

#[test]
fn bad_flags_and_sizes_are_usage_errors() {
    let hello = image("hello");
    let hello = hello.to_str().unwrap();
    for args in [
        vec!["run", "--memory", "lots", hello],
        vec!["run", "--memory", "4M", hello],
        vec!["run", "--no-such-flag", hello],
        vec!["run"],
    ] {
        let run = eremite_cli(&args);
        run.expect_code(2);
        assert!(run.stderr.starts_with("error: "), "{run}");
    }
}

#[test]
fn bad_network_values_are_usage_errors() {
    let hello = image("hello");
    let hello = hello.to_str().unwrap();
    for (args, needle) in [
        (vec!["--net", "tap0"], "is not user[,mac=MAC], tap:NAME"),
        (vec!["--net", "switch:a/b"], "switch name \"a/b\" must be"),
        (vec!["--net", "tap:"], "is empty"),
        (vec!["--net", "tap:t,mac=01:00:00:00:00:01"], "multicast"),
        (vec!["--net", "tap:t,mac=zz"], "MAC address"),
        (
            vec!["--net", "tap:t", "--ip", "10.0.0.2"],
            "is not ADDRESS/PREFIX",
        ),
        (
            vec!["--net", "tap:t", "--ip", "10.0.0.2/33"],
            "longer than 32",
        ),
        (
            vec!["--net", "tap:t", "--ip", "224.0.0.1/24"],
            "not a unicast",
        ),
        (
            vec!["--net", "tap:t", "--ip", "10.0.0.2/24", "--gateway", "gw"],
            "is not an IPv4 address",
        ),
        (vec!["--ip", "10.0.0.2/24"], "--net"),
        (vec!["--net", "tap:t", "--gateway", "10.0.0.1"], "--ip"),
    ] {
        let mut all = vec!["run"];
        all.extend_from_slice(&args);
        all.push(hello);
        let run = eremite_cli(&all);
        run.expect_code(2);
        assert!(run.stderr.starts_with("error: "), "{run}");
        assert!(run.stderr.contains(needle), "{args:?}: {run}");
    }
}

#[test]
fn a_switch_without_an_address_or_with_published_ports_is_refused() {
    let hello = image("hello");
    let hello = hello.to_str().unwrap();
    for (args, needle) in [
        (
            vec!["--net", "switch:t"],
            "needs the guest's address (--ip)",
        ),
        (
            vec!["--net", "switch:t", "--ip", "10.9.0.1/24", "-p", "8080"],
            "not a tap or a switch",
        ),
    ] {
        let mut all = vec!["run"];
        all.extend_from_slice(&args);
        all.push(hello);
        let run = eremite_cli(&all);
        run.expect_code(125);
        assert!(run.stderr.contains(needle), "{args:?}: {run}");
    }
}

#[test]
fn a_gateway_outside_the_network_is_refused() {
    let hello = image("hello");
    let run = eremite_cli(&[
        "run",
        "--net",
        "tap:t",
        "--ip",
        "10.0.0.2/24",
        "--gateway",
        "10.0.1.1",
        hello.to_str().unwrap(),
    ]);
    one_line_error(
        &run,
        125,
        "not another address in the network of --ip 10.0.0.2/24",
    );
}

#[test]
fn a_bad_environment_entry_is_refused() {
    let hello = image("hello");
    let run = eremite_cli(&["run", "--env", "NOEQUALS", hello.to_str().unwrap()]);
    one_line_error(&run, 125, "KEY=VALUE");
}

#[test]
fn without_kvm_the_error_says_so() {
    // Hide /dev/kvm in a private mount namespace (needs root and unshare).
    let probe = Command::new("unshare").args(["-m", "true"]).output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "this test needs `unshare -m` (root) to hide /dev/kvm: {probe:?}"
    );
    let script = format!(
        "mount -t tmpfs none /dev && exec {} run {}",
        eremite().display(),
        image("hello").display()
    );
    let run = run_command(Command::new("unshare").args(["-m", "sh", "-c", &script]));
    one_line_error(&run, 125, "/dev/kvm");
}

/// A minimal ELF header: `class` 1 (32-bit) or 2 (64-bit), `machine`
/// (`EM_386` 3, `EM_X86_64` 62, `EM_AARCH64` 183), an executable with no
/// segments.
fn elf_header(class: u8, machine: u16) -> Vec<u8> {
    let is_64 = class == 2;
    let mut h = vec![0x7f, b'E', b'L', b'F', class, 1, 1, 0];
    h.resize(16, 0);
    h.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    h.extend_from_slice(&machine.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    let (word, header_size) = if is_64 { (8, 64u16) } else { (4, 52u16) };
    h.resize(h.len() + 3 * word, 0); // entry, phoff, shoff
    h.extend_from_slice(&0u32.to_le_bytes()); // flags
    h.extend_from_slice(&header_size.to_le_bytes());
    h.extend_from_slice(&(if is_64 { 56u16 } else { 32 }).to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes()); // phnum
    h.extend_from_slice(&(if is_64 { 64u16 } else { 40 }).to_le_bytes());
    h.extend_from_slice(&[0; 4]); // shnum, shstrndx
    h
}

#[test]
fn programs_for_other_machines_are_refused_in_one_line() {
    let dir = std::env::temp_dir().join(format!("eremite-elf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, class, machine, needle) in [
        ("x86-32", 1, 3, "32-bit x86"),
        ("aarch64", 2, 183, "built for AArch64"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, elf_header(class, machine)).unwrap();
        let run = eremite_cli(&["run", path.to_str().unwrap()]);
        one_line_error(&run, 125, needle);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compat_makes_socket2_and_patched_tokio_and_mio_and_prints_their_patch_lines() {
    let dir = scratch_base().join(format!("compat-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = eremite_cli(&["compat", dir.to_str().unwrap()]);
    run.expect_code(0);
    let tokio = dir.join("tokio-1.54.1");
    assert_eq!(
        run.stdout,
        format!(
            "[patch.crates-io]\nsocket2 = {{ path = \"{}\" }}\ntokio = {{ path = \"{}\" }}\nmio = {{ path = \"{}\" }}\n",
            dir.join("socket2").display(),
            tokio.display(),
            dir.join("mio-1.2.5").display()
        )
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("patch.toml")).unwrap(),
        run.stdout
    );
    // The release, patched: hermit gets tokio's Unix and WASI TCP code.
    let cfg = std::fs::read_to_string(tokio.join("src/macros/cfg.rs")).unwrap();
    assert!(cfg.contains("target_os = \"hermit\""), "unpatched");
    assert!(tokio.join("Cargo.toml").is_file() && tokio.join("LICENSE").is_file());
    // A second run finds them made.
    eremite_cli(&["compat", dir.to_str().unwrap()]).expect_code(0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `eremite binfmt install` makes an image run as `./image args` (the
/// HermitCore proxy's trick), with the guest's exit code; `uninstall`
/// undoes it. A rule of the test's own name, so nothing else is touched.
#[test]
fn binfmt_runs_an_image_like_a_native_executable_until_uninstalled() {
    require_kvm();
    let name = format!("eremite-test-{}", std::process::id());
    eremite_cli(&["binfmt", "install", "--name", &name]).expect_code(0);
    let again = eremite_cli(&["binfmt", "install", "--name", &name]);
    again.expect_code(1);
    assert!(again.stderr.contains("exists already"), "{again}");
    let dir = std::env::temp_dir().join(format!("eremite-binfmt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let program = dir.join("hello");
    std::fs::copy(image("hello"), &program).unwrap();
    let run = run_command(Command::new(&program).args(["one", "two"]));
    let exit = run_command(Command::new(&program).args(["--exit", "7"]));
    eremite_cli(&["binfmt", "uninstall", "--name", &name]).expect_code(0);
    run.expect_code(0);
    assert!(run.stdout.contains("Hello from eremite!"), "{run}");
    assert!(run.stdout.contains(r#"args: ["one", "two"]"#), "{run}");
    exit.expect_code(7);
    // Without the rule Linux loads it as its own (it ignores the OS ABI
    // byte), and the image, which needs its kernel, dies at once.
    let native = Command::new(&program).output().expect("exec");
    assert!(!native.status.success(), "{native:?}");
    assert!(
        !String::from_utf8_lossy(&native.stdout).contains("Hello"),
        "{native:?}"
    );
    let gone = eremite_cli(&["binfmt", "uninstall", "--name", &name]);
    gone.expect_code(1);
    assert!(gone.stderr.contains("no binfmt_misc rule named"), "{gone}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `EREMITE_MEMORY` and `EREMITE_CPUS` stand for `--memory` and `--cpus`
/// (for a cargo runner); the flags win.
#[test]
fn memory_and_cpus_come_from_the_environment_unless_given() {
    let run = run_command(
        Command::new(eremite())
            .args(["run"])
            .arg(c_image("probe", false))
            .arg("3")
            .env("EREMITE_MEMORY", "1G")
            .env("EREMITE_CPUS", "2"),
    );
    run.expect_code(0);
    assert!(
        run.stdout.starts_with("cpus: 2\nmemory: 1024 MiB\n"),
        "{run}"
    );
    let flags = run_command(
        Command::new(eremite())
            .args(["run", "--memory", "128M"])
            .arg(c_image("probe", false))
            .env("EREMITE_MEMORY", "1G"),
    );
    assert!(flags.stdout.contains("memory: 128 MiB\n"), "{flags}");
}
