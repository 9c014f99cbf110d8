//! The eremite hypervisor: boots an eremite image in a KVM virtual machine.
//!
//! [`run`] takes a [`VmConfig`], maps guest RAM ([`memory`]), loads the
//! image ([`loader`]), copies the initial ramdisk to the top of the RAM
//! below 3 GiB ([`initrd`]), prepares the machine so the kernel starts in 64-bit mode
//! at CPL3 ([`arch`], applied by [`kvm`]), plugs in the network card
//! ([`devices`], `--net`), writes the boot info, and runs the vCPUs,
//! serving hypercalls ([`hypercall`]) and device registers until the guest
//! stops. It returns a [`Report`]: how the guest ended, exits by kind, the
//! kernel's own counters, what the network card did, and where the time
//! went.
//!
//! `unsafe` is allowed only in `kvm/` (with the signal handler that
//! forwards `SIGINT`, `SIGTERM`, `SIGHUP` and `SIGQUIT`), in `memory/` for mapping the image
//! file and populating guest RAM (`madvise`), in `devices/net/tap.rs` for one ioctl and in
//! `confine/` for one `close_range`, the seccomp `SIGSYS` handler and its test hook (see `docs/safety.md`).
#![deny(unsafe_code)]

mod affinity;
pub mod api;
mod arch;
mod boot_info;
mod confine;
mod devices;
mod gdb;
mod hypercall;
mod initrd;
mod kvm;
mod linux;
mod loader;
mod memory;
mod net_address;
mod profile;
mod sandbox;
mod size;
mod snapshot;
mod unwind;
mod usage;

/// Entry points for the fuzz targets in `fuzz/`; not an API.
#[doc(hidden)]
pub mod fuzzing;

#[cfg(test)]
mod tiny_guest_tests;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use eremite_interface::cmdline::{self, NetAddress, NetGateway, VirtioMmio};
use eremite_interface::hypercall::ExitKind;
use eremite_interface::layout::{self, LARGE_PAGE_SIZE};
use eremite_interface::{BootInfo, KernelReport};

pub use affinity::{AffinityError, CpuListError, parse_cpu_list};
pub use arch::{MachineError, PageTableError};
pub use boot_info::{BootDataError, BootError};
pub use confine::{ConfineError, Confinement, close_inherited_descriptors};
pub use devices::{
    BusFull, HostAddr, HostEntry, Link, MacAddr, NetCounters, NetReport, NetSpec, NetSpecError,
    PasstError, PortProtocol, Publish, PublishError, SwitchError, TapError, TransportError,
    ensure_switch, parse_host_entry, parse_net_spec, parse_publish, serve_switch,
    switch_socket_path,
};
pub use hypercall::{Console, GuestError};
pub use initrd::InitrdError;
pub use kvm::{CpuState, ExitStats, HostStop, KvmError};
pub use linux::{LinuxError, ProgramError};
pub use loader::{LoadError, LoadedImage, PageAccess, PageZero, is_linux_program, is_test_harness};
pub use memory::{MapError, OutOfRange};
pub use net_address::{NetAddressError, parse_gateway, parse_ip_prefix};
pub use profile::{
    Call, DEFAULT_HZ as DEFAULT_PROFILE_HZ, FunctionTrace, MAX_HZ as MAX_PROFILE_HZ, Profile,
};
pub use sandbox::{MAX_MOUNTS, MountSpec, MountSpecError, PathError, parse_mount_spec};
pub use size::{SizeError, parse_memory_size};
pub use snapshot::{SnapshotError, create_files as create_snapshot_files};
pub use usage::{Ended, try_wait_with_usage};

/// Default guest memory.
pub const DEFAULT_MEMORY_BYTES: u64 = 256 << 20;

/// Guest memory for a dynamic Linux program or a Go program when none is
/// asked for: a dynamic program's libraries are in the RAM file system
/// and copied again when mapped, Go maps tens of MiB for its heap's
/// bookkeeping at start, and memory is committed when mapped; the host
/// backs only what the guest touches.
pub const DEFAULT_DYNAMIC_MEMORY_BYTES: u64 = 512 << 20;

/// The smallest `--trace-buffer`.
pub const MIN_TRACE_BYTES: u64 = 1 << 20;

/// The default `--trace-buffer` for a guest of `memory_bytes`: 64 MiB, or
/// a quarter of its memory if that is less (about 2.8 million events in
/// all at 64 MiB).
pub fn default_trace_bytes(memory_bytes: u64) -> u64 {
    (memory_bytes / 4).clamp(MIN_TRACE_BYTES, 64 << 20)
}

/// The guest memory `image` gets when the user names none: more for a
/// dynamic Linux program or a Go program ([`DEFAULT_DYNAMIC_MEMORY_BYTES`])
/// than for the rest ([`DEFAULT_MEMORY_BYTES`]). An image that cannot be read gets the
/// usual default (the run then says why it cannot be read).
pub fn default_memory_bytes(image: &std::path::Path) -> u64 {
    let is_dynamic = memory::ImageFile::open(image).is_ok_and(|file| {
        loader::is_foreign_elf(file.bytes())
            && (linux::program::is_go(file.bytes())
                || goblin::elf::Elf::parse(file.bytes()).is_ok_and(|elf| elf.interpreter.is_some()))
    });
    if is_dynamic {
        DEFAULT_DYNAMIC_MEMORY_BYTES
    } else {
        DEFAULT_MEMORY_BYTES
    }
}

