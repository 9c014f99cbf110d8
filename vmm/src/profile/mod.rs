//! The sampling profiler (`eremite run --profile`): where the guest's
//! CPUs spend their time, kernel and application alike, with no rebuild.
//!
//! Each vCPU thread arms a host timer at the requested rate whose signal
//! interrupts `KVM_RUN` (`kvm::sampler`); at that exit the vCPU's
//! registers give the interrupted instruction, and the guest's frame
//! pointers, followed through its own page tables in guest memory
//! ([`arch::call_chain`]), give its callers. A sample costs one VM exit
//! (about 60 µs of vCPU time on PVM hosts, see [`DEFAULT_HZ`]) and no
//! guest code runs for it, so
//! it also catches a guest that is stuck, and it works for any guest
//! built with frame pointers (the kernel always is; an application with
//! `-Cforce-frame-pointers=yes`, or its callers are missing). A sample
//! taken while the vCPU was idle (halted in the kernel's idle gate)
//! shows as the gate's function.
//!
//! [`Samples`] counts call chains per vCPU as raw addresses, bounded
//! ([`MAX_STACKS`] distinct chains, [`MAX_DEPTH`] frames each); at the end
//! [`Symbols`] names them from the image's symbol table and [`Profile`]
//! holds them folded (`root;caller;leaf count`, the format of Brendan
//! Gregg's FlameGraph tools and inferno).
//!
//! Arch-neutral apart from the registers `kvm` hands in.

mod symbols;
mod trace;

use std::collections::HashMap;

pub use symbols::Symbols;
pub(crate) use symbols::demangle;
pub(crate) use trace::read as read_trace;
pub use trace::{Call, FunctionTrace};

use crate::arch;
use crate::memory::GuestRam;

/// Frames followed from one sample, at most (a deeper chain is cut, its
/// outermost callers left out).
pub(crate) const MAX_DEPTH: usize = 128;
/// Distinct call chains kept per vCPU; samples of a new chain past it are
/// counted as dropped.
pub(crate) const MAX_STACKS: usize = 1 << 16;

/// The default sampling rate, per vCPU (`--profile-hz`). A sample is a
/// VM exit, and on the PVM hosts we measure on it takes about 60 µs of the
/// vCPU's time: `examples/busy` did 3.0% less work at 499 Hz, 6.5% less at
/// 997 Hz and 35% less at 4999 Hz (AMD EPYC, 2026-12). 499 keeps the
/// overhead under 5%, and is odd, so that it does not run in step with
/// the guest's own periodic work.
pub const DEFAULT_HZ: u32 = 499;
/// The highest rate allowed: each sample is a VM exit.
pub const MAX_HZ: u32 = 10_000;

/// What the interrupted vCPU was doing, from its registers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Interrupted {
    pub(crate) rip: u64,
    pub(crate) rbp: u64,
    /// The page tables it ran on.
    pub(crate) cr3: u64,
}

/// One vCPU's samples.
#[derive(Debug, Default)]
pub(crate) struct Samples {
    /// Return addresses of each chain, leaf (the interrupted instruction)
    /// first, and how often it was seen.
    stacks: HashMap<Vec<u64>, u64>,
    /// Samples not kept (past [`MAX_STACKS`]).
    dropped: u64,
    /// A buffer for the chain being followed.
    chain: Vec<u64>,
    /// The vCPU's page tables, once read.
    pub(crate) cr3: Option<u64>,
}

impl Samples {
    /// Record where the guest was.
    pub(crate) fn record(&mut self, ram: &GuestRam, at: Interrupted) {
        self.chain.clear();
        arch::call_chain(ram, at.cr3, at.rip, at.rbp, MAX_DEPTH, &mut self.chain);
        if let Some(count) = self.stacks.get_mut(&self.chain) {
            *count += 1;
        } else if self.stacks.len() < MAX_STACKS {
            self.stacks.insert(self.chain.clone(), 1);
        } else {
            self.dropped += 1;
        }
    }

    /// Add another vCPU's samples.
    pub(crate) fn merge(&mut self, other: Samples) {
        for (chain, count) in other.stacks {
            *self.stacks.entry(chain).or_default() += count;
        }
        self.dropped += other.dropped;
    }

    /// Name every chain with `symbols`.
    pub(crate) fn fold(self, symbols: &Symbols, hz: u32) -> Profile {
        let mut folded: HashMap<String, u64> = HashMap::new();
        let mut samples = 0;
        for (chain, count) in self.stacks {
            samples += count;
            let names: Vec<String> = chain
                .iter()
                .enumerate()
                .rev()
                // A return address lies after its call: name the call.
                .map(|(i, &addr)| symbols.name(if i == 0 { addr } else { addr.wrapping_sub(1) }))
                .collect();
            *folded.entry(names.join(";")).or_default() += count;
        }
        let mut stacks: Vec<(String, u64)> = folded.into_iter().collect();
        stacks.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Profile {
            stacks,
            samples,
            dropped: self.dropped,
            hz,
        }
    }
}

/// A finished profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Call chains, root first, names separated by `;`, with their
    /// sample counts; the most frequent first.
    pub stacks: Vec<(String, u64)>,
    /// Samples kept.
    pub samples: u64,
    /// Samples of new chains past [`MAX_STACKS`], not kept.
    pub dropped: u64,
    /// The rate asked for, per vCPU.
    pub hz: u32,
}

impl Profile {
    /// The folded stacks, one `chain count` line each.
    pub fn folded(&self) -> String {
        self.stacks
            .iter()
            .map(|(chain, count)| format!("{chain} {count}\n"))
            .collect()
    }
}
