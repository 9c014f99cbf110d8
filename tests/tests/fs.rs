//! examples/fs: the in-kernel RAM file system, the initial ramdisk and
//! host mounts, through the real CLI.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::PathBuf;
use std::process::Command;

use eremite_tests::{boot, run_command};

/// A fresh directory under the system's temporary directory.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("eremite-fs-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_ram_file_system_behaves_as_posix_says_without_exits() {
    let run = boot("fs", &["--stats"], &["selftest"]);
    run.expect_code(0);
    assert!(run.stdout.contains("selftest passed"), "{run}");
    // Every file operation stays in the guest: no host file-system calls,
    // and only a handful of exits for the whole run (console lines).
    assert_eq!(run.stat("hypercall HostFs"), 0, "{run}");
    let lines = run.stdout.lines().count() as u64;
    assert!(run.stat("total") <= lines + 10, "{run}");
}

#[test]
fn a_hundred_thousand_files_in_a_thousand_directories() {
    let run = boot("fs", &["--memory", "512M"], &["scale", "100000", "1000"]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("created 100000 files in 1000 directories"),
        "{run}"
    );
    assert!(run.stdout.contains("listed 100000"), "{run}");
}

#[test]
fn threads_change_shared_directories_at_once_and_the_result_is_exact() {
    let run = boot("fs", &["--memory", "128M"], &["concurrent", "16"]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("concurrent: 16 threads, 800 files left in /shared, 400 in /moved"),
        "{run}"
    );
}

#[test]
fn a_full_file_system_says_enospc_and_recovers() {
    let run = boot("fs", &["--memory", "16M"], &["fill"]);
    run.expect_code(0);
    assert!(run.stdout.contains("errno Some(28)"), "{run}");
    assert!(run.stdout.contains("room again after deleting"), "{run}");
}

