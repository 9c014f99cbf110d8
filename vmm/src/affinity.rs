//! `--pin-vcpus`: which host CPUs the vCPU threads and the device threads
//! run on.
//!
//! [`parse_cpu_list`] reads the list (`1`, `2,3`, `0-3`, `0,2-3`).
//! [`Placement::new`] checks it against the CPUs this process may use;
//! then vCPU `n` is pinned to the list's `n`-th entry (round robin when
//! the list is shorter than the vCPUs), and device threads (the network
//! card's worker) run on the process's other CPUs when it has any, so
//! they serve the guest's queues beside the vCPUs instead of taking a
//! vCPU's CPU from it: a vCPU that notifies the card keeps running while
//! the card's thread sends. Without a list nothing is pinned.
//!
//! The only `unsafe` here is `sched_getaffinity`/`sched_setaffinity` on
//! a `cpu_set_t` and its bit macros.
#![allow(unsafe_code)]

use std::io;

/// Largest host CPU number accepted (the size of the kernel's
/// `cpu_set_t`).
pub const MAX_HOST_CPU: usize = 1023;

/// A malformed `--pin-vcpus` list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuListError {
    /// An entry is not a CPU number or a range of them.
    #[error("{0:?} is not a host CPU number or a range such as 2-3")]
    NotACpu(String),
    /// A range runs backwards.
    #[error("the range {0}-{1} runs backwards")]
    Backwards(usize, usize),
    /// A CPU beyond what the host kernel can name.
    #[error("host CPU {0} is beyond the largest, {MAX_HOST_CPU}")]
    TooLarge(usize),
    /// The list names no CPU.
    #[error("the list of host CPUs is empty")]
    Empty,
}

/// Parse a list of host CPUs: numbers and ranges, comma-separated, in
/// the order given (`taskset -c` syntax, without strides).
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>, CpuListError> {
    let number = |s: &str| {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CpuListError::NotACpu(s.to_owned()));
        }
        match s.parse::<usize>() {
            Ok(cpu) if cpu <= MAX_HOST_CPU => Ok(cpu),
            Ok(cpu) => Err(CpuListError::TooLarge(cpu)),
            Err(_) => Err(CpuListError::NotACpu(s.to_owned())),
        }
    };
    let mut cpus = Vec::new();
    for entry in text.split(',') {
        match entry.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (number(first)?, number(last)?);
                if first > last {
                    return Err(CpuListError::Backwards(first, last));
                }
                cpus.extend(first..=last);
            }
            None => cpus.push(number(entry)?),
        }
    }
    if cpus.is_empty() {
        return Err(CpuListError::Empty);
    }
    Ok(cpus)
}

/// The host CPU for vCPU `vcpu`: round robin over `cpus`.
fn cpu_for(cpus: &[usize], vcpu: usize) -> Option<usize> {
    cpus.get(vcpu % cpus.len().max(1)).copied()
}

/// Why the threads cannot be placed.
#[derive(Debug, thiserror::Error)]
pub enum AffinityError {
    /// The list names a CPU this process may not run on.
    #[error("cannot pin a vCPU to host CPU {cpu}: this process may run on {allowed} only")]
    NotAllowed {
        /// The CPU asked for.
        cpu: usize,
        /// The CPUs the process may use, as a list.
        allowed: String,
    },
    /// The host refused.
    #[error("cannot pin vCPU {vcpu} to host CPU {cpu}: {source}")]
    Pin {
        /// The vCPU.
        vcpu: u32,
        /// The host CPU.
        cpu: usize,
        /// Why.
        source: io::Error,
    },
}

/// Where the VM's threads run.
#[derive(Clone, Debug, Default)]
pub(crate) struct Placement {
    /// Host CPUs for the vCPUs, round robin; empty: not pinned.
    vcpus: Vec<usize>,
    /// Host CPUs for device threads, when the vCPUs are pinned (which
    /// the threads that start devices are): the process's CPUs other than
    /// the vCPUs', or all of its CPUs when the vCPUs take every one.
    devices: Option<Vec<usize>>,
    /// Whether the pinned vCPUs take every CPU the process may use.
    is_every_cpu_pinned: bool,
}

