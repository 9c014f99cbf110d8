//! `eremite run --trace DIR`: the function tracer, on `examples/traced`
//! built with `-Zinstrument-mcount`, its kernel too (`leaf` called a
//! known number of times on each of two threads on two vCPUs, `recurse`
//! to a known depth, and a panic at its bottom on request).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use eremite_tests::{Run, boot_image, image, instrumented_image, output_dir};
use serde_json::Value;

/// `traced ARGS` on two vCPUs, traced into `dir`.
fn trace(dir: &Path, image: &Path, args: &[&str]) -> Run {
    boot_image(
        image,
        &[
            "--cpus",
            "2",
            "--memory",
            "256M",
            "--trace",
            dir.to_str().unwrap(),
        ],
        args,
    )
}

/// The B and E events of `trace.json`, checked to nest per thread:
/// (thread, name, depth) of each call, in order.
fn calls(dir: &Path) -> Vec<(u64, String, usize)> {
    let text = std::fs::read_to_string(dir.join("trace.json")).unwrap();
    let json: Value = serde_json::from_str(&text).expect("trace.json is JSON");
    let events = json["traceEvents"].as_array().expect("traceEvents");
    let mut open: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut last_ts: BTreeMap<u64, f64> = BTreeMap::new();
    let mut calls = Vec::new();
    for event in events {
        let tid = event["tid"].as_u64().unwrap_or(0);
        let name = event["name"].as_str().unwrap().to_string();
        match event["ph"].as_str().unwrap() {
            "M" => continue,
            phase => {
                let ts = event["ts"].as_f64().unwrap();
                let last = last_ts.insert(tid, ts).unwrap_or(0.0);
                assert!(ts >= last, "time goes back on thread {tid}: {event}");
                let stack = open.entry(tid).or_default();
                if phase == "B" {
                    calls.push((tid, name.clone(), stack.len()));
                    stack.push(name);
                } else {
                    assert_eq!(phase, "E");
                    assert_eq!(stack.pop().as_ref(), Some(&name), "unbalanced E: {event}");
                }
            }
        }
    }
    for (tid, stack) in open {
        assert!(stack.is_empty(), "thread {tid} left open: {stack:?}");
    }
    calls
}

