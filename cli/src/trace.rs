//! `--trace DIR`: the function tracer's files, opened before the run (as
//! `--profile`'s) and written when it ends, whatever the guest's outcome:
//! - `trace.json`: the calls as Chrome trace events (`B`/`E` pairs), one
//!   process per vCPU and one track per guest thread, for Perfetto or
//!   `chrome://tracing`;
//! - `trace.folded`: self time by call chain, in nanoseconds;
//! - `flame.svg`: those as a flame graph (inferno).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use eremite_vmm::{Call, FunctionTrace};

/// The opened output files.
pub(crate) struct Output {
    dir: PathBuf,
    json: File,
    folded: File,
    svg: File,
}

impl Output {
    /// Make `dir` (and its parents) and create its files.
    pub(crate) fn create(dir: &Path) -> Result<Self, String> {
        let [json, folded, svg] =
            crate::profile::create_files(dir, ["trace.json", "trace.folded", "flame.svg"])?;
        Ok(Self {
            dir: dir.to_path_buf(),
            json,
            folded,
            svg,
        })
    }

    /// Write `trace` (of `image`) and say what it holds, on stderr (only
    /// the empty files when it holds no call).
    pub(crate) fn write(self, trace: &FunctionTrace, image: &Path) -> Result<(), String> {
        let dir = self.dir.clone();
        let failed = |name: &str, e: &dyn std::fmt::Display| {
            format!("cannot write {}: {e}", dir.join(name).display())
        };
        let mut json = BufWriter::new(self.json);
        write_chrome_trace(trace, &mut json)
            .and_then(|()| json.flush())
            .map_err(|e| failed("trace.json", &e))?;
        let folded = trace.folded();
        let lines: String = folded
            .iter()
            .map(|(chain, ns)| format!("{chain} {ns}\n"))
            .collect();
        let mut folded_file = self.folded;
        folded_file
            .write_all(lines.as_bytes())
            .map_err(|e| failed("trace.folded", &e))?;
        if trace.calls.is_empty() {
            return Ok(());
        }
        let mut options = inferno::flamegraph::Options::default();
        options.title = format!("eremite trace: {}", image.display());
        options.count_name = "ns".to_string();
        let mut svg = self.svg;
        inferno::flamegraph::from_lines(&mut options, lines.lines(), &mut svg)
            .map_err(|e| failed("flame.svg", &e))?;
        let threads: BTreeSet<u32> = trace.calls.iter().map(|c| c.tid).collect();
        eprintln!(
            "eremite: trace: {} calls on {} threads{} in {}: trace.json, trace.folded, flame.svg and uftrace's files",
            trace.calls.len(),
            threads.len(),
            if trace.dropped > 0 {
                format!(" ({} events dropped: raise --trace-buffer)", trace.dropped)
            } else {
                String::new()
            },
            self.dir.display()
        );
        Ok(())
    }
}

/// Only the calls of functions whose name matches `filter`, and the
/// calls made inside them (as uftrace's `-F`), their depths counted from
/// the outermost matching call.
pub(crate) fn filtered(trace: &FunctionTrace, filter: &regex::Regex) -> FunctionTrace {
    let is_match: Vec<bool> = trace.names.iter().map(|n| filter.is_match(n)).collect();
    // Per thread, the open calls: (depth, depth of the matching call they
    // are inside, if any).
    let mut open: BTreeMap<u32, Vec<(u16, Option<u16>)>> = BTreeMap::new();
    let mut calls = Vec::new();
    for call in &trace.calls {
        let stack = open.entry(call.tid).or_default();
        while stack.last().is_some_and(|(depth, _)| *depth >= call.depth) {
            stack.pop();
        }
        let root = match stack.last().and_then(|(_, root)| *root) {
            Some(root) => Some(root),
            None => is_match[call.name].then_some(call.depth),
        };
        stack.push((call.depth, root));
        if let Some(root) = root {
            calls.push(Call {
                depth: call.depth - root,
                ..call.clone()
            });
        }
    }
    FunctionTrace {
        calls,
        ..trace.clone()
    }
}

/// A call's start (`is_begin`) or end, at `ns`.
pub(crate) struct Edge<'a> {
    pub(crate) is_begin: bool,
    pub(crate) call: &'a Call,
    pub(crate) ns: u64,
}