/// What to boot and how.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The image file.
    pub image: PathBuf,
    /// Guest RAM in bytes: a multiple of 2 MiB within
    /// [`layout::MIN_MEMORY`]..=[`layout::MAX_MEMORY`]. The first 3 GiB
    /// lie from address 0, the rest from 4 GiB up.
    pub memory_bytes: u64,
    /// Number of vCPUs, 1..=[`layout::MAX_CPUS`].
    pub cpus: u32,
    /// The guest's arguments after `argv[0]` (which is the image path).
    pub args: Vec<String>,
    /// The guest's environment, as `KEY=VALUE` strings.
    pub env: Vec<String>,
    /// Free-form kernel command line: white-space separated tokens, none
    /// with a key the VMM sets itself (see
    /// [`eremite_interface::cmdline`]).
    pub cmdline: String,
    /// Show the kernel's log.
    pub is_verbose: bool,
    /// The initial ramdisk (`--initrd`): a directory, a cpio (newc) or a
    /// tar archive, unpacked into the guest's `/` before `main`.
    pub initrd: Option<PathBuf>,
    /// Host directories to mount (`--mount`), at most [`MAX_MOUNTS`], none
    /// at or below another's guest path.
    pub mounts: Vec<MountSpec>,
    /// A network card (`--net`): on a host tap interface, or user-mode
    /// networking. `None` with ports to `publish` means user-mode
    /// networking.
    pub net: Option<NetSpec>,
    /// The card's IPv4 address and prefix length (`--ip`), passed to the
    /// guest as `net.ip=`; needs `net`. Without it a tap card's guest
    /// configures its address itself, if it can (DHCP), and a user-mode
    /// card's gets [`USER_NET_ADDRESS`].
    pub ip: Option<(Ipv4Addr, u8)>,
    /// The default gateway (`--gateway`), passed as `net.gateway=`; needs
    /// `ip` and must lie in its network. A user-mode card's default is the
    /// first other address of its network ([`USER_NET_GATEWAY`] with the
    /// default address): the host, under user-mode networking.
    pub gateway: Option<Ipv4Addr>,
    /// Host ports published to the guest (`-p`); user-mode networking.
    pub publish: Vec<Publish>,
    /// Lines for the guest's `/etc/hosts` (`--add-host`).
    pub hosts: Vec<HostEntry>,
    /// The DNS server user-mode networking forwards the guest's queries
    /// to (`--dns`); `None`: the host's, from its `/etc/resolv.conf`.
    pub dns: Option<Ipv4Addr>,
    /// The program that runs a switch (`PROGRAM switch NAME`: the CLI),
    /// started when `--net switch:NAME` finds none; `None`: a missing
    /// switch is an error.
    pub switch_program: Option<PathBuf>,
    /// Host CPUs for the vCPU threads (`--pin-vcpus`): vCPU `n` runs on
    /// entry `n` (round robin), and device threads on the process's other
    /// CPUs; empty: the host places every thread.
    pub pin_vcpus: Vec<usize>,
    /// The Linux-ABI kernel image, for booting Linux programs (the CLI
    /// carries it); `None`: Linux programs are refused.
    pub linux_kernel: Option<&'static [u8]>,
    /// Stop the run when the guest has run this long (`--timeout`).
    pub timeout: Option<Duration>,
    /// Sample every vCPU this many times a second (`--profile`), up to
    /// [`MAX_PROFILE_HZ`]; the [`Report`] then holds the [`Profile`].
    pub profile_hz: Option<u32>,
    /// Record the entry and exit of every function of an instrumented
    /// image (`--trace`), in buffers of this many bytes in all (taken from
    /// guest RAM); the [`Report`] then holds the [`FunctionTrace`].
    pub trace_bytes: Option<u64>,
    /// Confine the calling thread (and the VM's threads) before the guest
    /// runs (`confine`): what the CLI does. A process that calls [`run`]
    /// more than once, or goes on to other work after it (tests), turns it
    /// off, since the confinement cannot be undone.
    pub is_confined: bool,
    /// Wait for GDB on this address before the guest's first instruction,
    /// then serve it while the VM runs (`--gdb`).
    pub gdb: Option<std::net::SocketAddr>,
    /// Serve a control socket at this path while the VM runs (`--api`):
    /// pause, resume, stop, snapshot ([`api`]).
    pub api: Option<PathBuf>,
    /// Where the guest's own snapshots go (`--snapshot-to`): the guest
    /// asks with `eremite::vm::snapshot`. The directory's `state` and
    /// `memory` are created (emptied) before the guest runs.
    pub snapshot_to: Option<PathBuf>,
}

impl VmConfig {
    /// A configuration with the defaults for `image`.
    pub fn new(image: impl Into<PathBuf>) -> Self {
        Self {
            image: image.into(),
            memory_bytes: DEFAULT_MEMORY_BYTES,
            cpus: 1,
            args: Vec::new(),
            env: Vec::new(),
            cmdline: String::new(),
            is_verbose: false,
            initrd: None,
            mounts: Vec::new(),
            net: None,
            ip: None,
            gateway: None,
            publish: Vec::new(),
            hosts: Vec::new(),
            dns: None,
            switch_program: None,
            pin_vcpus: Vec::new(),
            linux_kernel: None,
            timeout: None,
            profile_hz: None,
            trace_bytes: None,
            is_confined: true,
            gdb: None,
            api: None,
            snapshot_to: None,
        }
    }

    fn validate(&self) -> Result<(), Error> {
        if self.cpus == 0 {
            return Err(Error::Config("--cpus must be at least 1".into()));
        }
        if self.cpus > layout::MAX_CPUS {
            return Err(Error::Config(format!(
                "--cpus {}: at most {} vCPUs are supported",
                self.cpus,
                layout::MAX_CPUS
            )));
        }
        size::check_memory_size(self.memory_bytes).map_err(|e| Error::Config(e.to_string()))?;
        if (self.api.is_some() || self.snapshot_to.is_some()) && self.gdb.is_some() {
            return Err(Error::Config(
                "--api and --snapshot-to cannot be used with --gdb yet (both stop the vCPUs)"
                    .into(),
            ));
        }
        if let Some(bytes) = self.trace_bytes
            && !(MIN_TRACE_BYTES..=self.memory_bytes / 2).contains(&bytes)
        {
            return Err(Error::Config(format!(
                "--trace-buffer {} MiB: give at least 1 MiB and at most half the guest's memory ({} MiB; raise --memory for more)",
                bytes >> 20,
                self.memory_bytes >> 21
            )));
        }
        if let Some(hz) = self.profile_hz
            && !(1..=profile::MAX_HZ).contains(&hz)
        {
            return Err(Error::Config(format!(
                "--profile-hz {hz}: give 1 to {} samples a second",
                profile::MAX_HZ
            )));
        }
        if let Some(bad) = self
            .env
            .iter()
            .find(|kv| !kv.contains('=') || kv.starts_with('='))
        {
            return Err(Error::Config(format!(
                "environment entry {bad:?} is not KEY=VALUE"
            )));
        }
        sandbox::check_mounts(&self.mounts)?;
        self.net_params()?;
        if let Some(param) = self
            .cmdline
            .split_whitespace()
            .find(|token| cmdline::parse_param(token).is_some())
        {
            return Err(Error::Config(format!(
                "--cmdline {param:?}: eremite sets this parameter itself (from --net, --ip and --gateway)"
            )));
        }
        Ok(())
    }

    /// The guest's command-line tokens: the user's, then one per device,
    /// then the network address and gateway.
    fn guest_cmdline(
        &self,
        devices: impl Iterator<Item = VirtioMmio>,
    ) -> Result<Vec<String>, Error> {
        let (address, gateway) = self.net_params()?;
        Ok(self
            .cmdline
            .split_whitespace()
            .map(str::to_owned)
            .chain(devices.map(|device| device.to_string()))
            .chain(address.map(|address| address.to_string()))
            .chain(gateway.map(|gateway| gateway.to_string()))
            .chain(
                self.trace_bytes
                    .map(|bytes| format!("{}={bytes}", eremite_interface::trace::CMDLINE_KEY)),
            )
            .collect())
    }

    /// The network card, if there is one: `--net`, or user-mode
    /// networking when ports are published.
    pub fn card(&self) -> Option<NetSpec> {
        self.net.clone().or_else(|| {
            (!self.publish.is_empty()).then_some(NetSpec {
                link: Link::User,
                mac: None,
            })
        })
    }

