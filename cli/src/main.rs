//! `eremite`: run eremite unikernel images under KVM.
//!
//! ```text
//! eremite run [--memory SIZE] [--cpus N] [--env KEY=VALUE]... [--cmdline TEXT]
//!             [--initrd DIR_OR_ARCHIVE] [--mount HOST_DIR:GUEST_PATH[:ro]]...
//!             [--net tap:NAME[,mac=MAC] [--ip ADDRESS/PREFIX [--gateway ADDRESS]]]
//!             [--pin-vcpus HOST_CPUS] [--timeout DURATION] [--profile DIR [--profile-hz HZ]]
//!             [--trace DIR [--trace-filter REGEX] [--trace-buffer SIZE]]
//!             [--verbose] [--stats] [--hypervisor eremite|qemu|qemu-tcg|qemu-kvm]
//!             IMAGE [-- ARGS...]
//! ```
//!
//! Exit codes (documented in the README): the guest's own exit code; 134
//! when the guest aborted (a Rust panic); 139 when it died of a CPU
//! exception; 127 on a kernel panic or deadlock; 126 when the VM itself
//! failed (triple fault, KVM error); 125 when eremite could not start the
//! VM (bad image, no KVM, bad option value); 2 for command-line mistakes.
#![forbid(unsafe_code)]

mod backtrace;
mod binfmt;
mod harness;
mod new;
mod profile;
mod qemu;
mod scenario;
mod trace;
mod uftrace;
mod vm;

/// The kernel image that runs Linux programs (built by `build.rs`).
static LINUX_KERNEL: &[u8] = include_bytes!(env!("EREMITE_LINUX_KERNEL"));

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use eremite_interface::hypercall::Port;
use eremite_interface::{
    CPL0_COUNTER_GATE, CPL0_COUNTER_TLB_FLUSH, KernelReport, LinuxProgram, linux_syscalls,
};
use std::net::Ipv4Addr;

use eremite_vmm::{
    Console, HostEntry, MountSpec, NetReport, NetSpec, Publish, Report, VmConfig, parse_cpu_list,
    parse_gateway, parse_host_entry, parse_ip_prefix, parse_memory_size, parse_mount_spec,
    parse_net_spec, parse_publish,
};

#[derive(Parser)]
#[command(
    name = "eremite",
    version,
    about = "Run eremite unikernel images under KVM"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot an image and run it to the end; exits with the guest's code.
    Run(Box<RunArgs>),
    /// Control a VM started with `--api PATH`: pause, resume, stop, ask its
    /// status, or snapshot it into a directory (docs/snapshots.md).
    Vm(vm::VmArgs),
    /// Go on with a VM from its snapshot directory, in this process, where
    /// it was when the snapshot was taken.
    Restore(vm::RestoreArgs),
    /// Run the switch NAME that `--net switch:NAME` VMs share (started by
    /// the first such VM; ends a few seconds after the last has gone).
    #[command(hide = true)]
    Switch {
        /// The switch's name.
        name: String,
    },
    /// Make socket2, tokio and mio for the hermit target in DIR: socket2's
    /// API over hermit-abi (eremite's), and tokio's and mio's crates.io
    /// releases (from cargo's cache, fetched if missing, checksums
    /// checked) with eremite's patches; prints the `[patch.crates-io]`
    /// lines that make a program's hermit build use them, and writes them
    /// to DIR/patch.toml (for `cargo build --config DIR/patch.toml`).
    Compat {
        /// Where to put them (made if missing; e.g. `target/eremite-compat`).
        dir: std::path::PathBuf,
    },
    /// Make a Cargo project that builds for Linux and for eremite, with
    /// eremite as its runner (`cargo vm-run`, `cargo vm-test`).
    New {
        /// The project's directory (its name is the package's).
        dir: std::path::PathBuf,
        /// A tokio program, with eremite's patched tokio for hermit builds.
        #[arg(long)]
        tokio: bool,
    },
    /// Run eremite images like native executables (`./hello arg`) through
    /// Linux's binfmt_misc (needs root).
    #[command(subcommand)]
    Binfmt(BinfmtCommand),
    /// Several VMs from one scenario file (docs/scenarios.md).
    #[command(subcommand)]
    Scenario(scenario::ScenarioCommand),
    /// Sweeps of a scenario's variables, with results and charts.
    #[command(subcommand)]
    Experiment(scenario::ExperimentCommand),
    /// Write `--trace`'s uftrace files into DIR from the calls on stdin
    /// (started by `eremite run --trace` before it confines itself).
    #[command(name = uftrace::SUBCOMMAND, hide = true)]
    WriteUftrace {
        /// The trace directory.
        dir: std::path::PathBuf,
    },
}

