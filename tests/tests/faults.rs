//! Guests that fail: panics, CPU exceptions, hostile system calls and
//! hypercalls. Each ends with a report and a documented exit code.

use eremite_tests::boot;

#[test]
fn a_panic_prints_its_message_and_exits_134() {
    let run = boot("panic", &[], &[]);
    run.expect_code(134);
    assert!(run.stdout.contains("about to panic"), "{run}");
    assert!(
        run.stderr.contains("the list was empty (as planned)"),
        "{run}"
    );
    assert!(run.stderr.contains("panic/src/main.rs"), "{run}");
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
    assert!(run.stderr.contains("backtrace:"), "{run}");
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