#[test]
fn an_initrd_directory_is_unpacked_with_modes_and_symlinks() {
    let dir = temp_dir("initrd");
    fs::create_dir_all(dir.join("etc/app")).unwrap();
    fs::write(dir.join("etc/app/config.toml"), "answer = 42").unwrap();
    fs::write(dir.join("run.sh"), "#!/bin/sh").unwrap();
    fs::set_permissions(dir.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.join("secret"), "s3cr3t").unwrap();
    fs::set_permissions(dir.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    symlink("etc/app/config.toml", dir.join("config")).unwrap();
    let initrd = dir.to_str().unwrap();
    let run = boot("fs", &["--initrd", initrd], &["tree", "/"]);
    run.expect_code(0);
    for line in [
        "/config link 777 -> etc/app/config.toml",
        "/etc dir 755",
        "/etc/app/config.toml file 644 \"answer = 42\"",
        "/run.sh file 755 \"#!/bin/sh\"",
        "/secret file 600 \"s3cr3t\"",
    ] {
        assert!(
            run.stdout.lines().any(|l| l == line),
            "no line {line:?}\n{run}"
        );
    }
    // The same tree as a tar archive.
    let tar = dir.with_extension("tar");
    run_command(
        Command::new("tar")
            .arg("-cf")
            .arg(&tar)
            .arg("-C")
            .arg(&dir)
            .arg("."),
    )
    .expect_code(0);
    let run = boot(
        "fs",
        &["--initrd", tar.to_str().unwrap()],
        &["tree", "/etc"],
    );
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("/etc/app/config.toml file 644 \"answer = 42\""),
        "{run}"
    );
    let _ = fs::remove_file(&tar);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_initrd_is_a_clear_error() {
    let dir = temp_dir("bad-initrd");
    let junk = dir.join("junk.bin");
    fs::write(&junk, b"this is not an archive").unwrap();
    let run = boot("fs", &["--initrd", junk.to_str().unwrap()], &["tree", "/"]);
    run.expect_code(125);
    assert!(run.stderr.contains("junk.bin"), "{run}");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    let missing = dir.join("missing");
    let run = boot(
        "fs",
        &["--initrd", missing.to_str().unwrap()],
        &["tree", "/"],
    );
    run.expect_code(125);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_host_mount_is_read_and_written_and_never_left() {
    let base = temp_dir("mount");
    let (data, outside, ro) = (base.join("data"), base.join("outside"), base.join("ro"));
    for d in [&data, &outside, &ro] {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(data.join("from-host.txt"), "hello from the host").unwrap();
    fs::write(ro.join("visible.txt"), "read-only but readable\n").unwrap();
    symlink(&outside, data.join("escape-link")).unwrap();
    symlink("/etc/passwd", data.join("abs-link")).unwrap();
    let mount = format!("{}:/data", data.display());
    let ro_mount = format!("{}:/ro:ro", ro.display());
    let run = boot(
        "fs",
        &["--mount", &mount, "--mount", &ro_mount],
        &["mount", "/data", "/ro"],
    );
    // The guest aborts at the end on purpose.
    run.expect_code(134);
    let out = &run.stdout;
    assert!(out.contains("read from host: hello from the host"), "{run}");
    assert!(
        out.contains("listing: abs-link escape-link from-guest.txt from-host.txt newdir renamed"),
        "{run}"
    );
    assert!(out.contains("renamed is 5 bytes"), "{run}");
    assert!(out.contains("dotdot escape: Err(NotFound)"), "{run}");
    assert!(out.contains("symlink escape: Err(Some("), "{run}");
    assert!(out.contains("absolute symlink escape: Err(Some("), "{run}");
    assert!(out.contains("long path: Err(Some(36))"), "{run}");
    assert!(out.contains("path with NUL: Err(InvalidInput)"), "{run}");
    assert!(out.contains("read-only write: Err(Some(30))"), "{run}");
    assert!(out.contains("read-only remove: Err(Some(30))"), "{run}");
    assert!(
        out.contains("read-only read: read-only but readable"),
        "{run}"
    );
    // What the guest wrote is on the host although it crashed.
    assert_eq!(
        fs::read_to_string(data.join("from-guest.txt")).unwrap(),
        "written by the guest\nappended\n"
    );
    assert_eq!(fs::read_to_string(data.join("renamed")).unwrap(), "inner");
    assert!(data.join("newdir").is_dir());
    // Nothing escaped.
    assert!(!outside.join("pwned").exists(), "a write escaped the mount");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    assert!(!ro.join("denied").exists());
    assert!(ro.join("visible.txt").exists());
    let _ = fs::remove_dir_all(&base);
}

#[test]
fn the_vmm_runs_confined_with_no_inherited_descriptors_or_new_privileges() {
    use std::os::fd::AsRawFd;
    let base = temp_dir("confined");
    fs::write(base.join("data"), b"x").unwrap();
    // A descriptor eremite inherits (without close-on-exec).
    let inherited = fs::File::open(base.join("data")).unwrap();
    let fd = rustix::io::dup(&inherited).unwrap();
    let mount = format!("{}:/data", base.display());
    let guest = eremite_tests::spawn_image(
        &eremite_tests::image("net"),
        &["--verbose", "--mount", &mount, "--net", "user"],
        &["echo-server", "127.0.0.1:7000"],
    );
    guest.wait_for_output("listening on");
    let pid = guest.pid();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    // Every thread (main, vCPU, the card's worker) runs under a filter.
    let threads: Vec<String> = fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|task| fs::read_to_string(task.unwrap().path().join("status")).unwrap())
        .collect();
    let fds: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| {
            fs::read_link(e.unwrap().path())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    let run = guest.kill();
    drop(fd);
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(
        threads.len() >= 3,
        "main, vCPU and device threads: {threads:?}"
    );
    for thread in &threads {
        assert!(thread.contains("Seccomp:\t2"), "{thread}");
        // Of every capability, at most DAC_OVERRIDE, DAC_READ_SEARCH and
        // FOWNER (bits 1 to 3) are left.
        let effective = thread
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:\t"))
            .map(|hex| u64::from_str_radix(hex, 16).unwrap())
            .unwrap();
        assert_eq!(effective & !0b1110, 0, "{thread}");
    }
    let data = base.join("data").display().to_string();
    assert!(
        !fds.contains(&data),
        "fd {} inherited: {fds:?}",
        inherited.as_raw_fd()
    );
    drop(run);
    let run = boot("hello", &["--verbose", "--mount", &mount], &[]);
    run.expect_code(0);
    assert!(
        run.stderr.contains(
            "confined: no new privileges, capabilities dropped, seccomp filters, Landlock"
        ),
        "{run}"
    );
    let _ = fs::remove_dir_all(&base);
}

#[test]
fn a_call_outside_a_threads_seccomp_filter_stops_the_vmm_with_a_message() {
    // The card's worker starts once the guest's network stack does: a
    // server, which would run until the timeout if the hook failed.
    let server = ["net", "--", "echo-server", "127.0.0.1:7000"];
    // The control socket's thread starts with the vCPUs: a guest that
    // counts for seconds, so it does before the guest ends.
    let socket = std::env::temp_dir().join(format!("eremite-hook-{}.sock", std::process::id()));
    let api = ["--api", socket.to_str().unwrap()];
    let counter = ["counter", "--", "1000", "10"];
    for (kind, options, image) in [
        ("main", &[][..], &["hello"][..]),
        ("vcpu", &[][..], &["hello"][..]),
        ("device", &["--net", "user"][..], &server[..]),
        ("api", &api[..], &counter[..]),
    ] {
        let mut command = std::process::Command::new(eremite_tests::eremite());
        command
            .args(["run", "--timeout", "20s"])
            .args(options)
            .arg(eremite_tests::image(image[0]))
            .args(&image[1..])
            .env("EREMITE_TEST_FORBIDDEN_CALL", kind);
        let run = eremite_tests::run_command(&mut command);
        run.expect_code(159);
        assert!(
            run.stderr.contains(&format!(
                "eremite: the VMM's {kind} thread made system call 41 (socket), which its seccomp filter forbids"
            )),
            "{run}"
        );
    }
    let _ = std::fs::remove_file(&socket);
}

#[test]
fn fsync_in_a_mount_is_fsync_on_the_host() {
    let base = temp_dir("sync");
    let log = base.join("strace.log");
    let data = base.join("data");
    fs::create_dir_all(&data).unwrap();
    let mount = format!("{}:/data", data.display());
    // The VMM under strace: only its fsync and fdatasync calls.
    let run = run_command(
        Command::new("strace")
            .args(["-f", "-qq", "-e", "trace=fsync,fdatasync", "-o"])
            .arg(&log)
            .arg(eremite_tests::eremite())
            .args(["run", "--mount", &mount])
            .arg(eremite_tests::image("fs"))
            .args(["--", "sync", "/data"]),
    );
    run.expect_code(0);
    assert!(run.stdout.contains("synced"), "{run}");
    assert_eq!(
        fs::read_to_string(data.join("journal")).unwrap(),
        "committed\n"
    );
    let calls = fs::read_to_string(&log).unwrap();
    // The file's, then the directory's.
    let synced = calls
        .lines()
        .filter(|l| l.contains("fsync(") && l.ends_with("= 0"))
        .count();
    assert_eq!(synced, 2, "{calls}");
    let _ = fs::remove_dir_all(&base);
}

#[test]
fn a_symlink_swapped_during_the_calls_never_lets_a_write_out() {
    let base = temp_dir("race");
    let (data, outside) = (base.join("data"), base.join("outside"));
    fs::create_dir_all(data.join("realdir")).unwrap();
    fs::create_dir_all(&outside).unwrap();
    symlink(&outside, data.join("evil")).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (data, stop) = (data.clone(), stop.clone());
        std::thread::spawn(move || {
            let swap = data.join("swap");
            let mut swaps = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for name in ["realdir", "evil"] {
                    // Atomic renames: `swap` is a directory inside the
                    // mount, then nothing, then a link that leads out.
                    let _ = fs::rename(data.join(name), &swap);
                    let _ = fs::rename(&swap, data.join(name));
                    swaps += 1;
                }
            }
            swaps
        })
    };
    let mount = format!("{}:/data", data.display());
    let run = boot("fs", &["--mount", &mount], &["race", "/data", "3000"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    run.expect_code(0);
    assert!(run.stdout.contains("race: "), "{run}");
    assert!(swaps > 100, "the host swapped only {swaps} times");
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "a write escaped the mount\n{run}"
    );
    let _ = fs::remove_dir_all(&base);
}

#[test]
fn bad_mounts_are_clear_errors() {
    let run = boot("fs", &["--mount", "/no/such/dir:/data"], &["selftest"]);
    run.expect_code(125);
    assert!(run.stderr.contains("/no/such/dir"), "{run}");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    let run = boot("fs", &["--mount", "nocolon"], &["selftest"]);
    run.expect_code(2);
    assert!(run.stderr.contains("nocolon"), "{run}");
}

#[test]
fn the_same_program_prints_the_same_transcript_as_on_linux_tmpfs() {
    eremite_tests::assert_fsdiff_matches_linux(&[]);
}

#[test]
fn strace_on_the_command_line_logs_each_call_with_its_result() {
    // fsdiff's first steps: write "hello" to /fsdiff/a, then read it back.
    let run = boot(
        "fsdiff",
        &["--cmdline", "strace=open,read,write,close"],
        &["/tmp"],
    );
    run.expect_code(0);
    let traced: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| {
            ["open(", "read(", "write(", "close("]
                .iter()
                .any(|c| l.starts_with(c))
        })
        .collect();
    // open(path, O_CREAT|O_TRUNC|O_WRONLY = 0o1101, 0o777) = 3
    assert!(
        traced
            .iter()
            .any(|l| l.starts_with("open(0x") && l.ends_with(", 577, 511) = 3")),
        "{run}"
    );
    assert!(traced.contains(&"close(3) = 0"), "{run}");
    assert!(
        traced
            .iter()
            .any(|l| l.starts_with("read(3, 0x") && l.ends_with(", 5) = 5")),
        "{run}"
    );
    // Opening a missing file: the errno by name.
    assert!(traced.iter().any(|l| l.ends_with("= -2 (ENOENT)")), "{run}");
    // Only the calls named: no allocator calls.
    assert!(!run.stderr.contains("malloc("), "{run}");
    // Without the parameter, nothing is traced.
    let quiet = boot("fsdiff", &[], &["/tmp"]);
    quiet.expect_code(0);
    assert!(!quiet.stderr.contains("open("), "{quiet}");
}