/// `eremite binfmt ...`.
#[derive(Subcommand)]
enum BinfmtCommand {
    /// Register this eremite for images (ELF, OS ABI 0xFF): executing
    /// one runs `eremite run IMAGE ARGS`.
    Install {
        /// The rule's name in /proc/sys/fs/binfmt_misc.
        #[arg(long, default_value = binfmt::DEFAULT_NAME)]
        name: String,
    },
    /// Remove the rule.
    Uninstall {
        /// The rule's name in /proc/sys/fs/binfmt_misc.
        #[arg(long, default_value = binfmt::DEFAULT_NAME)]
        name: String,
    },
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("card").args(["net", "publish"]).multiple(true)))]
struct RunArgs {
    /// Guest memory: a multiple of 2 MiB from 8M to 31G (e.g. 64M, 1G, 512MiB, 8G).
    /// Default 256M (the host commits only what the guest touches), or 512M
    /// for a dynamically linked Linux program or a Go program. Also from
    /// EREMITE_MEMORY (for `cargo run` with eremite as the runner).
    #[arg(long, env = "EREMITE_MEMORY", value_name = "SIZE", value_parser = parse_memory_size)]
    memory: Option<u64>,
    /// Number of vCPUs, 1 to 16; the application's threads are spread over
    /// them. Also from EREMITE_CPUS.
    #[arg(long, env = "EREMITE_CPUS", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(eremite_interface::layout::MAX_CPUS)))]
    cpus: u32,
    /// Set an environment variable in the guest (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Kernel command line: white-space separated parameters for the guest
    /// kernel (eremite adds its own for --net, --ip and --gateway).
    #[arg(long, value_name = "TEXT", default_value = "")]
    cmdline: String,
    /// Initial ramdisk, unpacked into the guest's `/` before `main`: a
    /// directory (symlinks are kept as links), a cpio archive in the "newc"
    /// format or a tar archive.
    #[arg(long, value_name = "DIR_OR_ARCHIVE")]
    initrd: Option<PathBuf>,
    /// Mount a host directory at an absolute guest path (repeatable);
    /// `:ro` makes it read-only. The guest cannot reach anything outside it.
    #[arg(long, value_name = "HOST_DIR:GUEST_PATH[:ro]", value_parser = parse_mount_spec)]
    mount: Vec<MountSpec>,
    /// Give the guest a network card (virtio-net): `user` for user-mode
    /// networking (no root: the guest reaches the host and beyond through
    /// passt; the default once -p is given), `switch:NAME` for a segment
    /// shared with the other VMs on switch NAME (no root; give each --ip),
    /// or `tap:NAME` for an existing host tap interface (`ip tuntap add
    /// NAME mode tap`). The card's MAC address is chosen unless given.
    #[arg(long, value_name = "user|switch:NAME|tap:NAME[,mac=MAC]", value_parser = parse_net_spec)]
    net: Option<NetSpec>,
    /// Publish a guest port on the host (repeatable), as docker does:
    /// 8080:80 makes host 127.0.0.1:8080 reach the guest's port 80; an
    /// address first (0.0.0.0:8080:80) listens there; /udp for UDP.
    /// Implies --net user.
    #[arg(long = "publish", short = 'p', value_name = "[ADDRESS:]HOST_PORT[:GUEST_PORT][/udp]",
          value_parser = parse_publish)]
    publish: Vec<Publish>,
    /// Add a line to the guest's /etc/hosts (repeatable); `host-gateway`
    /// for IP names the host under user-mode networking.
    #[arg(long, value_name = "NAME:IP", value_parser = parse_host_entry)]
    add_host: Vec<HostEntry>,
    /// The DNS server user-mode networking forwards the guest's queries to
    /// (default: the host's, from /etc/resolv.conf).
    #[arg(long, value_name = "ADDRESS", value_parser = parse_gateway)]
    dns: Option<Ipv4Addr>,
    /// The guest's IPv4 address and prefix length on the card (e.g.
    /// 10.0.0.2/24; user-mode networking's default is 10.0.2.15/24).
    #[arg(long, value_name = "ADDRESS/PREFIX", value_parser = parse_ip_prefix, requires = "card")]
    ip: Option<(Ipv4Addr, u8)>,
    /// The guest's default IPv4 gateway, in the network of --ip (user-mode
    /// networking's default is the network's .2, which is the host).
    #[arg(long, value_name = "ADDRESS", value_parser = parse_gateway, requires = "ip")]
    gateway: Option<Ipv4Addr>,
    /// Pin the vCPU threads to these host CPUs (e.g. 1, 2,3 or 0-3): vCPU
    /// n runs on the n-th, round robin. The device threads stay unpinned,
    /// so they do not take a vCPU's CPU from it.
    #[arg(long, value_name = "HOST_CPUS", value_parser = parse_host_cpus)]
    pin_vcpus: Option<HostCpus>,
    /// Stop the guest if it is still running after this long (e.g. 30s,
    /// 500ms, 2m, 1h; a bare number is seconds): exit code 124.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Sample where every vCPU is, kernel and application alike, and
    /// write DIR/profile.folded and DIR/flame.svg when the run ends (no
    /// rebuild needed; callers are found through frame pointers, so build
    /// the application with -Cforce-frame-pointers=yes).
    #[arg(long, value_name = "DIR")]
    profile: Option<PathBuf>,
    /// Samples a second per vCPU for --profile (each is a VM exit).
    #[arg(long, value_name = "HZ", requires = "profile",
          default_value_t = eremite_vmm::DEFAULT_PROFILE_HZ,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(eremite_vmm::MAX_PROFILE_HZ)))]
    profile_hz: u32,
    /// Record every function entry and exit of an image built with
    /// -Zinstrument-mcount (see docs/tracing.md) and write
    /// DIR/trace.json (Perfetto, chrome://tracing), DIR/trace.folded,
    /// DIR/flame.svg and uftrace's files (`uftrace replay -d DIR`) when the
    /// run ends.
    #[arg(long, value_name = "DIR")]
    trace: Option<PathBuf>,
    /// Keep only the calls of functions whose (demangled) name matches
    /// this regular expression, and the calls inside them, in --trace's
    /// files (e.g. 'my_crate::parse', '^my_crate::').
    #[arg(long, value_name = "REGEX", requires = "trace", value_parser = parse_regex)]
    trace_filter: Option<regex::Regex>,
    /// Wait at the entry point for GDB to connect to [HOST:]PORT (host
    /// 127.0.0.1 unless given), then serve it while the guest runs:
    /// `gdb IMAGE -ex 'target remote :PORT'` (see docs/debugging.md).
    #[arg(long, value_name = "[HOST:]PORT", value_parser = parse_gdb_address)]
    gdb: Option<std::net::SocketAddr>,
    /// Serve a control socket at PATH while the guest runs: `eremite vm
    /// PATH pause|resume|stop|status|snapshot DIR` (docs/snapshots.md).
    #[arg(long, value_name = "PATH")]
    api: Option<PathBuf>,
    /// Where the guest's own snapshots go (`eremite::vm::snapshot`): DIR's
    /// `state` and `memory`, created now; `eremite restore DIR` goes on
    /// from there (docs/snapshots.md).
    #[arg(long, value_name = "DIR")]
    snapshot_to: Option<PathBuf>,
    /// Room for --trace's events, taken from guest memory (e.g. 64M; 24
    /// bytes an event; default 64M or a quarter of --memory if less).
    #[arg(long, value_name = "SIZE", requires = "trace", value_parser = parse_memory_size)]
    trace_buffer: Option<u64>,
    /// Show the kernel's log and a boot-time breakdown on stderr.
    #[arg(long, short = 'v')]
    verbose: bool,
    /// Print VM exits, CPL0 entries, the network card's counters and a
    /// Linux program's system-call sites and unimplemented calls on stderr
    /// after the run.
    #[arg(long)]
    stats: bool,
    /// Where to boot the image: eremite's own VMM (KVM), or QEMU -M microvm
    /// through the image's PVH entry: `qemu` uses KVM when /dev/kvm works
    /// and QEMU's TCG otherwise; `qemu-tcg` and `qemu-kvm` choose. QEMU
    /// has no --mount or --initrd yet.
    #[arg(long, value_enum, default_value_t = Hypervisor::Eremite)]
    hypervisor: Hypervisor,
    /// The image (an application built for x86_64-unknown-hermit that
    /// links the `eremite` crate, or a Linux x86_64 program), then the
    /// program's arguments: everything after the image is the program's,
    /// as `docker run IMAGE ARGS` takes it (a `--` right after the image is
    /// dropped), so eremite's own options go before the image.
    #[arg(
        value_name = "IMAGE [ARGS]",
        required = true,
        num_args = 1..,
        trailing_var_arg = true
    )]
    program: Vec<String>,
}

