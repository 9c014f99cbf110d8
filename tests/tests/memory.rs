//! examples/memory: anonymous mappings, protections, the heap running out,
//! stack guards, W^X and the supervisor's pages, seen from a std program.
//! Every fault must end the VM with exit code 139 and a report whose CR2
//! is the address the guest printed just before; nothing may hang or go
//! on silently.

use eremite_tests::{Run, boot};

/// The address at the end of the stdout line that starts with `prefix`
/// (the guest prints `about to ... 0x<address>` before faulting).
fn printed_address(run: &Run, prefix: &str) -> u64 {
    run.stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.split_whitespace().find_map(parse_hex))
        .unwrap_or_else(|| panic!("no `{prefix} ... 0x...` line on stdout\n{run}"))
}

fn parse_hex(word: &str) -> Option<u64> {
    let digits = word.trim_end_matches([',', ')', ':']).strip_prefix("0x")?;
    u64::from_str_radix(digits, 16).ok()
}

/// The hexadecimal number after `label` in the fault report on stderr.
fn reported(run: &Run, label: &str) -> u64 {
    let after = run
        .stderr
        .split_once(label)
        .unwrap_or_else(|| panic!("no `{label}` in the fault report\n{run}"))
        .1;
    after
        .split_whitespace()
        .next()
        .and_then(parse_hex)
        .unwrap_or_else(|| panic!("`{label}` is not followed by a hex number\n{run}"))
}

/// Check that the run died of a page fault at the address it printed on
/// the line starting with `prefix`; returns the page-fault error code.
fn page_fault_at_printed_address(run: &Run, prefix: &str) -> u64 {
    run.expect_code(139);
    assert!(run.stderr.contains("page fault (#PF)"), "{run}");
    assert_eq!(
        reported(run, "CR2 "),
        printed_address(run, prefix),
        "CR2 is the address the guest touched\n{run}"
    );
    assert!(!run.stdout.contains("?!"), "{run}");
    reported(run, "error code ")
}

/// Whether the report says the address is not mapped.
fn says_unmapped(run: &Run) -> bool {
    run.stderr.contains("unmapped page") || run.stderr.contains("not mapped")
}

/// Run `memory zeroed MIB STRIDE ROUNDS` with `options` and check it passed.
fn zeroed(options: &[&str], mib: &str, stride: &str, rounds: &str) -> Run {
    let run = boot("memory", options, &["zeroed", mib, stride, rounds]);
    run.expect_code(0);
    assert!(run.stdout.ends_with("zeroed passed\n"), "{run}");
    let rounds: usize = rounds.parse().unwrap();
    assert_eq!(
        run.stdout
            .lines()
            .filter(|l| l.starts_with("ok round") && l.ends_with("read as zero"))
            .count(),
        rounds,
        "{run}"
    );
    run
}

#[test]
fn fresh_and_recycled_mappings_read_as_zero_and_keep_their_patterns() {
    zeroed(&[], "32", "1", "4");
}

#[test]
fn fresh_and_recycled_mappings_read_as_zero_on_two_cpus() {
    zeroed(&["--cpus", "2"], "32", "1", "4");
}

#[test]
fn mappings_read_as_zero_in_16_mib_of_guest_memory() {
    zeroed(&["--memory", "16M"], "6", "1", "4");
}

#[test]
fn a_1_gib_mapping_reads_as_zero_in_4_gib_of_guest_memory() {
    // Every fourth page (65,536 pages a round): the first touch of a guest
    // page costs the host about 20 µs here.
    zeroed(&["--memory", "4G"], "1024", "4", "2");
}

#[test]
fn mappings_and_the_heap_keep_their_patterns_and_bad_arguments_are_refused() {
    let run = boot("memory", &[], &["patterns"]);
    run.expect_code(0);
    assert!(run.stdout.ends_with("patterns passed\n"), "{run}");
    for line in [
        "ok mmap(size 0) = -22",
        "ok mmap(1 TiB, more than RAM) = -12",
        "ok mmap(write+exec) = -13",
        "ok munmap(unaligned address) = -22",
        "ok mprotect(write+exec) = -13",
        "ok mprotect(the unmapped hole) = -12",
        "ok contents survive mprotect",
        "ok the pages around an unmapped hole keep their contents",
    ] {
        assert!(run.stdout.contains(line), "missing `{line}`\n{run}");
    }
}

#[test]
fn mappings_keep_their_patterns_on_two_cpus() {
    let run = boot("memory", &["--cpus", "2"], &["patterns"]);
    run.expect_code(0);
    assert!(run.stdout.ends_with("patterns passed\n"), "{run}");
}

#[test]
fn reading_unmapped_memory_faults_at_that_address() {
    let run = boot("memory", &[], &["munmap-then-read"]);
    page_fault_at_printed_address(&run, "about to read");
    assert!(says_unmapped(&run), "{run}");
}

#[test]
fn a_cpu_that_used_a_page_faults_on_it_after_another_cpu_unmaps_it() {
    // The other thread runs on the second CPU and has the page in its TLB:
    // munmap must invalidate it there too.
    let run = boot(
        "memory",
        &["--cpus", "2"],
        &["munmap-then-read", "other-thread"],
    );
    assert!(run.stdout.contains("the other thread read 42"), "{run}");
    page_fault_at_printed_address(&run, "about to read");
    assert!(says_unmapped(&run), "{run}");
}

#[test]
fn writing_read_only_memory_faults_but_reading_it_works() {
    let run = boot("memory", &[], &["mprotect-then-write"]);
    assert!(
        run.stdout.contains("read 42 from the read-only page"),
        "{run}"
    );
    page_fault_at_printed_address(&run, "about to write");
    assert!(
        run.stderr.contains("protection violation on write access"),
        "{run}"
    );
}

