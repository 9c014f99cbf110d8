//! Guests that fail: panics, CPU exceptions, hostile system calls and
//! hypercalls. Each ends with a report and a documented exit code.

use eremite_tests::{backtrace_frames, boot};

#[test]
fn a_panic_prints_its_message_and_exits_134() {
    // (eremite passes its own RUST_BACKTRACE on unless -e sets one.)
    let run = boot("panic", &["-e", "RUST_BACKTRACE=0"], &[]);
    run.expect_code(134);
    assert!(run.stdout.contains("about to panic"), "{run}");
    assert!(
        run.stderr.contains("the list was empty (as planned)"),
        "{run}"
    );
    assert!(run.stderr.contains("panic/src/main.rs"), "{run}");
    // No backtrace unless RUST_BACKTRACE asks, as std does.
    assert!(!run.stderr.contains("eremite: backtrace"), "{run}");
    let traced = boot("panic", &["-e", "RUST_BACKTRACE=1"], &[]);
    traced.expect_code(134);
    let frames = backtrace_frames(&traced.stderr);
    // From std's panic handler down to main, named with files and lines.
    assert!(frames[0].contains("rust_begin_unwind"), "{traced}");
    assert!(
        frames
            .iter()
            .any(|f| f.contains("in panic::main at ") && f.contains("panic/src/main.rs:10")),
        "{traced}"
    );
    assert!(
        frames
            .last()
            .is_some_and(|f| f.contains("__rust_begin_short_backtrace")),
        "{traced}"
    );
}

#[test]
fn a_null_pointer_read_is_reported_as_a_page_fault() {
    let run = boot("fault", &["--stats"], &["null"]);
    run.expect_code(139);
    assert!(run.stdout.contains("about to fault: null"), "{run}");
    assert!(!run.stdout.contains("still alive"), "{run}");
    assert!(run.stderr.contains("page fault (#PF)"), "{run}");
    assert!(run.stderr.contains("CR2 0x10"), "{run}");
    assert!(run.stderr.contains("CPL 3"), "{run}");
    // The faulting function and its callers, from the stack.
    assert!(run.stderr.contains("eremite: backtrace"), "{run}");
    assert!(run.stderr.contains(" in fault::main at "), "{run}");
    assert!(run.stderr.contains("fault/src/main.rs:"), "{run}");
    // One CPL0 entry, counted under the right vector.
    assert_eq!(run.stat("vector 14"), 1, "{run}");
}

#[test]
fn an_invalid_opcode_is_reported() {
    let run = boot("fault", &[], &["ud2"]);
    run.expect_code(139);
    assert!(run.stderr.contains("invalid opcode (#UD)"), "{run}");
}

#[test]
fn wild_pointers_in_system_calls_and_hypercalls_are_refused() {
    let run = boot("wildptr", &["--stats"], &[]);
    run.expect_code(0);
    assert!(run.stdout.contains("all bad calls were refused"), "{run}");
    assert!(!run.stdout.contains("NOT refused"), "{run}");
    let bad = run.stat("bad hypercall");
    assert!(
        bad >= 2,
        "the VMM saw the hypercalls with bad addresses\n{run}"
    );
}

#[test]
fn a_hostile_guest_leaves_the_vmm_up_bounded_and_its_mounts_walls_intact() {
    let base = eremite_tests::scratch_base().join(format!("hostile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(base.join("mnt")).unwrap();
    std::fs::write(base.join("secret"), b"outside").unwrap();
    std::fs::write(base.join("mnt/file"), b"inside").unwrap();
    let mnt = base.join("mnt").display().to_string();
    let (rw, ro) = (format!("{mnt}:/data"), format!("{mnt}:/ro:ro"));
    // 20,000 rounds of garbage hypercalls and MMIO writes to the card.
    let guest = eremite_tests::spawn_image(
        &eremite_tests::image("hostile"),
        &[
            "--memory", "64M", "--net", "user", "--mount", &rw, "--mount", &ro,
        ],
        &["20000", "7", "--mmio"],
    );
    guest.wait_for_output(": done");
    let status = std::fs::read_to_string(format!("/proc/{}/status", guest.pid())).unwrap();
    let run = guest.wait();
    run.expect_code(0);
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"));
    // The guest's 64 MiB (which Populate may fill) and the VMM's own.
    assert!(peak_kib < 192 << 10, "peak RSS {peak_kib} KiB\n{status}");
    let mut around: Vec<_> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    around.sort();
    assert_eq!(around, ["mnt", "secret"], "{run}");
    assert_eq!(std::fs::read(base.join("secret")).unwrap(), b"outside");
    let _ = std::fs::remove_dir_all(&base);
}