impl RunArgs {
    /// The image's path.
    fn image(&self) -> PathBuf {
        PathBuf::from(self.program.first().map_or("", String::as_str))
    }

    /// The guest program's arguments.
    fn guest_args(&self) -> &[String] {
        let rest = self.program.get(1..).unwrap_or_default();
        match rest.split_first() {
            Some((first, after)) if first == "--" => after,
            _ => rest,
        }
    }
}

/// Under `eremite scenario` (its pid in [`scenario::SUPERVISED_ENV`]):
/// end with the runner, so that a runner killed outright leaves no VM.
fn die_with_supervisor() -> Result<(), String> {
    let Ok(runner) = std::env::var(scenario::SUPERVISED_ENV) else {
        return Ok(());
    };
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| format!("cannot ask to end with the scenario runner: {e}"))?;
    // The runner may have gone before the request above.
    let parent = rustix::process::getppid().map_or(0, |pid| pid.as_raw_nonzero().get());
    if runner.parse::<i32>().ok() != Some(parent) {
        return Err("the scenario runner that started this VM has gone".into());
    }
    Ok(())
}

/// A regular expression for `--trace-filter`.
/// `PORT` (on 127.0.0.1) or `HOST:PORT`.
fn parse_gdb_address(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok((Ipv4Addr::LOCALHOST, port).into());
    }
    text.parse()
        .map_err(|_| format!("`{text}` is not a port or HOST:PORT (e.g. 1234 or 127.0.0.1:1234)"))
}

fn parse_regex(text: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(text).map_err(|e| e.to_string())
}