#[test]
fn a_cpu_that_wrote_a_page_faults_on_it_after_another_cpu_makes_it_read_only() {
    let run = boot(
        "memory",
        &["--cpus", "2"],
        &["mprotect-then-write", "other-thread"],
    );
    assert!(
        run.stdout.contains("read 42 from the read-only page"),
        "{run}"
    );
    page_fault_at_printed_address(&run, "about to write");
    assert!(
        run.stderr.contains("protection violation on write access"),
        "{run}"
    );
}

/// Overflow a stack with `memory MODE` and check the report.
fn stack_overflow(mode: &str, cpus: &str) -> Run {
    let run = boot("memory", &["--cpus", cpus], &[mode]);
    run.expect_code(139);
    assert!(run.stdout.contains("about to overflow"), "{run}");
    assert!(!run.stdout.contains("?!"), "{run}");
    assert!(run.stderr.contains("overflowed its stack"), "{run}");
    run
}

/// Whether `text` names a numbered thread ("thread 3").
fn names_a_numbered_thread(text: &str) -> bool {
    text.match_indices("thread ").any(|(i, m)| {
        text[i + m.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

#[test]
fn a_stack_overflow_in_main_is_reported_and_exits_139() {
    let run = stack_overflow("overflow-main", "1");
    assert!(run.stderr.contains("main thread"), "{run}");
}

#[test]
fn a_stack_overflow_in_main_is_reported_on_two_cpus() {
    let run = stack_overflow("overflow-main", "2");
    assert!(run.stderr.contains("main thread"), "{run}");
}

#[test]
fn a_stack_overflow_in_a_spawned_thread_names_that_thread() {
    let run = stack_overflow("overflow-thread", "1");
    assert!(!run.stderr.contains("main thread"), "{run}");
    assert!(names_a_numbered_thread(&run.stderr), "{run}");
}

#[test]
fn a_stack_overflow_in_a_spawned_thread_is_reported_on_two_cpus() {
    let run = stack_overflow("overflow-thread", "2");
    assert!(!run.stderr.contains("main thread"), "{run}");
    assert!(names_a_numbered_thread(&run.stderr), "{run}");
}

/// `memory oom-try` in `memory` of guest memory: how many bytes it got.
fn oom_try(memory: &str) -> u64 {
    let run = boot("memory", &["--memory", memory], &["oom-try"]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("ok try_reserve failed cleanly"),
        "{run}"
    );
    assert!(
        run.stdout
            .contains("ok a normal 1 MiB allocation works after freeing"),
        "{run}"
    );
    assert!(run.stdout.ends_with("oom-try passed\n"), "{run}");
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix("obtained ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no `obtained N bytes` line\n{run}"))
}

#[test]
fn try_reserve_fails_cleanly_when_16_mib_run_out() {
    let obtained = oom_try("16M");
    assert!(
        (4 << 20..16 << 20).contains(&obtained),
        "{obtained} bytes out of 16 MiB"
    );
}

#[test]
fn try_reserve_fails_cleanly_when_64_mib_run_out() {
    let obtained = oom_try("64M");
    assert!(
        (40 << 20..64 << 20).contains(&obtained),
        "{obtained} bytes out of 64 MiB"
    );
}

#[test]
fn a_failed_allocation_aborts_with_a_message_and_exits_134() {
    let run = boot("memory", &["--memory", "16M"], &["oom-abort"]);
    run.expect_code(134);
    assert!(!run.stdout.contains("?!"), "{run}");
    assert!(
        run.stderr
            .contains("memory allocation of 1048576 bytes failed"),
        "{run}"
    );
    // eremite says what happened and which flag helps.
    assert!(
        run.stderr.contains(
            "eremite: the guest ran out of memory (a request for 1 MiB found too little of its 16 MiB free): give it more with --memory, e.g. --memory 32M"
        ),
        "{run}"
    );
}

#[test]
fn writing_the_image_code_is_a_protection_violation() {
    let run = boot("memory", &[], &["write-code"]);
    page_fault_at_printed_address(&run, "about to write to the code");
    assert!(
        run.stderr.contains("protection violation on write access"),
        "{run}"
    );
}

#[test]
fn executing_heap_memory_faults_on_the_instruction_fetch() {
    let run = boot("memory", &[], &["exec-heap"]);
    let error_code = page_fault_at_printed_address(&run, "about to execute");
    // SDM vol. 3A, 4.7: bit 4 (I/D) is set for an instruction fetch.
    assert_ne!(error_code & 0x10, 0, "error code {error_code:#x}\n{run}");
    assert_eq!(
        reported(&run, "at RIP "),
        printed_address(&run, "about to execute"),
        "{run}"
    );
}

#[test]
fn reading_the_supervisor_gdt_faults() {
    let run = boot("memory", &[], &["read-gdt"]);
    let error_code = page_fault_at_printed_address(&run, "about to read the GDT");
    // A present page (bit 0) that CPL3 may not use.
    assert_ne!(error_code & 1, 0, "error code {error_code:#x}\n{run}");
}

#[test]
fn writing_the_idt_faults_once_the_kernel_has_filled_it_in() {
    let run = boot("memory", &[], &["write-idt"]);
    let error_code = page_fault_at_printed_address(&run, "about to write the IDT");
    // A present page (bit 0), a write (bit 1) that CPL3 may not make.
    assert_eq!(error_code & 3, 3, "error code {error_code:#x}\n{run}");
    assert!(run.stderr.contains("supervisor"), "{run}");
}
