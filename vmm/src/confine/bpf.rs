//! A seccomp filter as a binary search over system-call numbers, compiled
//! to classic BPF.
//!
//! `seccompiler` lays a filter out as one linear chain, a comparison per
//! allowed call. The kernel walks that chain for every call a thread makes
//! whose answer depends on its arguments (each `ioctl`, so each VM exit),
//! and, when the filter is installed, once for every call number to fill
//! its per-call cache (`seccomp_cache_prepare`). With the vCPU thread's 90
//! calls that cost 0.2 ms on the boot path (the cache walk costs about 2 µs
//! per instruction on the way to a decision, measured here). Here a call
//! number is found in about ten comparisons, as libseccomp's binary-tree
//! optimisation does: the vCPU's filter installs in 40–70 µs.
//!
//! Layout (classic BPF: forward jumps only; a conditional jump reaches at
//! most 255 instructions, `ja` any distance):
//! - the architecture is checked first (`seccomp_data.arch`), anything but
//!   x86_64 kills the process;
//! - an inner node of the search is `jge K` (K: the first number of its
//!   right half) jumping over its left half, or, when the left half is
//!   longer than 255 instructions, to a `ja` over it;
//! - a leaf compares up to four numbers one after another, each `jeq`
//!   jumping to its rule, and denies when none matches;
//! - a rule either allows at once or tests argument words one after
//!   another, any test that holds allowing the call.
//!
//! Only the low 32 bits of an argument are tested, as `seccompiler`'s
//! `Dword` conditions do: the calls restricted here (`ioctl`'s request,
//! `prctl`'s option, `mmap`'s protection) take 32-bit values.

use std::collections::BTreeMap;

use seccompiler::sock_filter;