/// A duration for `--timeout`: a number with `ms`, `s`, `m` or `h`
/// (seconds without one), above zero and at most a year.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds_per_unit = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("{unit:?} is not a unit: use ms, s, m or h")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 30s or 500ms"))?;
    let seconds = value * seconds_per_unit;
    if !(seconds > 0.0 && seconds <= 365.0 * 86_400.0) {
        return Err(format!("{text:?} is not above zero and at most a year"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `--pin-vcpus`: a list of host CPUs (a type of its own, which clap does
/// not take for a list of values).
#[derive(Clone, Debug)]
struct HostCpus(pub(crate) Vec<usize>);

fn parse_host_cpus(text: &str) -> Result<HostCpus, eremite_vmm::CpuListError> {
    parse_cpu_list(text).map(HostCpus)
}

/// `--hypervisor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Hypervisor {
    /// eremite's own VMM.
    Eremite,
    /// QEMU, with KVM when it works, else TCG.
    Qemu,
    /// QEMU with TCG.
    QemuTcg,
    /// QEMU with KVM.
    QemuKvm,
}

fn main() -> ExitCode {
    let started = Instant::now();
    eremite_vmm::close_inherited_descriptors();
    // binfmt_misc runs an image as `eremite PATH ARGS...`.
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv
        .get(1)
        .is_some_and(|first| binfmt::is_direct_run(first))
    {
        argv.insert(1, "run".into());
    }
    let cli = Cli::parse_from(argv);
    match cli.command {
        Command::Run(args) => run(*args, started),
        Command::Vm(args) => vm::control(&args),
        Command::Restore(args) => vm::restore(&args, started),
        Command::Switch { name } => match eremite_vmm::serve_switch(&name) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("eremite: {error}");
                ExitCode::from(125)
            }
        },
        Command::Compat { dir } => match make_compat(&dir) {
            Ok(section) => {
                print!("{section}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("eremite: {error}");
                ExitCode::from(1)
            }
        },
        Command::New { dir, tokio } => match new::new(&dir, tokio, make_compat) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("eremite: {error}");
                ExitCode::from(1)
            }
        },
        Command::Binfmt(command) => {
            let result = match command {
                BinfmtCommand::Install { name } => binfmt::install(&name),
                BinfmtCommand::Uninstall { name } => binfmt::uninstall(&name),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    eprintln!("eremite: {message}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Scenario(command) => scenario::scenario(command),
        Command::Experiment(command) => scenario::experiment(command),
        Command::WriteUftrace { dir } => match uftrace::write_dir(&dir, std::io::stdin().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("eremite: {message}");
                ExitCode::from(1)
            }
        },
    }
}

/// `eremite compat DIR`.
/// `eremite compat DIR`: make the patched crates in `dir` and write
/// their `[patch.crates-io]` section to `DIR/patch.toml`; the section.
fn make_compat(dir: &std::path::Path) -> Result<String, String> {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    let cargo_home = eremite_compat::cargo_home()
        .ok_or("neither CARGO_HOME nor HOME is set: where is cargo's registry?")?;
    let config = dir.join("patch.toml");
    eremite_compat::generate(&dir, &cargo_home)
        .and_then(|_| eremite_compat::write_socket2(&dir))
        .map_err(|e| e.to_string())
        .and_then(|socket2| {
            let section = eremite_compat::patch_section(&dir, Some(&socket2));
            std::fs::write(&config, &section)
                .map(|()| section)
                .map_err(|e| format!("{}: {e}", config.display()))
        })
}

fn run(args: RunArgs, started: Instant) -> ExitCode {
    if let Err(e) = die_with_supervisor() {
        eprintln!("eremite: {e}");
        return ExitCode::from(125);
    }
    if args.hypervisor == Hypervisor::Eremite && harness::applies(&args.image()) {
        // eremite's own options: what came between `run` and the image.
        let argv: Vec<String> = std::env::args().collect();
        let options = argv
            .get(2..argv.len().saturating_sub(args.program.len()))
            .unwrap_or_default();
        if let Some(code) = harness::run(&args.image(), options, args.guest_args()) {
            return code;
        }
    }
    let memory = args
        .memory
        .unwrap_or_else(|| eremite_vmm::default_memory_bytes(&args.image()));
    let accel = match args.hypervisor {
        Hypervisor::Eremite => None,
        Hypervisor::Qemu => Some(qemu::Accel::Auto),
        Hypervisor::QemuTcg => Some(qemu::Accel::Tcg),
        Hypervisor::QemuKvm => Some(qemu::Accel::Kvm),
    };
    if let Some(accel) = accel {
        return run_on_qemu(&args, accel, started);
    }
    let config = VmConfig {
        image: args.image(),
        memory_bytes: memory,
        cpus: args.cpus,
        args: args.guest_args().to_vec(),
        env: guest_env(args.env),
        cmdline: args.cmdline,
        is_verbose: args.verbose,
        initrd: args.initrd,
        mounts: args.mount,
        net: args.net,
        ip: args.ip,
        gateway: args.gateway,
        publish: args.publish,
        hosts: args.add_host,
        dns: args.dns,
        switch_program: std::env::current_exe().ok(),
        pin_vcpus: args.pin_vcpus.map(|cpus| cpus.0).unwrap_or_default(),
        linux_kernel: Some(LINUX_KERNEL),
        timeout: args.timeout,
        profile_hz: args.profile.as_ref().map(|_| args.profile_hz),
        trace_bytes: args.trace.as_ref().map(|_| {
            args.trace_buffer
                .unwrap_or_else(|| eremite_vmm::default_trace_bytes(memory))
        }),
        is_confined: true,
        gdb: args.gdb,
        api: args.api,
        snapshot_to: args.snapshot_to,
    };
    if args.trace.is_some() && args.trace == args.profile {
        eprintln!(
            "eremite: give --trace and --profile different directories (both write flame.svg)"
        );
        return ExitCode::from(2);
    }
    let trace_output = match args
        .trace
        .as_deref()
        .map(|dir| Ok::<_, String>((trace::Output::create(dir)?, uftrace::Writer::spawn(dir)?)))
        .transpose()
    {
        Ok(output) => output,
        Err(message) => {
            eprintln!("eremite: {message}");
            return ExitCode::from(125);
        }
    };
    let profile_output = match args
        .profile
        .as_deref()
        .map(profile::Output::create)
        .transpose()
    {
        Ok(output) => output,
        Err(message) => {
            eprintln!("eremite: {message}");
            return ExitCode::from(125);
        }
    };
    // Asked now: the VMM is confined while the guest runs.
    let cwd = std::env::current_dir().ok();
    let mut console = Console::host(args.verbose);
    let run_called = Instant::now();
    let report = match eremite_vmm::run(&config, &mut console) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("eremite: {error}");
            return ExitCode::from(error.exit_code());
        }
    };
    if let Some(message) = report.outcome.failure_message() {
        eprintln!("eremite: {message}");
    }
    if let Some(text) = report
        .backtrace
        .as_ref()
        .and_then(|b| backtrace::render(b, &report.outcome, &config.env, cwd.as_deref()))
    {
        eprint!("{text}");
    }
    if report.outcome.exit_code() != 0
        && let Some(hint) = memory_hint(report.kernel.failed_alloc_bytes, memory)
    {
        eprintln!("eremite: {hint}");
    }
    if args.verbose {
        let spans = Spans {
            before_run: run_called - started,
            run: run_called.elapsed(),
            total: started.elapsed(),
        };
        eprintln!("eremite: {}", breakdown(&report, &spans));
    }
    if args.stats {
        eprint!("{}", stats(&report));
    }
    if let (Some(output), Some(profile)) = (profile_output, &report.profile)
        && let Err(message) = output.write(profile, &config.image)
    {
        eprintln!("eremite: {message}");
    }
    if let (Some((output, uftrace)), Some(trace)) = (trace_output, &report.trace) {
        let filtered = args
            .trace_filter
            .as_ref()
            .map(|filter| trace::filtered(trace, filter));
        if trace.calls.is_empty() {
            eprintln!(
                "eremite: trace: no function was traced: build the program with -Zinstrument-mcount (see docs/tracing.md)"
            );
        } else if filtered.as_ref().is_some_and(|f| f.calls.is_empty()) {
            eprintln!(
                "eremite: trace: none of the {} calls matched --trace-filter",
                trace.calls.len()
            );
        }
        let trace = filtered.as_ref().unwrap_or(trace);
        let written = output
            .write(trace, &config.image)
            .and_then(|()| uftrace.finish(trace, &config.image, report.outcome.exit_code()));
        if let Err(message) = written {
            eprintln!("eremite: {message}");
        }
    }
    ExitCode::from(report.outcome.exit_code())
}