    /// The `net.ip=` and `net.gateway=` parameters for the guest, checked
    /// against the rules the guest's parser applies (the CLI passes the
    /// same ones to a guest on QEMU).
    pub fn net_params(&self) -> Result<(Option<NetAddress>, Option<NetGateway>), Error> {
        let config = |message: String| Err(Error::Config(message));
        let card = self.card();
        let is_user = card.as_ref().is_some_and(|card| card.link == Link::User);
        if card.is_some() && !is_user && !self.publish.is_empty() {
            return config(
                "-p publishes ports through user-mode networking (--net user), not a tap \
                 or a switch: forward them on the host instead"
                    .into(),
            );
        }
        if let (
            Some(NetSpec {
                link: Link::Switch(name),
                ..
            }),
            None,
        ) = (&card, self.ip)
        {
            return config(format!(
                "--net switch:{name} needs the guest's address (--ip): a switch has no DHCP"
            ));
        }
        if self.dns.is_some() && !is_user {
            return config("--dns is for user-mode networking (--net user or -p)".into());
        }
        let ip = match (self.ip, is_user) {
            (None, true) => Some(USER_NET_ADDRESS),
            (ip, _) => ip,
        };
        let address = ip.map(|(address, prefix_len)| NetAddress {
            address: address.octets(),
            prefix_len,
        });
        let gateway = match (self.gateway, address, is_user) {
            (None, Some(address), true) => Some(default_gateway(address)),
            (gateway, _, _) => gateway.map(|gateway| NetGateway(gateway.octets())),
        };
        if address.is_some() && card.is_none() {
            return config("--ip needs a network card (--net)".into());
        }
        if let Some(address) = address {
            address
                .validate()
                .map_err(|e| Error::Config(format!("--ip: {e}")))?;
            if is_user && address.prefix_len > 30 {
                return config(
                    "--ip: user-mode networking needs a network of at least 4 addresses \
                     (a prefix up to /30)"
                        .into(),
                );
            }
        }
        if let Some(gateway) = gateway {
            gateway
                .validate()
                .map_err(|e| Error::Config(format!("--gateway: {e}")))?;
            let Some(address) = address else {
                return config("--gateway needs the card's address (--ip)".into());
            };
            if !address.contains(gateway.0) || address.address == gateway.0 {
                return config(format!(
                    "--gateway {}: not another address in the network of --ip {}/{}",
                    Ipv4Addr::from(gateway.0),
                    Ipv4Addr::from(address.address),
                    address.prefix_len
                ));
            }
        }
        if gateway.is_none()
            && let Some(entry) = self.hosts.iter().find(|h| h.addr == HostAddr::Gateway)
        {
            return config(format!(
                "--add-host {}:host-gateway: the guest has no gateway (use --net user, or --gateway)",
                entry.name
            ));
        }
        Ok((address, gateway))
    }

    /// The files the VMM writes into the guest's `/etc`: `hosts` (with
    /// `--add-host`'s entries, and `host.eremite.internal` for the host
    /// under user-mode networking) and, under user-mode networking,
    /// `resolv.conf` naming the gateway, where passt answers DNS. Nothing
    /// without either.
    fn etc_files(&self) -> Result<Vec<initrd::MadeFile>, Error> {
        let (_, gateway) = self.net_params()?;
        let is_user = self.card().is_some_and(|card| card.link == Link::User);
        if !is_user && self.hosts.is_empty() {
            return Ok(Vec::new());
        }
        let gateway = gateway.map(|g| Ipv4Addr::from(g.0));
        let mut hosts = String::from("127.0.0.1\tlocalhost\n");
        if let (true, Some(gateway)) = (is_user, gateway) {
            hosts += &format!("{gateway}\t{USER_NET_HOST_NAME}\n");
        }
        for entry in &self.hosts {
            let addr = match entry.addr {
                HostAddr::Ip(addr) => Some(addr),
                HostAddr::Gateway => gateway,
            };
            if let Some(addr) = addr {
                hosts += &format!("{addr}\t{}\n", entry.name);
            }
        }
        let mut files = vec![initrd::MadeFile {
            guest: "/etc/hosts".into(),
            data: hosts.into_bytes(),
        }];
        if let (true, Some(gateway)) = (is_user, gateway) {
            files.push(initrd::MadeFile {
                guest: "/etc/resolv.conf".into(),
                data: format!("nameserver {gateway}\n").into_bytes(),
            });
        }
        Ok(files)
    }
}

/// A user-mode card's address when `--ip` is not given (QEMU's user-mode
/// network uses the same).
pub const USER_NET_ADDRESS: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 0, 2, 15), 24);
/// A user-mode card's gateway with the default address: the host.
pub const USER_NET_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The name the guest's `/etc/hosts` gives the host under user-mode
/// networking.
pub const USER_NET_HOST_NAME: &str = "host.eremite.internal";

/// The gateway a user-mode card gets when `--gateway` is not given: the
/// network's second address (`.2` in a /24, as QEMU's), or its first when
/// the card has that.
fn default_gateway(address: NetAddress) -> NetGateway {
    let bits = u32::from_be_bytes(address.address);
    let network = u32::from_be_bytes(address.network());
    let second = network.wrapping_add(2);
    let gateway = if second == bits {
        network.wrapping_add(1)
    } else {
        second
    };
    NetGateway(gateway.to_be_bytes())
}

