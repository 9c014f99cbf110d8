//! Function traces (`eremite run --trace`): the per-CPU event buffers the
//! kernel filled (`eremite_interface::trace`), read back from guest
//! memory after the run and turned into calls with names and times.
//!
//! The buffers' table, lengths and events come from the guest and are
//! checked like any guest input: lengths are cut to each buffer's
//! capacity and to the room the VMM asked for, addresses must lie in
//! guest RAM, and events that do not pair up (an exit with no open
//! entry) are skipped rather than trusted.

use std::collections::HashMap;

use eremite_interface::trace::{TraceBuffer, TraceEvent};
use zerocopy::FromBytes as _;

use super::Symbols;
use crate::memory::GuestRam;

/// A traced call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The vCPU it ran on (threads do not move).
    pub cpu: u32,
    /// The guest thread.
    pub tid: u32,
    /// Traced calls of the thread open around it.
    pub depth: u16,
    /// Index of its function in [`FunctionTrace::names`].
    pub name: usize,
    /// When it started and returned, in ns since the VM started; `None`
    /// when it had not returned when the run ended.
    pub start_ns: u64,
    pub end_ns: Option<u64>,
}

/// What the tracer recorded, named.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunctionTrace {
    /// Every call, in the order each vCPU saw them start (vCPU by vCPU).
    pub calls: Vec<Call>,
    /// Function names, demangled.
    pub names: Vec<String>,
    /// Where each of [`FunctionTrace::names`] starts in guest memory (for
    /// a function with no symbol, the site it was seen at).
    pub starts: Vec<u64>,
    /// Events recorded.
    pub events: u64,
    /// Events dropped (full buffers) and calls not traced (too deep).
    pub dropped: u64,
    /// When the last event was recorded, in ns since the VM started.
    pub end_ns: u64,
}

impl FunctionTrace {
    /// Self time by call chain (root first, `;`-separated, as the
    /// profiler's folded stacks), in ns: each call's duration minus its
    /// traced callees'. Calls still open at the end count up to
    /// [`FunctionTrace::end_ns`].
    pub fn folded(&self) -> Vec<(String, u64)> {
        // A thread's calls nest and come in start order, so a call's
        // parent is its thread's open call one level up.
        let mut open: HashMap<u32, Vec<usize>> = HashMap::new();
        let mut child_ns = vec![0u64; self.calls.len()];
        let mut chains = Vec::with_capacity(self.calls.len());
        for (index, call) in self.calls.iter().enumerate() {
            let stack = open.entry(call.tid).or_default();
            stack.truncate(usize::from(call.depth));
            if let Some(&parent) = stack.last() {
                child_ns[parent] += self.duration_ns(call);
            }
            stack.push(index);
            let names: Vec<&str> = stack
                .iter()
                .map(|&i| self.names[self.calls[i].name].as_str())
                .collect();
            chains.push(names.join(";"));
        }
        let mut totals: HashMap<String, u64> = HashMap::new();
        for ((chain, call), children) in chains.into_iter().zip(&self.calls).zip(child_ns) {
            *totals.entry(chain).or_default() += self.duration_ns(call).saturating_sub(children);
        }
        let mut folded: Vec<(String, u64)> = totals.into_iter().filter(|(_, ns)| *ns > 0).collect();
        folded.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        folded
    }

    /// How long `call` ran (until the end of the trace if it had not
    /// returned).
    pub fn duration_ns(&self, call: &Call) -> u64 {
        call.end_ns
            .unwrap_or(self.end_ns)
            .saturating_sub(call.start_ns)
    }
}