/// The guest's environment: `--env`'s, and the host's `RUST_BACKTRACE`
/// unless `--env` sets it, so that `RUST_BACKTRACE=1 cargo run` shows
/// the backtrace of a panic as it does natively.
fn guest_env(mut env: Vec<String>) -> Vec<String> {
    let is_set = env.iter().any(|e| e.starts_with("RUST_BACKTRACE="));
    if !is_set && let Ok(value) = std::env::var("RUST_BACKTRACE") {
        env.push(format!("RUST_BACKTRACE={value}"));
    }
    env
}

/// For a failed run in which the guest's kernel once found too little
/// free RAM for a request of `failed_bytes` (0: never): what it had, and
/// the `--memory` that would give it room.
fn memory_hint(failed_bytes: u64, memory_bytes: u64) -> Option<String> {
    if failed_bytes == 0 {
        return None;
    }
    let wanted = (memory_bytes.saturating_mul(2))
        .max(memory_bytes.saturating_add(failed_bytes))
        .next_power_of_two()
        .min(eremite_interface::layout::MAX_MEMORY);
    let request = if failed_bytes >= 1 << 20 {
        format!("{} MiB", failed_bytes.div_ceil(1 << 20))
    } else {
        format!("{} KiB", failed_bytes.div_ceil(1 << 10))
    };
    Some(format!(
        "the guest ran out of memory (a request for {request} found too little of its {} MiB free): give it more with --memory, e.g. --memory {}M",
        memory_bytes >> 20,
        wanted >> 20
    ))
}