/// Why a VM could not be started (the guest never ran, or KVM failed).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad setting.
    #[error("{0}")]
    Config(String),
    /// The process could not be confined before the guest ran.
    #[error(transparent)]
    Confine(#[from] ConfineError),
    /// The image file cannot be read.
    #[error("cannot read {path}: {source}")]
    ReadImage {
        /// The image path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The image file is not a loadable eremite image.
    #[error("{path}: {source}")]
    Load {
        /// The image path.
        path: PathBuf,
        /// Why.
        source: LoadError,
    },
    /// The host cannot provide the memory.
    #[error(transparent)]
    Memory(#[from] MapError),
    /// Boot info could not be prepared.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// The page tables or other machine tables could not be written.
    #[error(transparent)]
    Machine(#[from] MachineError),
    /// KVM failed.
    #[error(transparent)]
    Kvm(#[from] KvmError),
    /// The initial ramdisk cannot be built or does not fit.
    #[error(transparent)]
    Initrd(#[from] InitrdError),
    /// A host directory cannot be mounted.
    #[error(transparent)]
    Mount(#[from] MountSpecError),
    /// The tap interface of `--net` cannot be opened.
    #[error(transparent)]
    Tap(#[from] TapError),
    /// The switch of `--net switch:NAME` cannot be reached.
    #[error(transparent)]
    Switch(#[from] SwitchError),
    /// User-mode networking cannot be started.
    #[error(transparent)]
    Passt(#[from] PasstError),
    /// The network card cannot be set up.
    #[error(transparent)]
    Device(#[from] TransportError),
    /// `--pin-vcpus` cannot be followed.
    #[error(transparent)]
    Affinity(#[from] affinity::AffinityError),
    /// Too many devices.
    #[error(transparent)]
    Bus(#[from] BusFull),
    /// `--gdb`: no debugger could connect.
    #[error("cannot wait for GDB on {addr}: {source}")]
    Gdb {
        /// The address given.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The control socket (`--api`) cannot be made.
    #[error("--api {0}")]
    Api(#[from] api::ApiError),
    /// A snapshot cannot be restored.
    #[error("{path}: {source}")]
    Snapshot {
        /// The snapshot directory.
        path: PathBuf,
        /// Why.
        source: SnapshotError,
    },
    /// A Linux program cannot be booted.
    #[error("{path}: {source}")]
    Linux {
        /// The program's path.
        path: PathBuf,
        /// Why.
        source: linux::LinuxError,
    },
}

impl Error {
    /// Exit code of the CLI for this error: 125, "eremite itself failed".
    pub fn exit_code(&self) -> u8 {
        125
    }
}

/// Listen on `addr`, say so, and take the first connection: the guest
/// waits at its entry point for it.
fn wait_for_gdb(
    addr: std::net::SocketAddr,
    image: &std::path::Path,
) -> Result<std::net::TcpStream, Error> {
    let error = |source| Error::Gdb { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(error)?;
    let bound = listener.local_addr().map_err(error)?;
    eprintln!(
        "eremite: waiting for GDB on {bound}: gdb {} -ex 'target remote {bound}'",
        image.display()
    );
    let (stream, _) = listener.accept().map_err(error)?;
    stream.set_nodelay(true).map_err(error)?;
    Ok(stream)
}

/// How the guest ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The application exited with this code.
    Exited(i32),
    /// The application aborted (a Rust panic with `panic = "abort"`).
    Aborted,
    /// A CPU exception the kernel reported (it printed what and where).
    Exception,
    /// The kernel itself panicked or could not boot.
    KernelPanic,
    /// Every thread was blocked forever.
    Deadlock,
    /// The vCPU triple-faulted.
    TripleFault(CpuState),
    /// The vCPU halted with nothing to wake it.
    Halted(CpuState),
    /// KVM could not run the guest.
    InternalError {
        /// KVM's reason (`suberror` or hardware entry failure reason).
        reason: u64,
        /// Where the guest was.
        state: CpuState,
    },
    /// An exit the VMM does not handle.
    Unexpected {
        /// Its name.
        exit: &'static str,
        /// Where the guest was.
        state: CpuState,
    },
    /// The VMM stopped a guest that had not ended: `--timeout` passed, or
    /// a signal came a second time.
    Stopped(HostStop),
}

impl Outcome {
    /// The process exit code the CLI reports (documented in the README):
    /// the guest's own code, 134 for abort, 139 for an exception, 127 for
    /// a kernel panic or deadlock, 126 when the VM itself failed, 124
    /// after `--timeout` (as `timeout(1)`), 128 + the signal when a second
    /// one stopped the VM, 0 when the control socket stopped it.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Stopped(HostStop::Timeout(_)) => 124,
            Outcome::Stopped(HostStop::Signal(signal)) => u8::try_from(128 + signal).unwrap_or(128),
            // As a process killed by `SIGKILL`.
            Outcome::Stopped(HostStop::Debugger) => 137,
            // Asked for (`eremite vm SOCKET stop`, `snapshot --stop`): the
            // run ended as the user wanted.
            Outcome::Stopped(HostStop::Control | HostStop::Snapshot) => 0,
            // As a Linux process: the low 8 bits of the status.
            Outcome::Exited(code) => (*code & 0xff) as u8,
            Outcome::Aborted => 134,
            Outcome::Exception => 139,
            Outcome::KernelPanic | Outcome::Deadlock => 127,
            Outcome::TripleFault(_)
            | Outcome::Halted(_)
            | Outcome::InternalError { .. }
            | Outcome::Unexpected { .. } => 126,
        }
    }

    /// A line for the user when the VM failed in a way the guest could not
    /// report itself.
    pub fn failure_message(&self) -> Option<String> {
        let at = |s: &CpuState| format!("at rip {:#x}, CPL {}, CPU {}", s.rip, s.cpl, s.cpu);
        match self {
            Outcome::TripleFault(s) => Some(format!("the guest triple-faulted {}", at(s))),
            Outcome::Halted(s) => Some(format!(
                "the guest halted with nothing to wake it {}",
                at(s)
            )),
            Outcome::InternalError { reason, state } => Some(format!(
                "KVM could not run the guest (reason {reason}) {}",
                at(state)
            )),
            Outcome::Unexpected { exit, state } => Some(format!(
                "unexpected {exit} exit from the guest {}",
                at(state)
            )),
            Outcome::Stopped(HostStop::Timeout(limit)) => Some(format!(
                "stopped the guest after the --timeout of {}",
                humanise(*limit)
            )),
            Outcome::Stopped(HostStop::Signal(signal)) => Some(format!(
                "stopped the guest: {} came a second time (the guest had not ended after the first)",
                signal_name(*signal)
            )),
            Outcome::Stopped(HostStop::Debugger) => Some("GDB killed the guest".into()),
            Outcome::Stopped(HostStop::Control) => {
                Some("stopped the guest through its control socket".into())
            }
            Outcome::Stopped(HostStop::Snapshot) => {
                Some("stopped the guest once its snapshot was written".into())
            }
            _ => None,
        }
    }
}

/// A duration as the user would write it for `--timeout`.
fn humanise(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The name of a signal the VMM forwards.
fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGINT => "SIGINT".to_owned(),
        libc::SIGTERM => "SIGTERM".to_owned(),
        libc::SIGHUP => "SIGHUP".to_owned(),
        libc::SIGQUIT => "SIGQUIT".to_owned(),
        other => format!("signal {other}"),
    }
}

/// Where the time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// From [`run`] being called to the first instruction of the guest:
    /// reading the image, mapping RAM, creating the VM, loading.
    pub vmm_setup: Duration,
    /// The part of `vmm_setup` spent opening the image and mounts,
    /// mapping guest RAM, loading the image and writing the machine's
    /// tables.
    pub load: Duration,
    /// The part of `vmm_setup` spent creating the VM and its vCPUs and
    /// setting their registers (the rest is the boot info, devices and
    /// confinement).
    pub machine: Duration,
    /// The kernel's own boot, from its first instruction to calling
    /// `main` (measured by the kernel with the TSC).
    pub kernel_init: Duration,
    /// From [`run`] being called until the kernel called the
    /// application's entry (VMM setup, then the guest's boot, timed by the
    /// guest's TSC against the value the VMM read before starting it).
    pub time_to_main: Duration,
    /// From the first `KVM_RUN` until the guest stopped.
    pub guest_run: Duration,
}

/// Everything [`run`] learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// How the guest ended.
    pub outcome: Outcome,
    /// VM exits by kind.
    pub exits: ExitStats,
    /// The kernel's counters (CPL0 entries by vector).
    pub kernel: KernelReport,
    /// What the network card did (`--net`).
    pub net: Option<NetReport>,
    /// A Linux program's load: its `syscall` sites rewritten and left
    /// (the kernel's counts of trapped and unimplemented calls are in
    /// `kernel`).
    pub linux: Option<eremite_interface::LinuxProgram>,
    /// Where the time went.
    pub timings: Timings,
    /// How far the VMM process was confined while the guest ran.
    pub confinement: Confinement,
    /// Where the vCPUs spent their time (`profile_hz`).
    pub profile: Option<Profile>,
    /// The functions the guest called (`trace_bytes`).
    pub trace: Option<FunctionTrace>,
    /// Where the thread that crashed was, when one did.
    pub backtrace: Option<Backtrace>,
}

/// Boot `config.image` and run it to the end.
pub fn run(config: &VmConfig, console: &mut Console) -> Result<Report, Error> {
    let started = Instant::now();
    config.validate()?;
    let api_listener = config.api.as_deref().map(api::bind).transpose()?;
    let guest_snapshot_files = config
        .snapshot_to
        .as_deref()
        .map(|dir| {
            snapshot::create_files(dir).map_err(|source| Error::Snapshot {
                path: dir.to_owned(),
                source,
            })
        })
        .transpose()?;
    let placement = affinity::Placement::new(&config.pin_vcpus)?;
    let mounts = open_mounts(&config.mounts)?;
    let card = config.card();
    // A tap opens now, and passt starts (it is waited for once the VM is
    // built).
    let mut link = card
        .as_ref()
        .map(|card| open_link(config, card))
        .transpose()?;
    let file = memory::ImageFile::open(&config.image).map_err(|source| Error::ReadImage {
        path: config.image.clone(),
        source,
    })?;
    let is_linux = loader::is_foreign_elf(file.bytes());
    // A dynamic Linux program's libraries go in the initrd.
    let guest_files = if is_linux {
        linux::guest_files(&config.image, file.bytes()).map_err(|source| Error::Linux {
            path: config.image.clone(),
            source,
        })?
    } else {
        Vec::new()
    };
    // Nothing larger than the guest's memory below the hole, where it
    // goes, is read.
    let initrd_archive = initrd::compose(
        &guest_files,
        &config.etc_files()?,
        config.initrd.as_deref(),
        config.memory_bytes.min(layout::LOW_RAM_END),
    )?;
    let ram = memory::GuestRam::new(config.memory_bytes)?;
    let (image, linux, trap_entries) = if is_linux {
        let booted = config
            .linux_kernel
            .ok_or(linux::LinuxError::NoKernel)
            .and_then(|kernel| linux::load(kernel, file.bytes(), &ram, config.cpus))
            .map_err(|source| Error::Linux {
                path: config.image.clone(),
                source,
            })?;
        (booted.image, Some(booted.program), booted.trap_entries)
    } else {
        let image = loader::load(file.bytes(), &ram).map_err(|source| Error::Load {
            path: config.image.clone(),
            source,
        })?;
        (image, None, Vec::new())
    };
    // Named now. The file stays mapped for a crash's backtrace: once the
    // VMM is confined it could not open it again.
    let symbols = (config.profile_hz.is_some() || config.trace_bytes.is_some())
        .then(|| guest_symbols(config, file.bytes(), &image, linux.as_ref()));
    let page_tables_end = arch::write_machine_tables(&ram, &image)?;
    let loaded = Instant::now();
    let initrd_placed = match &initrd_archive {
        Some(archive) => initrd::place(&ram, image.end, archive)?,
        None => initrd::Placed::default(),
    };
    drop(initrd_archive);

    let bus = card_bus(card.as_ref().zip(link.take()), &placement, &ram)?;
    let machine_started = Instant::now();
    let mut machine = kvm::Machine::new(&ram, config.cpus, &bus)?;
    machine.prepare_cpus(image.entry, &trap_entries)?;
    let machine_ready = Instant::now();
    let tsc_khz = u64::from(machine.tsc_khz()?);
    let boot_tsc = machine.guest_tsc()?;
    let boot_wall_ns = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));

    let guest_paths: Vec<String> = config.mounts.iter().map(|m| m.guest_path.clone()).collect();
    let read_only_mounts = config
        .mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| m.is_read_only)
        .fold(0u64, |bits, (i, _)| bits | 1 << i);
    let mut args = vec![config.image.display().to_string()];
    args.extend(config.args.iter().cloned());
    let cmdline = config.guest_cmdline(bus.cmdline())?;
    let params = boot_info::BootParams {
        args: &args,
        env: &config.env,
        cmdline: &cmdline,
        cpu_count: config.cpus,
        tsc_khz,
        boot_tsc,
        boot_wall_ns,
        is_verbose: config.is_verbose,
        is_device_cpu_shared: placement.is_shared_with_devices(config.cpus),
        initrd: initrd_placed,
        mounts: &guest_paths,
        read_only_mounts,
        page_tables_end,
        linux,
    };
    boot_info::write(&ram, &image, &params)?;

    let control = control_support(
        &machine,
        &ram,
        config,
        tsc_khz,
        api_listener,
        guest_snapshot_files,
    )?;

    let load_bias = linux.as_ref().map_or(0, |program| program.bias);
    let gdb_stream = config
        .gdb
        .map(|addr| wait_for_gdb(addr, &config.image))
        .transpose()?;
    let debug_hub = gdb_stream
        .is_some()
        .then(|| kvm::debug::DebugHub::new(config.cpus as usize, tsc_khz))
        .transpose()
        .map_err(|source| Error::Gdb {
            addr: config.gdb.unwrap_or_else(|| ([127, 0, 0, 1], 0).into()),
            source,
        })?;

    // From here on the process serves an untrusted guest.
    let confinement = if config.is_confined {
        confine::confine(&mounts)?
    } else {
        Confinement::None
    };
    let entered = Instant::now();
    let mut services = hypercall::Services::new(console, sandbox::HostFs::new(mounts));
    services.snapshots = control
        .as_ref()
        .map(|c| &c.hub as &dyn hypercall::SnapshotRequests);
    let ran = run_machine(
        machine,
        &ram,
        &services,
        &bus,
        &placement,
        kvm::RunOptions {
            timeout: config.timeout,
            profile_hz: config.profile_hz,
            debugger: debug_hub
                .as_ref()
                .zip(gdb_stream)
                .map(|(hub, stream)| kvm::Debugger {
                    hub,
                    server: Box::new(|| gdb::serve(hub, &ram, stream, load_bias)),
                }),
            api: control.as_ref().map(Control::api),
        },
    )?;
    let Ran {
        stop,
        exits,
        samples,
        stopped,
        net,
        kernel,
    } = ran;
    let profile = samples
        .zip(symbols.as_ref())
        .zip(config.profile_hz)
        .map(|((samples, symbols), hz)| samples.fold(symbols, hz));

    let outcome = outcome_of(stop);
    let backtrace = matches!(outcome, Outcome::Aborted | Outcome::Exception)
        .then(|| crash_backtrace(config, &ram, &kernel, &file, &image, linux.as_ref()))
        .flatten();
    let trace = config
        .trace_bytes
        .zip(symbols.as_ref())
        .map(|(bytes, symbols)| match kernel.trace_buffers {
            0 => FunctionTrace::default(),
            table => {
                profile::read_trace(&ram, table, config.cpus, bytes, symbols, boot_tsc, tsc_khz)
            }
        });
    let timings = Timings {
        vmm_setup: entered - started,
        load: loaded - started,
        machine: machine_ready - machine_started,
        kernel_init: Duration::from_nanos(kernel.init_ns),
        time_to_main: (entered - started) + tsc_span(boot_tsc, kernel.main_tsc, tsc_khz),
        guest_run: stopped - entered,
    };
    Ok(Report {
        outcome,
        exits,
        kernel,
        net,
        linux,
        timings,
        confinement,
        profile,
        trace,
        backtrace,
    })
}

/// How to go on with a snapshot (`eremite restore`).
#[derive(Debug, Clone, Default)]
pub struct RestoreConfig {
    /// The snapshot's directory (its `state` and `memory` files).
    pub dir: PathBuf,
    /// `--diff` snapshots to apply on top of it, in the order they were
    /// taken (each a difference from the one before).
    pub diffs: Vec<PathBuf>,
    /// Serve a control socket here (`--api`), as [`VmConfig::api`].
    pub api: Option<PathBuf>,
    /// As [`VmConfig::timeout`].
    pub timeout: Option<Duration>,
    /// As [`VmConfig::pin_vcpus`].
    pub pin_vcpus: Vec<usize>,
    /// As [`VmConfig::is_confined`].
    pub is_confined: bool,
    /// The link the snapshot's network card goes on now (`--net`): needed
    /// when it had one, refused when it had none. The card keeps its
    /// address; the guest keeps its IP configuration.
    pub net: Option<NetSpec>,
}

/// Restore the snapshot in `config.dir` and run the VM on from where it
/// was to its end. Nothing runs before the whole snapshot is checked: its
/// state file's hash and versions, the memory file's length, this host's
/// CPU features and TSC frequency, and that every mount's directory is
/// still there.
pub fn restore(config: &RestoreConfig, console: &mut Console) -> Result<Report, Error> {
    let started = Instant::now();
    let refused = |source| Error::Snapshot {
        path: config.dir.clone(),
        source,
    };
    let (mut state, mut id, memory_file) = open_snapshot(&config.dir)?;
    if state.diff.is_some() {
        return Err(refused(SnapshotError::Damaged(
            "it is a --diff snapshot: give its base first (eremite restore BASE DIFF...)".into(),
        )));
    }
    // Each --diff snapshot must be a difference from the one before it,
    // of the same memory; the last one's vCPUs and devices are the VM's.
    let mut diffs = Vec::with_capacity(config.diffs.len());
    for dir in &config.diffs {
        let (diff_state, diff_id, diff_memory) = open_snapshot(dir)?;
        let is_next = diff_state.diff.as_ref().is_some_and(|d| d.parent == id)
            && diff_state.memory_bytes == state.memory_bytes;
        if !is_next {
            return Err(Error::Snapshot {
                path: dir.clone(),
                source: SnapshotError::Damaged(
                    "not a --diff snapshot of the one before it on the command line".into(),
                ),
            });
        }
        (state, id) = (diff_state, diff_id);
        diffs.push((dir, diff_memory, state.diff.take().map(|d| d.changed)));
    }
    let cpus = u32::try_from(state.cpus.len()).expect("at most MAX_CPUS, checked by parse");
    let mut vm_config = VmConfig::new(state.image.clone());
    vm_config.memory_bytes = state.memory_bytes;
    vm_config.cpus = cpus;
    vm_config.mounts = state.mounts.clone();
    vm_config.is_verbose = state.is_verbose;
    vm_config.api = config.api.clone();
    vm_config.timeout = config.timeout;
    vm_config.pin_vcpus = config.pin_vcpus.clone();
    vm_config.is_confined = config.is_confined;
    vm_config
        .validate()
        .map_err(|e| refused(SnapshotError::Damaged(e.to_string())))?;
    let card = match (state.cards.as_slice(), &config.net) {
        ([], None) => None,
        ([saved], Some(spec)) => Some(NetSpec {
            mac: Some(MacAddr(saved.mac)),
            ..spec.clone()
        }),
        ([], Some(_)) => {
            return Err(Error::Config(
                "--net: the snapshot's VM had no network card".into(),
            ));
        }
        (_, None) => {
            return Err(Error::Config(
                "the snapshot's VM had a network card: give --net for it".into(),
            ));
        }
        (_, Some(_)) => {
            return Err(refused(SnapshotError::Damaged(
                "more than one network card".into(),
            )));
        }
    };
    vm_config.net.clone_from(&card);
    let api_listener = config.api.as_deref().map(api::bind).transpose()?;
    let placement = affinity::Placement::new(&config.pin_vcpus)?;
    let mounts = open_mounts(&state.mounts)?;
    let link = card
        .as_ref()
        .map(|card| open_link(&vm_config, card))
        .transpose()?;
    let ram = memory::GuestRam::from_snapshot(state.memory_bytes, &memory_file)?;
    drop(memory_file);
    for (dir, memory, changed) in diffs {
        snapshot::apply_diff(&ram, &memory, &changed.unwrap_or_default()).map_err(|source| {
            Error::Snapshot {
                path: dir.clone(),
                source,
            }
        })?;
    }
    let bus = card_bus(card.as_ref().zip(link), &placement, &ram)?;
    bus.restore(&state.cards)
        .map_err(|e| refused(SnapshotError::Damaged(e)))?;
    let machine_started = Instant::now();
    let mut machine = kvm::Machine::new(&ram, cpus, &bus)?;
    let tsc_khz = u64::from(machine.tsc_khz()?);
    state
        .check_host(
            &snapshot::cpu_features(&machine.supported_cpuid()?),
            tsc_khz,
        )
        .map_err(refused)?;
    machine.restore_cpus(&state.take_cpus())?;
    let machine_ready = Instant::now();
    // The guest's clocks go on from the pause: its TSC less
    // `stopped_ticks` is what it was then, and its wall clock is the
    // host's.
    let now_tsc = machine.guest_tsc()?;
    let _ = ram.write_obj(
        layout::BOOT_INFO_ADDR + BootInfo::STOPPED_TICKS_OFFSET as u64,
        &now_tsc.wrapping_sub(state.frozen_ticks),
    );
    kvm::control::set_wall_clock(&ram, state.frozen_ticks, tsc_khz);
    let control = control_support(&machine, &ram, &vm_config, tsc_khz, api_listener, None)?;

    // The files the guest had open, opened again before the VMM is
    // confined (Landlock would allow it, but a missing one must stop the
    // restore before the guest runs).
    let mut host_fs = sandbox::HostFs::new(mounts);
    let mount_names: Vec<String> = state
        .mounts
        .iter()
        .map(|m| format!("{} (at {})", m.host_dir.display(), m.guest_path))
        .collect();
    host_fs
        .restore(&state.host_files, &mount_names)
        .map_err(|e| refused(SnapshotError::Damaged(e)))?;
    let confinement = if config.is_confined {
        confine::confine(host_fs.mounts())?
    } else {
        Confinement::None
    };
    let entered = Instant::now();
    let services = hypercall::Services::new(console, host_fs);
    let Ran {
        stop,
        exits,
        stopped,
        net,
        kernel,
        ..
    } = run_machine(
        machine,
        &ram,
        &services,
        &bus,
        &placement,
        kvm::RunOptions {
            timeout: config.timeout,
            profile_hz: None,
            debugger: None,
            api: control.as_ref().map(Control::api),
        },
    )?;
    Ok(Report {
        outcome: outcome_of(stop),
        exits,
        kernel,
        net,
        linux: None,
        timings: Timings {
            vmm_setup: entered - started,
            load: machine_started - started,
            machine: machine_ready - machine_started,
            kernel_init: Duration::ZERO,
            time_to_main: Duration::ZERO,
            guest_run: stopped - entered,
        },
        confinement,
        profile: None,
        trace: None,
        backtrace: None,
    })
}

/// Open the host directories of `specs` (each must exist).
fn open_mounts(specs: &[MountSpec]) -> Result<Vec<sandbox::Mount>, Error> {
    specs
        .iter()
        .map(|spec| {
            sandbox::Mount::open(spec).map_err(|source| {
                Error::Mount(MountSpecError::HostDir {
                    path: spec.host_dir.clone(),
                    source,
                })
            })
        })
        .collect()
}

/// What a run of the machine left.
struct Ran {
    stop: kvm::Stop,
    exits: ExitStats,
    samples: Option<profile::Samples>,
    /// When the last vCPU stopped.
    stopped: Instant,
    net: Option<NetReport>,
    kernel: KernelReport,
}

/// Run `machine` with the host's signals forwarded to the guest; once no
/// vCPU runs, stop the devices' threads (before the report and, on an
/// error, before guest RAM goes) and read the kernel's report.
fn run_machine(
    machine: kvm::Machine,
    ram: &memory::GuestRam,
    services: &hypercall::Services<'_>,
    bus: &devices::MmioBus,
    placement: &affinity::Placement,
    options: kvm::RunOptions<'_>,
) -> Result<Ran, Error> {
    // Ctrl-C and SIGTERM go to the guest while it runs; without the
    // forwarding (which cannot fail on Linux) they end eremite as before.
    let forwarding = kvm::host_signals::Forwarding::start(ram, machine.vm_fd()).ok();
    let run = machine.run(ram, services, bus, placement, options);
    drop(forwarding);
    let stopped = Instant::now();
    let net = bus.shutdown().into_iter().next();
    let (stop, exits, samples) = run?;
    let kernel = ram
        .read_obj::<KernelReport>(layout::BOOT_INFO_ADDR + BootInfo::REPORT_OFFSET as u64)
        .unwrap_or_default();
    Ok(Ran {
        stop,
        exits,
        samples,
        stopped,
        net,
        kernel,
    })
}

/// A snapshot directory's state (checked), its identity, and its memory
/// file (checked to be as long as the state says).
fn open_snapshot(dir: &std::path::Path) -> Result<(snapshot::State, String, std::fs::File), Error> {
    let open = |name: &str| {
        memory::open_regular(&dir.join(name)).map_err(|source| Error::ReadImage {
            path: dir.join(name),
            source,
        })
    };
    let refused = |source| Error::Snapshot {
        path: dir.to_owned(),
        source,
    };
    let (state, id) = snapshot::read_state(&open("state")?).map_err(refused)?;
    let memory = open("memory")?;
    let memory_len = memory
        .metadata()
        .map_err(|source| Error::ReadImage {
            path: dir.join("memory"),
            source,
        })?
        .len();
    if memory_len != state.memory_file_bytes {
        return Err(refused(SnapshotError::MemorySize {
            found: memory_len,
            expected: state.memory_file_bytes,
        }));
    }
    Ok((state, id, memory))
}

/// The device bus: empty, or with the card `spec` on its opened link.
fn card_bus(
    card: Option<(&NetSpec, (MacAddr, PendingLink<'_>))>,
    placement: &affinity::Placement,
    ram: &memory::GuestRam,
) -> Result<devices::MmioBus, Error> {
    let mut bus = devices::MmioBus::default();
    if let Some((spec, (mac, link))) = card {
        let link = match link {
            PendingLink::Tap(tap) => devices::HostLink::Tap(tap),
            PendingLink::Switch(port) => devices::HostLink::Switch(port),
            PendingLink::Passt(mut passt, config) => {
                passt.wait_ready(&config)?;
                devices::HostLink::Passt(passt)
            }
        };
        let card = devices::MmioTransport::new(
            devices::Net::new(mac, link).with_placement(placement.clone()),
            ram.clone(),
        )?;
        bus.add_net(card, &spec.link.to_string(), mac)?;
    }
    Ok(bus)
}

/// What a stop of the machine means for the user.
fn outcome_of(stop: kvm::Stop) -> Outcome {
    match stop {
        kvm::Stop::Guest(hypercall::Next::Stop { kind, code }) => match kind {
            ExitKind::Exit => Outcome::Exited(code),
            ExitKind::Abort => Outcome::Aborted,
            ExitKind::Exception => Outcome::Exception,
            ExitKind::KernelPanic => Outcome::KernelPanic,
            ExitKind::Deadlock => Outcome::Deadlock,
        },
        kvm::Stop::Guest(hypercall::Next::Resume) => unreachable!("run only returns on a stop"),
        kvm::Stop::Shutdown(state) => Outcome::TripleFault(state),
        kvm::Stop::Halted(state) => Outcome::Halted(state),
        kvm::Stop::InternalError { suberror, state } => Outcome::InternalError {
            reason: u64::from(suberror),
            state,
        },
        kvm::Stop::FailEntry { reason, state } => Outcome::InternalError { reason, state },
        kvm::Stop::Unexpected { exit, state } => Outcome::Unexpected { exit, state },
        kvm::Stop::Host(stop) => Outcome::Stopped(stop),
    }
}

/// What serves `--api` and the guest's snapshots (`--snapshot-to`).
struct Control {
    listener: Option<std::os::unix::net::UnixListener>,
    hub: kvm::control::ControlHub,
    template: api::SnapshotTemplate,
}

impl Control {
    /// The server's part in the run.
    fn api(&self) -> kvm::Api<'_> {
        kvm::Api {
            hub: &self.hub,
            server: Box::new(|control| {
                api::serve(self.listener.as_ref(), control, &self.template);
            }),
        }
    }
}

/// The control hub and snapshot template of a VM served with `--api` or
/// `--snapshot-to` (`None` without either).
fn control_support(
    machine: &kvm::Machine,
    ram: &memory::GuestRam,
    config: &VmConfig,
    tsc_khz: u64,
    listener: Option<std::os::unix::net::UnixListener>,
    guest_files: Option<(std::fs::File, std::fs::File)>,
) -> Result<Option<Control>, Error> {
    if listener.is_none() && guest_files.is_none() {
        return Ok(None);
    }
    let (msrs, unsupported) = match machine.snapshot_msrs()? {
        Some(msrs) => (msrs, None),
        None => (
            Vec::new(),
            Some("this host's XSAVE state is larger than a snapshot keeps".to_owned()),
        ),
    };
    let hub =
        kvm::control::ControlHub::new(config.cpus as usize, msrs, tsc_khz, guest_files.is_some())
            .map_err(|e| {
            Error::Api(api::ApiError::Socket {
                path: config.api.clone().unwrap_or_default(),
                source: e,
            })
        })?;
    let template = api::SnapshotTemplate {
        ram: ram.clone(),
        cpu_features: snapshot::cpu_features(&machine.supported_cpuid()?),
        tsc_khz,
        image: std::path::absolute(&config.image).unwrap_or_else(|_| config.image.clone()),
        is_verbose: config.is_verbose,
        mounts: config.mounts.clone(),
        unsupported,
        guest_files,
    };
    Ok(Some(Control {
        listener,
        hub,
        template,
    }))
}

/// The function names of what runs in the guest: the image's (the
/// kernel's among them), or eremite's Linux kernel's and the Linux
/// program's (`image_bytes`, loaded at `linux`'s bias).
fn guest_symbols(
    config: &VmConfig,
    image_bytes: &[u8],
    image: &LoadedImage,
    linux: Option<&eremite_interface::LinuxProgram>,
) -> profile::Symbols {
    let mut symbols = profile::Symbols::default();
    let kernel = config.linux_kernel.filter(|_| linux.is_some());
    if let Some(bias) = loader::bias(kernel.unwrap_or(image_bytes), image) {
        symbols.add_elf(kernel.unwrap_or(image_bytes), bias);
    }
    if let Some(program) = linux {
        symbols.add_elf(image_bytes, program.bias);
    }
    symbols
}

/// The backtrace of the thread that crashed, from where the kernel says
/// it was (`crash_rip`, `crash_rsp`): its stack scanned in guest memory,
/// named from the image (read again: a crash is rare).
fn crash_backtrace(
    config: &VmConfig,
    ram: &memory::GuestRam,
    kernel: &KernelReport,
    file: &memory::ImageFile,
    image: &LoadedImage,
    linux: Option<&eremite_interface::LinuxProgram>,
) -> Option<Backtrace> {
    if kernel.crash_rsp == 0 {
        return None;
    }
    let symbols = guest_symbols(config, file.bytes(), image, linux);
    let read =
        |addr: u64, buf: &mut [u8]| arch::read_virtual(ram, layout::PAGE_TABLES_ADDR, addr, buf);
    let addresses = unwind::scan(&read, &symbols, kernel.crash_rip, kernel.crash_rsp);
    // Source lines come from the image, or from the Linux program (the
    // frames in eremite's Linux kernel get their names only).
    let bias = linux.map_or_else(
        || loader::bias(file.bytes(), image).unwrap_or(0),
        |p| p.bias,
    );
    let lines = unwind::Lines::new(file.bytes());
    let mut frames = Vec::new();
    for (i, &address) in addresses.iter().enumerate() {
        // A return address is just past its call, maybe past the
        // function's end (a call that does not return): look up the call.
        let at = address - u64::from(i > 0);
        let symbol = symbols.function(at).map(|(_, name)| name.to_owned());
        let places = lines
            .as_ref()
            .map(|lines| lines.places(at.wrapping_sub(bias)))
            .unwrap_or_default();
        if places.is_empty() {
            frames.push(Frame {
                address,
                function: symbol,
                location: None,
            });
            continue;
        }
        let outermost = places.len() - 1;
        for (depth, (function, location)) in places.into_iter().enumerate() {
            // DWARF names inlined calls by their short names; the symbol
            // table names the function itself with its path.
            let function = match depth == outermost {
                true => symbol.clone().or(function),
                false => function.or_else(|| symbol.clone()),
            };
            frames.push(Frame {
                address,
                function,
                location,
            });
        }
    }
    Some(Backtrace { frames })
}

/// The frames of a guest thread that crashed (a CPU exception or an
/// abort), innermost first ([`unwind`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backtrace {
    /// Innermost first; a call inlined into another is a frame of its own
    /// at the same address.
    pub frames: Vec<Frame>,
}

/// One frame of a [`Backtrace`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The crashing instruction, or a return address.
    pub address: u64,
    /// The function, demangled, when known.
    pub function: Option<String>,
    /// Its source file and line, when the image has line tables.
    pub location: Option<(String, u32)>,
}

/// A card's host end as far as it is set up before the VM.
enum PendingLink<'a> {
    Tap(devices::Tap),
    Switch(devices::SwitchPort),
    /// Started, not yet known to be ready.
    Passt(devices::Passt, devices::PasstConfig<'a>),
}

/// Open the tap of `card` or start passt (a mistake shows before anything
/// else is done); with the card's MAC address.
fn open_link<'a>(
    config: &'a VmConfig,
    card: &NetSpec,
) -> Result<(MacAddr, PendingLink<'a>), Error> {
    let mac = card.mac.unwrap_or(MacAddr::local(std::process::id()));
    let link = match &card.link {
        Link::Tap(name) => PendingLink::Tap(devices::Tap::open(name)?),
        Link::Switch(name) => PendingLink::Switch(devices::SwitchPort::connect(
            name,
            config.switch_program.as_deref(),
        )?),
        Link::User => {
            let (Some(address), Some(gateway)) = config.net_params()? else {
                unreachable!("a user-mode card always has an address and a gateway");
            };
            let passt_config = devices::PasstConfig {
                address: Ipv4Addr::from(address.address),
                prefix_len: address.prefix_len,
                gateway: Ipv4Addr::from(gateway.0),
                dns: config.dns,
                publish: &config.publish,
                mac,
            };
            PendingLink::Passt(devices::Passt::spawn(&passt_config)?, passt_config)
        }
    };
    Ok((mac, link))
}

/// Time between two TSC readings (zero if `later` is not later, e.g. when
/// the kernel never reached `main`).
fn tsc_span(earlier: u64, later: u64, tsc_khz: u64) -> Duration {
    let ticks = later.saturating_sub(earlier);
    Duration::from_nanos(
        u64::try_from(u128::from(ticks) * 1_000_000 / u128::from(tsc_khz.max(1)))
            .unwrap_or(u64::MAX),
    )
}

const _: () = assert!(layout::MIN_MEMORY.is_multiple_of(LARGE_PAGE_SIZE));

/// Lock `mutex`, going on when a thread panicked while holding it: every
/// mutex in the VMM guards state that stays consistent between its
/// operations, and a panic already ends the run.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn config(cmdline: &str, net: bool, ip: Option<&str>, gateway: Option<&str>) -> VmConfig {
        let mut config = VmConfig::new("img");
        config.cmdline = cmdline.into();
        config.net = net.then(|| parse_net_spec("tap:tap0").unwrap());
        config.ip = ip.map(|ip| {
            let (address, prefix) = ip.split_once('/').unwrap();
            (address.parse().unwrap(), prefix.parse().unwrap())
        });
        config.gateway = gateway.map(|g| g.parse().unwrap());
        config
    }

    fn refused(config: &VmConfig) -> String {
        match config.validate() {
            Err(Error::Config(message)) => message,
            other => panic!("{config:?} should be refused: {other:?}"),
        }
    }

    #[test]
    fn the_guest_gets_the_users_tokens_then_ours() {
        let config = config(
            " quiet  log=debug\tx ",
            true,
            Some("10.0.0.2/24"),
            Some("10.0.0.1"),
        );
        config.validate().unwrap();
        let device = VirtioMmio {
            addr: layout::VIRTIO_MMIO_ADDR,
            size: 0x1000,
            vector: layout::DEVICE_VECTOR,
        };
        assert_eq!(
            config.guest_cmdline([device].into_iter()).unwrap(),
            [
                "quiet",
                "log=debug",
                "x",
                "virtio_mmio.device=4K@0xd0000000:34",
                "net.ip=10.0.0.2/24",
                "net.gateway=10.0.0.1"
            ]
        );
        let plain = VmConfig::new("img");
        assert!(plain.guest_cmdline(std::iter::empty()).unwrap().is_empty());
        // A card without an address: the guest finds one itself.
        assert!(self::config("", true, None, None).validate().is_ok());
    }

    #[test]
    fn network_settings_must_fit_together() {
        assert!(refused(&config("", false, Some("10.0.0.2/24"), None)).contains("--net"));
        assert!(refused(&config("", true, None, Some("10.0.0.1"))).contains("--ip"));
        assert!(
            refused(&config("", true, Some("10.0.0.2/24"), Some("10.0.1.1")))
                .contains("not another address in the network of --ip 10.0.0.2/24")
        );
        assert!(
            refused(&config("", true, Some("10.0.0.2/24"), Some("10.0.0.2"))).contains("--gateway")
        );
        assert!(refused(&config("", true, Some("10.0.0.2/33"), None)).contains("longer than 32"));
        assert!(refused(&config("", true, Some("224.0.0.2/24"), None)).contains("not a unicast"));
        assert!(
            refused(&config(
                "",
                true,
                Some("10.0.0.2/24"),
                Some("255.255.255.255")
            ))
            .contains("not a unicast")
        );
        config("", true, Some("10.0.0.2/0"), Some("192.168.1.1"))
            .validate()
            .unwrap();
    }

    #[test]
    fn the_user_cannot_set_our_parameters_through_cmdline() {
        for token in [
            "virtio_mmio.device=4K@0xd0001000:35",
            "net.ip=10.0.0.2/24",
            "net.gateway=junk",
            "net.ip",
        ] {
            let message = refused(&config(&format!("quiet {token}"), true, None, None));
            assert!(
                message.contains("eremite sets this parameter itself"),
                "{message}"
            );
        }
    }
}