/// Read the trace the kernel left in `ram` (its table at `table`, for
/// `cpus` vCPUs), keeping at most `max_bytes` of events, and name it;
/// TSC values become ns since `boot_tsc` at `tsc_khz`.
pub(crate) fn read(
    ram: &GuestRam,
    table: u64,
    cpus: u32,
    max_bytes: u64,
    symbols: &Symbols,
    boot_tsc: u64,
    tsc_khz: u64,
) -> FunctionTrace {
    let mut trace = FunctionTrace::default();
    let mut name_of: HashMap<u64, usize> = HashMap::new();
    let ns = |tsc: u64| {
        let ticks = u128::from(tsc.saturating_sub(boot_tsc));
        u64::try_from(ticks * 1_000_000 / u128::from(tsc_khz.max(1))).unwrap_or(u64::MAX)
    };
    let event_bytes = size_of::<TraceEvent>() as u64;
    let mut budget = max_bytes / event_bytes;
    for cpu in 0..cpus {
        let Some(buffer) = table
            .checked_add(u64::from(cpu) * size_of::<TraceBuffer>() as u64)
            .and_then(|addr| ram.read_obj::<TraceBuffer>(addr).ok())
        else {
            continue;
        };
        trace.dropped = trace.dropped.saturating_add(buffer.dropped);
        let len = buffer.len.min(buffer.capacity).min(budget);
        budget -= len;
        let Some(bytes_len) = len
            .checked_mul(event_bytes)
            .and_then(|n| usize::try_from(n).ok())
        else {
            continue;
        };
        let mut bytes = vec![0u8; bytes_len];
        if ram.read(buffer.events, &mut bytes).is_err() {
            continue;
        }
        // Per thread, the calls open now (indices into `trace.calls`).
        let mut open: HashMap<u32, Vec<usize>> = HashMap::new();
        for chunk in bytes.as_chunks::<{ size_of::<TraceEvent>() }>().0 {
            let Ok(event) = TraceEvent::read_from_bytes(chunk) else {
                continue;
            };
            trace.events += 1;
            let at = ns(event.tsc);
            trace.end_ns = trace.end_ns.max(at);
            let stack = open.entry(event.tid()).or_default();
            if event.is_exit() {
                if let Some(index) = stack.pop() {
                    trace.calls[index].end_ns = Some(at);
                }
                continue;
            }
            let name = *name_of.entry(event.site).or_insert_with(|| {
                let (start, name) = symbols
                    .function(event.site)
                    .map_or((event.site, "[unknown]"), |(start, name)| (start, name));
                trace.names.push(name.to_string());
                trace.starts.push(start);
                trace.names.len() - 1
            });
            stack.push(trace.calls.len());
            trace.calls.push(Call {
                cpu,
                tid: event.tid(),
                depth: u16::try_from(stack.len() - 1).unwrap_or(u16::MAX),
                name,
                start_ns: at,
                end_ns: None,
            });
        }
    }
    trace
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(tid: u32, depth: u16, name: usize, start_ns: u64, end_ns: u64) -> Call {
        Call {
            cpu: 0,
            tid,
            depth,
            name,
            start_ns,
            end_ns: Some(end_ns),
        }
    }

    #[test]
    fn self_time_goes_to_each_chain() {
        // main 0..100 calls a 10..40 and b 50..60; a calls b 20..30.
        let trace = FunctionTrace {
            calls: vec![
                call(1, 0, 0, 0, 100),
                call(1, 1, 1, 10, 40),
                call(1, 2, 2, 20, 30),
                call(1, 1, 2, 50, 60),
            ],
            names: vec!["main".into(), "a".into(), "b".into()],
            starts: vec![0x10, 0x20, 0x30],
            events: 8,
            dropped: 0,
            end_ns: 100,
        };
        let folded: HashMap<String, u64> = trace.folded().into_iter().collect();
        assert_eq!(folded["main"], 100 - 30 - 10);
        assert_eq!(folded["main;a"], 30 - 10);
        assert_eq!(folded["main;a;b"], 10);
        assert_eq!(folded["main;b"], 10);
    }

    #[test]
    fn events_pair_up_into_calls_and_bad_ones_are_skipped() {
        let ram = GuestRam::new(8 << 20).unwrap();
        let events = [
            TraceEvent::new(1000, 0x10, 3, 0, false),
            TraceEvent::new(2000, 0x20, 3, 1, false),
            TraceEvent::new(3000, 0x20, 3, 1, true),
            // An exit with no open call (a hostile guest's): skipped.
            TraceEvent::new(3500, 0x30, 9, 0, true),
            TraceEvent::new(4000, 0x10, 3, 0, true),
            TraceEvent::new(5000, 0x10, 3, 0, false),
        ];
        let events_addr = 0x10_0000;
        for (i, event) in events.iter().enumerate() {
            ram.write_obj(events_addr + 24 * i as u64, event).unwrap();
        }
        let table = 0x20_0000;
        let buffer = TraceBuffer {
            events: events_addr,
            capacity: 100,
            // More than was written, and more than the capacity of a
            // second buffer whose events lie outside RAM.
            len: events.len() as u64,
            dropped: 2,
        };
        ram.write_obj(table, &buffer).unwrap();
        let wild = TraceBuffer {
            events: 1 << 40,
            capacity: u64::MAX,
            len: u64::MAX,
            dropped: 1,
        };
        ram.write_obj(table + 32, &wild).unwrap();
        // 1 MHz: a tick is a microsecond.
        let trace = read(&ram, table, 2, 1 << 20, &Symbols::default(), 0, 1000);
        assert_eq!(trace.events, 6);
        assert_eq!(trace.dropped, 3);
        assert_eq!(trace.calls.len(), 3);
        assert_eq!(trace.calls[0].start_ns, 1_000_000);
        assert_eq!(trace.calls[0].end_ns, Some(4_000_000));
        assert_eq!(
            (trace.calls[1].depth, trace.calls[1].end_ns),
            (1, Some(3_000_000))
        );
        assert_eq!(trace.calls[2].end_ns, None);
        assert_eq!(trace.end_ns, 5_000_000);
        // The budget bounds what is read: one event's worth.
        let small = read(&ram, table, 1, 24, &Symbols::default(), 0, 1000);
        assert_eq!(small.events, 1);
    }
}