/// `--hypervisor qemu…`: what QEMU cannot do yet is an error (125).
fn run_on_qemu(args: &RunArgs, accel: qemu::Accel, started: Instant) -> ExitCode {
    let unsupported = if !args.mount.is_empty() {
        Some("--mount (host directories are served by eremite's VMM only)")
    } else if args.initrd.is_some() {
        Some("--initrd")
    } else if args.stats {
        Some("--stats")
    } else if args.pin_vcpus.is_some() {
        Some("--pin-vcpus")
    } else if args.timeout.is_some() {
        Some("--timeout")
    } else if args.profile.is_some() {
        Some("--profile")
    } else if args.trace.is_some() {
        Some("--trace")
    } else if args.gdb.is_some() {
        Some("--gdb (QEMU's own -s serves GDB there)")
    } else if !args.add_host.is_empty() || args.dns.is_some() {
        Some("--add-host or --dns (the guest's /etc is written by eremite's VMM only)")
    } else if eremite_vmm::is_linux_program(&args.image()) {
        Some("Linux programs (they need eremite's VMM, which loads them)")
    } else {
        None
    };
    if let Some(what) = unsupported {
        eprintln!("eremite: QEMU does not support {what}; use --hypervisor eremite");
        return ExitCode::from(125);
    }
    // A switch QEMU joins itself (`-netdev stream`): it must be running.
    if let Some(eremite_vmm::NetSpec {
        link: eremite_vmm::Link::Switch(name),
        ..
    }) = &args.net
    {
        if args.ip.is_none() {
            eprintln!(
                "eremite: --net switch:{name} needs the guest's address (--ip): a switch has no DHCP"
            );
            return ExitCode::from(125);
        }
        let started = std::env::current_exe()
            .map_err(|e| e.to_string())
            .and_then(|exe| eremite_vmm::ensure_switch(name, &exe).map_err(|e| e.to_string()));
        if let Err(message) = started {
            eprintln!("eremite: {message}");
            return ExitCode::from(125);
        }
    }
    // The same checks of --ip and --gateway as on our VMM.
    let config = VmConfig {
        image: args.image(),
        memory_bytes: args.memory.unwrap_or(eremite_vmm::DEFAULT_MEMORY_BYTES),
        cpus: args.cpus,
        args: Vec::new(),
        env: Vec::new(),
        cmdline: String::new(),
        is_verbose: args.verbose,
        initrd: None,
        mounts: Vec::new(),
        net: args.net.clone(),
        ip: args.ip,
        gateway: args.gateway,
        publish: args.publish.clone(),
        hosts: Vec::new(),
        dns: None,
        switch_program: None,
        pin_vcpus: Vec::new(),
        linux_kernel: None,
        timeout: None,
        profile_hz: None,
        trace_bytes: None,
        is_confined: false,
        gdb: None,
        api: None,
        snapshot_to: None,
    };
    let (address, gateway) = match config.net_params() {
        Ok(params) => params,
        Err(error) => {
            eprintln!("eremite: {error}");
            return ExitCode::from(error.exit_code());
        }
    };
    let params: Vec<String> = address
        .map(|a| a.to_string())
        .into_iter()
        .chain(gateway.map(|g| g.to_string()))
        .collect();
    let card = config.card();
    let net = card.as_ref().map(|card| qemu::QemuNet {
        card,
        address,
        gateway,
        publish: &args.publish,
    });
    let image = args.image();
    let request = qemu::QemuRun {
        image: &image,
        memory_bytes: args.memory.unwrap_or(eremite_vmm::DEFAULT_MEMORY_BYTES),
        cpus: args.cpus,
        args: args.guest_args(),
        env: &args.env,
        cmdline: &args.cmdline,
        params: &params,
        net,
        is_verbose: args.verbose,
        accel,
    };
    if !image.is_file() {
        eprintln!("eremite: cannot read {}", image.display());
        return ExitCode::from(125);
    }
    match qemu::run(&request) {
        Ok(ended) => {
            if let Some(message) = ended.message {
                eprintln!("eremite: {message}");
            }
            if args.verbose {
                eprintln!(
                    "eremite: QEMU ran {}, total {}",
                    ms(ended.elapsed),
                    ms(started.elapsed())
                );
            }
            ExitCode::from(ended.exit_code)
        }
        Err(message) => {
            eprintln!("eremite: {message}");
            ExitCode::from(125)
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// What the CLI measured around `eremite_vmm::run`.
struct Spans {
    /// From `main` to the call of `run` (arguments, the image's kind).
    before_run: Duration,
    /// The call of `run`, teardown of the VM and its memory included.
    run: Duration,
    /// From `main` to now.
    total: Duration,
}

/// One line: where the time of this run went, from `main` on (what the
/// process does before `main`, and its exit, cannot be seen from here:
/// `eremite --version` costs about 1.5 ms on the development host).
fn breakdown(report: &Report, spans: &Spans) -> String {
    let t = &report.timings;
    let teardown = spans.run.saturating_sub(t.vmm_setup + t.guest_run);
    format!(
        "vmm setup {} (before it {}; image, RAM and tables {}, VM and vCPUs {}, \
         the rest {}), kernel init {}, time to main {}, guest run {} ({} exits), \
         teardown {}, total {}; {}",
        ms(t.vmm_setup),
        ms(spans.before_run),
        ms(t.load),
        ms(t.machine),
        ms(t.vmm_setup.saturating_sub(t.load + t.machine)),
        ms(t.kernel_init),
        ms(t.time_to_main),
        ms(t.guest_run),
        report.exits.total(),
        ms(teardown),
        ms(spans.total),
        report.confinement
    )
}

/// Exits by kind and the kernel's CPL0 entries by vector.
fn stats(report: &Report) -> String {
    let e = &report.exits;
    let mut out = String::from("eremite: VM exits\n");
    for (port, count) in Port::ALL.iter().zip(e.hypercalls) {
        out += &format!("  {:<24} {count:>8}\n", format!("hypercall {port:?}"));
    }
    out += &format!("  bad hypercall            {:>8}\n", e.bad_hypercalls);
    out += &format!("  other port I/O           {:>8}\n", e.other_io);
    out += &format!("  debugger traps           {:>8}\n", e.debug_traps);
    out += &format!("  device MMIO              {:>8}\n", e.device_mmio);
    out += &format!("  other MMIO               {:>8}\n", e.mmio);
    out += &format!("  interrupted              {:>8}\n", e.interrupted);
    out += &format!("  total                    {:>8}\n", e.total());
    let entries = &report.kernel.cpl0_entries;
    out += &format!(
        "eremite: CPL0 entries      {:>8}\n",
        entries.iter().sum::<u64>()
    );
    for (vector, count) in entries.iter().enumerate().filter(|(_, c)| **c > 0) {
        let name = match vector {
            v if v < 32 => format!("vector {v}"),
            CPL0_COUNTER_GATE => "gate: idle".to_owned(),
            CPL0_COUNTER_TLB_FLUSH => "gate: TLB flush".to_owned(),
            _ => "other interrupts".to_owned(),
        };
        out += &format!("  {name:<24} {count:>8}\n");
    }
    if let Some(program) = &report.linux {
        out += &linux_stats(program, &report.kernel);
    }
    if let Some(net) = &report.net {
        out += &net_stats(net);
    }
    out
}

/// A Linux program's system calls: how its sites were entered, and what
/// it asked for that the kernel does not implement.
fn linux_stats(program: &LinuxProgram, kernel: &KernelReport) -> String {
    let mut out = String::from("eremite: Linux system calls\n");
    out += &format!(
        "  sites rewritten          {:>8}\n",
        program.sites_rewritten
    );
    out += &format!("  sites left as syscall    {:>8}\n", program.sites_left);
    if program.interp_base != 0 || kernel.linux_sites_rewritten_later > 0 {
        out += &format!(
            "  rewritten when mapped    {:>8}\n",
            kernel.linux_sites_rewritten_later
        );
        out += &format!(
            "  left when mapped         {:>8}\n",
            kernel.linux_sites_left_later
        );
    }
    out += &format!("  calls by the trap path   {:>8}\n", kernel.linux_traps);
    let unknown: Vec<_> = kernel
        .linux_unknown
        .iter()
        .filter(|u| u.count > 0)
        .collect();
    if unknown.is_empty() {
        out += "  not implemented          (none asked for)\n";
    }
    for call in unknown {
        let name = format!(
            "{} ({}) ENOSYS",
            linux_syscalls::name(u64::from(call.number)),
            call.number
        );
        out += &format!("  {name:<24} {:>8}\n", call.count);
    }
    out
}

/// The network card's counters.
fn net_stats(net: &NetReport) -> String {
    let c = &net.counters;
    let mut out = format!("eremite: network card ({}, MAC {})\n", net.link, net.mac);
    for (name, count) in [
        ("frames sent", c.tx_frames),
        ("bytes sent", c.tx_bytes),
        ("frames received", c.rx_frames),
        ("bytes received", c.rx_bytes),
        ("sent frames dropped", c.tx_dropped),
        ("received frames dropped", c.rx_dropped),
        ("bad descriptor chains", c.bad_chains),
        ("host link errors", c.backend_errors),
        ("interrupts", net.interrupts),
        ("bad register accesses", net.bad_register_accesses),
    ] {
        out += &format!("  {name:<24} {count:>8}\n");
    }
    if let Some(failure) = &net.failure {
        out += &format!("  needed a reset: {failure}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    fn run_args(cli: Cli) -> RunArgs {
        match cli.command {
            Command::Run(args) => *args,
            Command::Switch { .. }
            | Command::Compat { .. }
            | Command::WriteUftrace { .. }
            | Command::Scenario(_)
            | Command::Experiment(_)
            | Command::Binfmt(_)
            | Command::New { .. }
            | Command::Vm(_)
            | Command::Restore(_) => {
                panic!("not parsed as `run`")
            }
        }
    }

    #[test]
    fn guest_arguments_follow_the_double_dash() {
        let cli = Cli::try_parse_from([
            "eremite", "run", "--memory", "128M", "-e", "A=1", "img", "--", "--exit", "3",
        ])
        .unwrap();
        let args = run_args(cli);
        assert_eq!(args.memory, Some(128 << 20));
        assert_eq!(args.env, ["A=1"]);
        assert_eq!(args.image(), PathBuf::from("img"));
        assert_eq!(args.guest_args(), ["--exit", "3"]);
    }

    #[test]
    fn initrd_takes_a_path() {
        let cli = Cli::try_parse_from(["eremite", "run", "--initrd", "root.tar", "img"]).unwrap();
        let args = run_args(cli);
        assert_eq!(args.initrd, Some(PathBuf::from("root.tar")));
        let cli = Cli::try_parse_from(["eremite", "run", "img"]).unwrap();
        let args = run_args(cli);
        assert_eq!(args.initrd, None);
        assert!(Cli::try_parse_from(["eremite", "run", "--initrd"]).is_err());
    }

    #[test]
    fn everything_after_the_image_goes_to_the_guest() {
        // As `cargo run -- a b` calls a runner: no `--` of eremite's own.
        for (line, expected) in [
            (&["img", "a", "--b", "-c"][..], &["a", "--b", "-c"][..]),
            (&["img", "--", "a", "b"], &["a", "b"]),
            (&["img", "--cpus", "2"], &["--cpus", "2"]),
            (&["img", "-v"], &["-v"]),
            (&["img"], &[]),
        ] {
            let cli = Cli::try_parse_from(["eremite", "run"].iter().chain(line)).unwrap();
            let args = run_args(cli);
            assert_eq!(args.image(), PathBuf::from("img"), "{line:?}");
            assert_eq!(args.guest_args(), expected, "{line:?}");
            assert_eq!(args.cpus, 1, "{line:?}");
        }
    }

    #[test]
    fn an_unknown_flag_before_the_image_is_a_usage_error() {
        let err = Cli::try_parse_from(["eremite", "run", "--no-such-flag", "img"])
            .err()
            .expect("a usage error");
        assert_eq!(err.exit_code(), 2, "{err}");
    }

    #[test]
    fn timeouts_take_a_unit_and_bad_ones_are_usage_errors() {
        for (text, ms) in [
            ("30s", 30_000),
            ("500ms", 500),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("1.5", 1500),
        ] {
            let cli = Cli::try_parse_from(["eremite", "run", "--timeout", text, "img"]).unwrap();
            let args = run_args(cli);
            assert_eq!(args.timeout, Some(Duration::from_millis(ms)), "{text}");
        }
        for bad in ["0", "-1s", "10x", "s", "", "1000000h"] {
            let err = Cli::try_parse_from(["eremite", "run", "--timeout", bad, "img"])
                .err()
                .expect("a usage error");
            assert_eq!(err.exit_code(), 2, "{bad:?}: {err}");
        }
    }

    #[test]
    fn cpus_out_of_range_are_usage_errors() {
        for bad in ["0", "17", "-1", "x"] {
            let err = Cli::try_parse_from(["eremite", "run", "--cpus", bad, "img"])
                .err()
                .expect("a usage error");
            assert_eq!(err.exit_code(), 2, "{bad}: {err}");
        }
    }

    #[test]
    fn mounts_are_parsed_and_bad_ones_are_usage_errors() {
        let dir = std::env::temp_dir();
        let (rw, ro) = (
            format!("{}:/data/", dir.display()),
            format!("{}:/etc/conf:ro", dir.display()),
        );
        let cli =
            Cli::try_parse_from(["eremite", "run", "--mount", &rw, "--mount", &ro, "img"]).unwrap();
        let args = run_args(cli);
        let got: Vec<_> = args
            .mount
            .iter()
            .map(|m| (m.host_dir.clone(), m.guest_path.as_str(), m.is_read_only))
            .collect();
        assert_eq!(
            got,
            [
                (dir.clone(), "/data", false),
                (dir.clone(), "/etc/conf", true)
            ]
        );
        for bad in [
            "nodir",
            &format!("{}:relative", dir.display()),
            &format!("{}:/", dir.display()),
        ] {
            let err = Cli::try_parse_from(["eremite", "run", "--mount", bad, "img"])
                .err()
                .expect("a usage error");
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
        }
        // A missing host directory is found when the VM starts (exit 125,
        // tests/tests/fs.rs), like a missing image.
        assert!(
            Cli::try_parse_from(["eremite", "run", "--mount", "/nonexistent-x:/d", "img"]).is_ok()
        );
    }

    #[test]
    fn network_flags_are_parsed_and_bad_ones_are_usage_errors() {
        let cli = Cli::try_parse_from([
            "eremite",
            "run",
            "--net",
            "tap:tap0,mac=02:00:00:00:00:01",
            "--ip",
            "10.0.0.2/24",
            "--gateway",
            "10.0.0.1",
            "img",
        ])
        .unwrap();
        let args = run_args(cli);
        let net = args.net.unwrap();
        assert_eq!(
            (net.link, net.mac.unwrap().to_string()),
            (
                eremite_vmm::Link::Tap("tap0".into()),
                "02:00:00:00:00:01".into()
            )
        );
        assert_eq!(args.ip, Some((Ipv4Addr::new(10, 0, 0, 2), 24)));
        assert_eq!(args.gateway, Some(Ipv4Addr::new(10, 0, 0, 1)));
        let kind = |args: &[&str]| {
            let mut all = vec!["eremite", "run"];
            all.extend_from_slice(args);
            all.push("img");
            Cli::try_parse_from(all)
                .err()
                .expect("a usage error")
                .kind()
        };
        use clap::error::ErrorKind::{MissingRequiredArgument, ValueValidation};
        for bad in ["tap0", "tap:", "tap:tap0,mac=01:00:00:00:00:01", "user:x"] {
            assert_eq!(kind(&["--net", bad]), ValueValidation, "{bad}");
        }
        for bad in ["10.0.0.2", "10.0.0.2/33", "0.0.0.0/8", "x/24"] {
            assert_eq!(
                kind(&["--net", "tap:t", "--ip", bad]),
                ValueValidation,
                "{bad}"
            );
        }
        assert_eq!(
            kind(&[
                "--net",
                "tap:t",
                "--ip",
                "10.0.0.2/24",
                "--gateway",
                "10.0.0.1/24"
            ]),
            ValueValidation
        );
        assert_eq!(kind(&["--ip", "10.0.0.2/24"]), MissingRequiredArgument);
        for bad in ["80:http", "0", "1:2:3:4", "80/sctp"] {
            assert_eq!(kind(&["-p", bad]), ValueValidation, "{bad}");
        }
        for bad in ["name", "a b:10.0.0.1", "db:host"] {
            assert_eq!(kind(&["--add-host", bad]), ValueValidation, "{bad}");
        }
        // -p alone is enough for --ip: it implies user-mode networking.
        let cli = Cli::try_parse_from([
            "eremite",
            "run",
            "-p",
            "8080:80",
            "-p",
            "5353:53/udp",
            "--ip",
            "10.1.0.5/16",
            "--add-host",
            "db:host-gateway",
            "img",
            "-p",
            "x",
        ])
        .unwrap();
        let args = run_args(cli);
        assert_eq!(args.publish.len(), 2);
        assert_eq!(args.add_host[0].name, "db");
        assert_eq!(
            args.guest_args(),
            ["-p", "x"],
            "after the image: the program's"
        );
        assert_eq!(
            kind(&["--net", "tap:t", "--gateway", "10.0.0.1"]),
            MissingRequiredArgument
        );
    }

    #[test]
    fn bad_memory_sizes_are_usage_errors() {
        for bad in ["lots", "4M", "9M", "32G"] {
            assert!(Cli::try_parse_from(["eremite", "run", "--memory", bad, "img"]).is_err());
        }
    }
}