/// Each thread's (with its vCPU, numbered from 1) starts and ends of
/// calls, nested by construction: a call ends before the next call at
/// its depth or above starts, and calls that had not returned end with
/// the trace, innermost first.
pub(crate) fn nested(trace: &FunctionTrace) -> BTreeMap<(u32, u32), Vec<Edge<'_>>> {
    let mut by_thread: BTreeMap<(u32, u32), Vec<&Call>> = BTreeMap::new();
    for call in &trace.calls {
        by_thread
            .entry((call.cpu + 1, call.tid))
            .or_default()
            .push(call);
    }
    fn end<'a>(trace: &FunctionTrace, call: &'a Call) -> Edge<'a> {
        Edge {
            is_begin: false,
            call,
            ns: call.start_ns + trace.duration_ns(call),
        }
    }
    by_thread
        .into_iter()
        .map(|(thread, calls)| {
            let mut edges = Vec::with_capacity(calls.len() * 2);
            let mut open: Vec<&Call> = Vec::new();
            for call in calls {
                while open.len() > usize::from(call.depth) {
                    edges.push(end(trace, open.pop().expect("longer than the depth")));
                }
                edges.push(Edge {
                    is_begin: true,
                    call,
                    ns: call.start_ns,
                });
                open.push(call);
            }
            while let Some(done) = open.pop() {
                edges.push(end(trace, done));
            }
            (thread, edges)
        })
        .collect()
}

/// `trace` in the Chrome trace event format: per thread, a `B` event at
/// each call's start and an `E` at its end ([`nested`]); one process per
/// vCPU, one track per thread; times in µs.
fn write_chrome_trace(trace: &FunctionTrace, out: &mut impl std::io::Write) -> std::io::Result<()> {
    let threads = nested(trace);
    let mut events = Vec::new();
    let cpus: BTreeSet<u32> = threads.keys().map(|(pid, _)| *pid).collect();
    for pid in cpus {
        events.push(format!(
            r#"{{"name":"process_name","ph":"M","pid":{pid},"args":{{"name":"vCPU {}"}}}}"#,
            pid - 1
        ));
    }
    for (pid, tid) in threads.keys() {
        events.push(format!(
            r#"{{"name":"thread_name","ph":"M","pid":{pid},"tid":{tid},"args":{{"name":"thread {tid}"}}}}"#
        ));
    }
    for ((pid, tid), edges) in &threads {
        for edge in edges {
            events.push(format!(
                r#"{{"name":{},"ph":"{}","pid":{pid},"tid":{tid},"ts":{}}}"#,
                json_string(&trace.names[edge.call.name]),
                if edge.is_begin { 'B' } else { 'E' },
                micros(edge.ns)
            ));
        }
    }
    out.write_all(b"{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n")?;
    out.write_all(events.join(",\n").as_bytes())?;
    out.write_all(b"\n]}\n")
}

/// Nanoseconds as microseconds with three decimals.
fn micros(ns: u64) -> String {
    format!("{}.{:03}", ns / 1000, ns % 1000)
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_keeps_matching_calls_and_what_they_call() {
        let call = |tid, depth, name| Call {
            cpu: 0,
            tid,
            depth,
            name,
            start_ns: 0,
            end_ns: Some(1),
        };
        // main > parse > lex, main > print; parse again on thread 2.
        let trace = FunctionTrace {
            calls: vec![
                call(1, 0, 0),
                call(1, 1, 1),
                call(1, 2, 2),
                call(1, 1, 3),
                call(2, 0, 1),
            ],
            names: vec![
                "main".into(),
                "app::parse".into(),
                "lex".into(),
                "print".into(),
            ],
            starts: vec![0x10, 0x20, 0x30, 0x40],
            ..FunctionTrace::default()
        };
        let kept = filtered(&trace, &regex::Regex::new("::parse$").unwrap());
        let shape: Vec<(u32, u16, usize)> = kept
            .calls
            .iter()
            .map(|c| (c.tid, c.depth, c.name))
            .collect();
        assert_eq!(shape, [(1, 0, 1), (1, 1, 2), (2, 0, 1)]);
    }

    #[test]
    fn calls_become_nested_begin_and_end_events() {
        let call = |depth, name, start_ns, end_ns| Call {
            cpu: 1,
            tid: 4,
            depth,
            name,
            start_ns,
            end_ns,
        };
        let trace = FunctionTrace {
            calls: vec![
                call(0, 0, 1000, Some(5000)),
                call(0, 1, 5000, None),
                call(1, 0, 6000, None),
            ],
            names: vec!["main".into(), "say \"hi\"".into()],
            starts: vec![0x10, 0x20],
            events: 3,
            dropped: 0,
            end_ns: 7000,
        };
        let mut out = Vec::new();
        write_chrome_trace(&trace, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let kinds: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split(r#""ph":""#).nth(1))
            .map(|rest| &rest[..1])
            .collect();
        // Process and thread names; main, then a call that starts as main
        // returns; and one inside it that had not returned, which ends
        // with the trace, before its caller.
        assert_eq!(kinds, ["M", "M", "B", "E", "B", "B", "E", "E"], "{text}");
        assert!(
            text.contains(r#""name":"say \"hi\"","ph":"E","pid":2,"tid":4,"ts":7.000"#),
            "{text}"
        );
        assert!(text.contains(r#""args":{"name":"vCPU 1"}"#), "{text}");
    }
}