#[test]
fn a_trace_shows_every_call_with_its_thread_and_nesting() {
    let dir = output_dir("trace-calls");
    let run = trace(&dir, &instrumented_image("traced"), &["1000", "10"]);
    run.expect_code(0);
    assert!(run.stdout.contains("traced: depth 10\n"), "{run}");
    let calls = calls(&dir);
    // `leaf`: exactly 1000 calls on each of two threads, inside `calls`.
    let leaf: Vec<_> = calls.iter().filter(|c| c.1 == "traced::leaf").collect();
    let threads: BTreeSet<u64> = leaf.iter().map(|c| c.0).collect();
    assert_eq!(leaf.len(), 2000, "{run}");
    assert_eq!(threads.len(), 2, "{threads:?}");
    for tid in &threads {
        assert_eq!(leaf.iter().filter(|c| c.0 == *tid).count(), 1000);
    }
    // `recurse`: ten nested calls, each one level deeper.
    let recurse: Vec<_> = calls.iter().filter(|c| c.1 == "traced::recurse").collect();
    assert_eq!(recurse.len(), 10);
    for pair in recurse.windows(2) {
        assert_eq!(pair[1].2, pair[0].2 + 1, "{recurse:?}");
    }
    // Names are demangled in the flame graph too.
    let svg = std::fs::read_to_string(dir.join("flame.svg")).unwrap();
    assert!(
        svg.contains("traced::leaf") && svg.contains("traced::main"),
        "{svg:.300}"
    );
    let folded = std::fs::read_to_string(dir.join("trace.folded")).unwrap();
    assert!(
        folded
            .lines()
            .any(|l| l.contains(";traced::calls;traced::leaf ")),
        "{folded}"
    );
    assert!(
        run.stderr.contains(" threads in ") && run.stderr.contains("trace.json, trace.folded"),
        "{run}"
    );
    // The kernel is instrumented too (`trace-kernel`): `println!` goes
    // down into the library OS's `sys_write`.
    assert!(
        folded
            .lines()
            .any(|l| l.contains("traced::main;") && l.contains("sys_write")),
        "{folded}"
    );
    // Debian's uftrace reads the same calls.
    let report = uftrace(&dir, "report");
    assert_eq!(
        uftrace_calls(&report, "traced::leaf"),
        Some(2000),
        "{report}"
    );
    assert_eq!(
        uftrace_calls(&report, "traced::recurse"),
        Some(10),
        "{report}"
    );
    let replay = uftrace(&dir, "replay");
    // A call is one line, `leaf();`, or two (`leaf() {` ... `}`) when the
    // other thread's calls come in between.
    let leaf_lines: Vec<&str> = replay
        .lines()
        .filter(|l| l.ends_with("traced::leaf();") || l.ends_with("traced::leaf() {"))
        .collect();
    assert_eq!(leaf_lines.len(), 2000);
    let replay_threads: BTreeSet<&str> = leaf_lines
        .iter()
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert_eq!(replay_threads.len(), 2, "{replay_threads:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `uftrace COMMAND -d DIR`'s output (it must succeed).
fn uftrace(dir: &Path, command: &str) -> String {
    let output = std::process::Command::new("uftrace")
        .args([command, "-d"])
        .arg(dir)
        .output()
        .expect("uftrace runs (./x test installs Debian's uftrace)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "uftrace {command}: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

/// The calls column of `function`'s line in `uftrace report`.
fn uftrace_calls(report: &str, function: &str) -> Option<u64> {
    report.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.len() == 6 && fields[5] == function).then(|| fields[4].parse().ok())?
    })
}

#[test]
fn a_panicking_program_still_leaves_its_trace() {
    let dir = output_dir("trace-panic");
    let run = trace(&dir, &instrumented_image("traced"), &["10", "5", "panic"]);
    run.expect_code(134);
    assert!(run.stderr.contains("the bottom of the recursion"), "{run}");
    // The calls open at the panic end with the trace.
    let calls = calls(&dir);
    assert_eq!(calls.iter().filter(|c| c.1 == "traced::recurse").count(), 5);
    assert_eq!(calls.iter().filter(|c| c.1 == "traced::leaf").count(), 20);
    let report = uftrace(&dir, "report");
    assert_eq!(
        uftrace_calls(&report, "traced::recurse"),
        Some(5),
        "{report}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_filter_keeps_the_matching_calls_and_their_callees() {
    let dir = output_dir("trace-filter");
    let image = instrumented_image("traced");
    let run = boot_image(
        &image,
        &[
            "--trace",
            dir.to_str().unwrap(),
            "--trace-filter",
            "^traced::calls$",
        ],
        &["100", "3"],
    );
    run.expect_code(0);
    let calls = calls(&dir);
    let names: BTreeSet<&str> = calls.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["traced::calls", "traced::leaf"]),
        "{run}"
    );
    assert_eq!(calls.len(), 2 + 200);
    assert!(calls.iter().all(|c| (c.1 == "traced::calls") == (c.2 == 0)));
    let none = boot_image(
        &image,
        &[
            "--trace",
            dir.to_str().unwrap(),
            "--trace-filter",
            "^nothing$",
        ],
        &["1"],
    );
    assert!(
        none.stderr.contains("calls matched --trace-filter"),
        "{none}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_image_built_without_instrumentation_runs_and_says_so() {
    let dir = output_dir("trace-plain");
    let run = trace(&dir, &image("traced"), &["10"]);
    run.expect_code(0);
    assert!(
        run.stderr.contains(
            "eremite: trace: no function was traced: build the program with -Zinstrument-mcount"
        ),
        "{run}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