impl Placement {
    /// Check `vcpus` (`--pin-vcpus`; empty for none) against the CPUs
    /// this process may use. Call it on the main thread, before any
    /// thread is pinned.
    pub(crate) fn new(vcpus: &[usize]) -> Result<Self, AffinityError> {
        if vcpus.is_empty() {
            return Ok(Self::default());
        }
        let Ok(allowed) = allowed_cpus() else {
            // Cannot tell: pinning itself will say what is wrong.
            return Ok(Self {
                vcpus: vcpus.to_vec(),
                ..Self::default()
            });
        };
        if let Some(&cpu) = vcpus.iter().find(|cpu| !allowed.contains(cpu)) {
            let allowed: Vec<String> = allowed.iter().map(ToString::to_string).collect();
            return Err(AffinityError::NotAllowed {
                cpu,
                allowed: allowed.join(","),
            });
        }
        let others: Vec<usize> = allowed
            .iter()
            .copied()
            .filter(|cpu| !vcpus.contains(cpu))
            .collect();
        Ok(Self {
            vcpus: vcpus.to_vec(),
            is_every_cpu_pinned: others.is_empty(),
            devices: Some(if others.is_empty() { allowed } else { others }),
        })
    }

    /// Whether the device threads must share host CPUs with the `vcpus`
    /// vCPUs: the pinned vCPUs take every CPU the process may use, or,
    /// unpinned, it may use no more CPUs than it has vCPUs (`taskset -c 1`
    /// around a one-vCPU VM). False when that cannot be told.
    pub(crate) fn is_shared_with_devices(&self, vcpus: u32) -> bool {
        if !self.vcpus.is_empty() {
            return self.is_every_cpu_pinned;
        }
        allowed_cpus().is_ok_and(|allowed| allowed.len() <= vcpus as usize)
    }

    /// Pin the calling thread, which runs vCPU `vcpu`, to its host CPU
    /// (nothing without a list).
    pub(crate) fn pin_vcpu(&self, vcpu: u32) -> Result<(), AffinityError> {
        let Some(cpu) = cpu_for(&self.vcpus, vcpu as usize) else {
            return Ok(());
        };
        set_this_thread(&[cpu]).map_err(|source| AffinityError::Pin { vcpu, cpu, source })
    }

    /// Move the calling thread, a device's, to the device CPUs. Best
    /// effort: a thread left where it is still works, only slower.
    pub(crate) fn place_device_thread(&self) {
        if let Some(cpus) = &self.devices {
            let _ = set_this_thread(cpus);
        }
    }
}

/// The CPUs this thread may run on, in order.
fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: `cpu_set_t` is plain bits, valid when zeroed.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live `cpu_set_t` of the size passed; pid 0 is the
    // calling thread.
    let result = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &raw mut set) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..=MAX_HOST_CPU)
        // SAFETY: `CPU_ISSET` only reads `set`; `cpu` is below
        // `CPU_SETSIZE` (`MAX_HOST_CPU` + 1).
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Let the calling thread run on `cpus` only.
fn set_this_thread(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: `cpu_set_t` is plain bits, valid when zeroed.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        if cpu > MAX_HOST_CPU {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: `CPU_SET` writes one bit of `set`; `cpu` is below
        // `CPU_SETSIZE` (checked above).
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a live `cpu_set_t` of the size passed; pid 0 is the
    // calling thread.
    let result =
        unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_ranges_keep_their_order() {
        assert_eq!(parse_cpu_list("1"), Ok(vec![1]));
        assert_eq!(parse_cpu_list("2,3"), Ok(vec![2, 3]));
        assert_eq!(parse_cpu_list("0-3"), Ok(vec![0, 1, 2, 3]));
        assert_eq!(parse_cpu_list("5, 0-1"), Ok(vec![5, 0, 1]));
        assert_eq!(parse_cpu_list("1023"), Ok(vec![1023]));
    }

    #[test]
    fn bad_lists_say_why() {
        assert_eq!(
            parse_cpu_list(""),
            Err(CpuListError::NotACpu(String::new()))
        );
        assert_eq!(
            parse_cpu_list("1,"),
            Err(CpuListError::NotACpu(String::new()))
        );
        assert_eq!(parse_cpu_list("x"), Err(CpuListError::NotACpu("x".into())));
        assert_eq!(
            parse_cpu_list("-1"),
            Err(CpuListError::NotACpu(String::new()))
        );
        assert_eq!(
            parse_cpu_list("+1"),
            Err(CpuListError::NotACpu("+1".into()))
        );
        assert_eq!(parse_cpu_list("3-1"), Err(CpuListError::Backwards(3, 1)));
        assert_eq!(parse_cpu_list("1024"), Err(CpuListError::TooLarge(1024)));
        assert_eq!(
            parse_cpu_list("99999999999999999999999"),
            Err(CpuListError::NotACpu("99999999999999999999999".into()))
        );
    }

    #[test]
    fn vcpus_go_round_robin_over_the_list() {
        let cpus = [2, 3];
        let placed: Vec<_> = (0..5).map(|v| cpu_for(&cpus, v)).collect();
        assert_eq!(placed, [Some(2), Some(3), Some(2), Some(3), Some(2)]);
        assert_eq!(cpu_for(&[], 0), None);
    }
}