// Classic BPF opcodes (<linux/bpf_common.h>; `BPF_LD`, `BPF_W`, `BPF_K`
// and `BPF_JA` are 0).
/// `BPF_LD | BPF_W | BPF_ABS`: load a 32-bit word of `seccomp_data`.
const BPF_LD_W_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JA`: jump `k` instructions ahead.
const BPF_JA: u16 = 0x05;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
const BPF_JEQ_K: u16 = 0x15;
/// `BPF_JMP | BPF_JGE | BPF_K`.
const BPF_JGE_K: u16 = 0x35;
/// `BPF_JMP | BPF_JSET | BPF_K`.
const BPF_JSET_K: u16 = 0x45;
/// `BPF_RET | BPF_K`: return `k`.
const BPF_RET_K: u16 = 0x06;

// `struct seccomp_data` (<linux/seccomp.h>): nr, arch, instruction
// pointer, then six 64-bit arguments (little-endian: low word first).
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARGS: u32 = 16;

/// `AUDIT_ARCH_X86_64` (<linux/audit.h>): `EM_X86_64 | 64BIT | LE`.
pub(super) const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;

/// The most instructions the kernel accepts in one filter (`BPF_MAXINSNS`).
const MAX_INSTRUCTIONS: usize = 4096;

/// One test of an argument's low 32 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Test {
    /// Argument `arg` equals `value`.
    Equals { arg: u8, value: u32 },
    /// Argument `arg` has none of the bits of `mask` set.
    Clear { arg: u8, mask: u32 },
}

/// When a call is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Rule {
    /// Whatever its arguments.
    Always,
    /// When one of these tests holds.
    AnyOf(Vec<Test>),
}

/// A filter that could not be laid out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum ProgramError {
    #[error("system call {0}'s rule has too many tests for one BPF jump")]
    RuleTooLong(u32),
    #[error("system call number {0} is out of range")]
    BadNumber(i64),
    #[error("{0:#x} is wider than the 32 bits a filter tests")]
    ValueTooWide(u64),
    #[error("argument {0} does not exist (a call has six)")]
    NoSuchArgument(u8),
    #[error("the filter has {0} instructions, more than the kernel's 4096")]
    TooLong(usize),
    #[error("the filter allows no call")]
    Empty,
}

/// The actions a filter returns (`SECCOMP_RET_*`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Actions {
    /// For an allowed call.
    pub(super) allow: u32,
    /// For any other call of this architecture.
    pub(super) deny: u32,
    /// For a call of another architecture.
    pub(super) wrong_arch: u32,
}

/// The filter that allows `calls` as their rules say and denies the rest.
pub(super) fn program(
    calls: &BTreeMap<u32, Rule>,
    actions: Actions,
) -> Result<Vec<sock_filter>, ProgramError> {
    let calls: Vec<(u32, &Rule)> = calls.iter().map(|(&n, rule)| (n, rule)).collect();
    if calls.is_empty() {
        return Err(ProgramError::Empty);
    }
    let mut program = vec![
        statement(BPF_LD_W_ABS, OFFSET_ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        statement(BPF_RET_K, actions.wrong_arch),
        statement(BPF_LD_W_ABS, OFFSET_NR),
    ];
    program.extend(search(&calls, actions)?);
    if program.len() > MAX_INSTRUCTIONS {
        return Err(ProgramError::TooLong(program.len()));
    }
    Ok(program)
}

/// Calls that a search leaf compares one after another: a few
/// comparisons cost less than the jumps of a deeper search, and calls
/// allowed whatever their arguments share one `ret`.
const LEAF_CALLS: usize = 4;

/// The search over `calls` (sorted, not empty), with the call number
/// loaded.
fn search(calls: &[(u32, &Rule)], actions: Actions) -> Result<Vec<sock_filter>, ProgramError> {
    if calls.len() <= LEAF_CALLS {
        return leaf(calls, actions);
    }
    let (left, right) = calls.split_at(calls.len() / 2);
    let left = search(left, actions)?;
    let right_start = right[0].0;
    let right = search(right, actions)?;
    let skip_left = u32::try_from(left.len()).map_err(|_| ProgramError::TooLong(left.len()))?;
    let mut node = Vec::with_capacity(2 + left.len() + right.len());
    if let Ok(skip_left) = u8::try_from(skip_left) {
        // At or above the right half's first number: over the left half.
        node.push(jump(BPF_JGE_K, right_start, skip_left, 0));
    } else {
        // Too far for a conditional jump: at or above, on to a `ja` over
        // the left half; below, past the `ja`, into the left half.
        node.push(jump(BPF_JGE_K, right_start, 0, 1));
        node.push(statement(BPF_JA, skip_left));
    }
    node.extend(left);
    node.extend(right);
    Ok(node)
}

/// A comparison per call in `calls`, each jumping to its rule; no match
/// denies.
fn leaf(calls: &[(u32, &Rule)], actions: Actions) -> Result<Vec<sock_filter>, ProgramError> {
    let mut rules = Vec::new();
    if calls.iter().any(|(_, rule)| **rule == Rule::Always) {
        rules.push(statement(BPF_RET_K, actions.allow));
    }
    let mut starts = Vec::with_capacity(calls.len());
    for (number, rule) in calls {
        match rule {
            Rule::Always => starts.push(0),
            Rule::AnyOf(_) => {
                starts.push(rules.len());
                rules.extend(rule_code(*number, rule, actions)?);
            }
        }
    }
    // The comparisons, then `ret deny`, then the rules.
    let head = calls.len() + 1;
    let mut code = Vec::with_capacity(head + rules.len());
    for (index, ((number, _), start)) in calls.iter().zip(starts).enumerate() {
        let offset = u8::try_from(head - (index + 1) + start)
            .map_err(|_| ProgramError::RuleTooLong(*number))?;
        code.push(jump(BPF_JEQ_K, *number, offset, 0));
    }
    code.push(statement(BPF_RET_K, actions.deny));
    code.extend(rules);
    Ok(code)
}

/// The code that decides call `number` by `rule`; it ends in returns.
fn rule_code(number: u32, rule: &Rule, actions: Actions) -> Result<Vec<sock_filter>, ProgramError> {
    let tests = match rule {
        Rule::Always => return Ok(vec![statement(BPF_RET_K, actions.allow)]),
        Rule::AnyOf(tests) => tests,
    };
    // Each test jumps to the final `ret allow` when it holds; jump
    // offsets are patched once the length is known.
    let mut code = Vec::new();
    let mut to_allow = Vec::new();
    let mut loaded = None;
    for test in tests {
        let (Test::Equals { arg, .. } | Test::Clear { arg, .. }) = *test;
        if arg > 5 {
            return Err(ProgramError::NoSuchArgument(arg));
        }
        if loaded != Some(arg) {
            code.push(statement(BPF_LD_W_ABS, OFFSET_ARGS + 8 * u32::from(arg)));
            loaded = Some(arg);
        }
        to_allow.push(code.len());
        code.push(match *test {
            Test::Equals { value, .. } => jump(BPF_JEQ_K, value, 0, 0),
            // `jset`: true when a bit of the mask is set, which denies.
            Test::Clear { mask, .. } => jump(BPF_JSET_K, mask, 0, 0),
        });
    }
    code.push(statement(BPF_RET_K, actions.deny));
    let allow = code.len();
    code.push(statement(BPF_RET_K, actions.allow));
    for at in to_allow {
        let offset = u8::try_from(allow - at - 1).map_err(|_| ProgramError::RuleTooLong(number))?;
        let instruction = &mut code[at];
        if instruction.code == BPF_JSET_K {
            // Set: go on to the next test; clear: allow.
            instruction.jt = 0;
            instruction.jf = offset;
        } else {
            instruction.jt = offset;
        }
    }
    Ok(code)
}

fn statement(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// A classic-BPF interpreter for the subset [`program`] emits, so the
/// tests can run a filter on every call number without installing it.
#[cfg(test)]
pub(super) fn run(program: &[sock_filter], data: &SeccompData) -> u32 {
    let mut accumulator = 0u32;
    let mut pc = 0usize;
    loop {
        let insn = &program[pc];
        pc += 1;
        match insn.code {
            BPF_LD_W_ABS => accumulator = data.word(insn.k),
            BPF_JA => pc += insn.k as usize,
            BPF_JEQ_K | BPF_JGE_K | BPF_JSET_K => {
                let holds = match insn.code {
                    BPF_JEQ_K => accumulator == insn.k,
                    BPF_JGE_K => accumulator >= insn.k,
                    _ => accumulator & insn.k != 0,
                };
                pc += usize::from(if holds { insn.jt } else { insn.jf });
            }
            BPF_RET_K => return insn.k,
            other => panic!("instruction {other:#x} not emitted by `program`"),
        }
    }
}

/// `struct seccomp_data` for [`run`].
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct SeccompData {
    pub(super) nr: u32,
    pub(super) arch: u32,
    pub(super) args: [u64; 6],
}

#[cfg(test)]
impl SeccompData {
    fn word(&self, offset: u32) -> u32 {
        #[allow(clippy::cast_possible_truncation)]
        match offset {
            OFFSET_NR => self.nr,
            OFFSET_ARCH => self.arch,
            _ => {
                let index = ((offset - OFFSET_ARGS) / 8) as usize;
                let arg = self.args[index];
                if (offset - OFFSET_ARGS).is_multiple_of(8) {
                    arg as u32
                } else {
                    (arg >> 32) as u32
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const ACTIONS: Actions = Actions {
        allow: 1,
        deny: 2,
        wrong_arch: 3,
    };

    fn call(nr: u32, args: [u64; 6]) -> SeccompData {
        SeccompData {
            nr,
            arch: AUDIT_ARCH_X86_64,
            args,
        }
    }

    #[test]
    fn every_number_is_found_or_denied_for_any_count_of_calls() {
        // Past 255 instructions, the upper nodes need their `ja`.
        for count in (1..40u32).chain([300, 1000]) {
            let calls: BTreeMap<u32, Rule> =
                (0..count).map(|i| (3 * i + 1, Rule::Always)).collect();
            let filter = program(&calls, ACTIONS).unwrap();
            for nr in 0..(3 * count + 5) {
                let expected = if calls.contains_key(&nr) { 1 } else { 2 };
                assert_eq!(
                    run(&filter, &call(nr, [0; 6])),
                    expected,
                    "{count} calls, nr {nr}"
                );
            }
            assert_eq!(run(&filter, &call(u32::MAX, [0; 6])), 2);
        }
    }

    #[test]
    fn another_architecture_is_refused_first() {
        let calls = BTreeMap::from([(0, Rule::Always)]);
        let filter = program(&calls, ACTIONS).unwrap();
        let mut data = call(0, [0; 6]);
        data.arch = 0x4000_0003; // i386
        assert_eq!(run(&filter, &data), 3);
    }

    #[test]
    fn argument_tests_allow_when_any_holds_on_the_low_word() {
        let calls = BTreeMap::from([
            (
                16,
                Rule::AnyOf(vec![
                    Test::Equals { arg: 1, value: 7 },
                    Test::Equals { arg: 1, value: 9 },
                    Test::Equals { arg: 0, value: 5 },
                ]),
            ),
            (9, Rule::AnyOf(vec![Test::Clear { arg: 2, mask: 4 }])),
        ]);
        let filter = program(&calls, ACTIONS).unwrap();
        assert_eq!(run(&filter, &call(16, [0, 7, 0, 0, 0, 0])), 1);
        assert_eq!(run(&filter, &call(16, [0, 9, 0, 0, 0, 0])), 1);
        assert_eq!(run(&filter, &call(16, [0, (1 << 32) | 9, 0, 0, 0, 0])), 1);
        assert_eq!(run(&filter, &call(16, [5, 8, 0, 0, 0, 0])), 1);
        assert_eq!(run(&filter, &call(16, [4, 8, 0, 0, 0, 0])), 2);
        assert_eq!(run(&filter, &call(9, [0, 0, 3, 0, 0, 0])), 1);
        assert_eq!(run(&filter, &call(9, [0, 0, 7, 0, 0, 0])), 2);
    }

    #[test]
    fn layouts_the_kernel_could_not_take_are_refused() {
        let long = Rule::AnyOf(
            (0..300)
                .map(|value| Test::Equals { arg: 1, value })
                .collect(),
        );
        assert_eq!(
            program(&BTreeMap::from([(1, long)]), ACTIONS),
            Err(ProgramError::RuleTooLong(1))
        );
        let bad_arg = Rule::AnyOf(vec![Test::Equals { arg: 6, value: 0 }]);
        assert_eq!(
            program(&BTreeMap::from([(1, bad_arg)]), ACTIONS),
            Err(ProgramError::NoSuchArgument(6))
        );
        assert_eq!(program(&BTreeMap::new(), ACTIONS), Err(ProgramError::Empty));
        let many: BTreeMap<u32, Rule> = (0..4000).map(|n| (n, Rule::Always)).collect();
        assert!(matches!(
            program(&many, ACTIONS),
            Err(ProgramError::TooLong(_))
        ));
    }
}
