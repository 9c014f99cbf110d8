//! `eremite vm SOCKET ...` (the client of a VM's control socket, `--api`)
//! and `eremite restore DIR` (docs/snapshots.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use eremite_vmm::{Console, RestoreConfig};

/// `eremite vm SOCKET COMMAND`.
#[derive(Args)]
pub(crate) struct VmArgs {
    /// The control socket the VM was started with (`--api PATH`).
    socket: PathBuf,
    #[command(subcommand)]
    command: VmCommand,
}

#[derive(Subcommand)]
enum VmCommand {
    /// Say whether the VM runs or is paused.
    Status,
    /// Stop every vCPU until `resume`; the guest's clocks leave the pause
    /// out.
    Pause,
    /// Let a paused VM go on.
    Resume,
    /// End the run (eremite run exits with 0).
    Stop,
    /// Write the VM's memory and state into DIR (made if missing); the VM
    /// goes on (or stays paused), or stops with --stop.
    Snapshot {
        /// The snapshot's directory: `state` and `memory` go in it.
        dir: PathBuf,
        /// Stop the VM once the snapshot is written.
        #[arg(long)]
        stop: bool,
        /// Write only the pages that changed since this run's last
        /// snapshot (restore with `eremite restore BASE DIFF...`).
        #[arg(long)]
        diff: bool,
    },
}

/// `eremite restore DIR`.
#[derive(Args)]
pub(crate) struct RestoreArgs {
    /// The snapshot's directory (`eremite vm SOCKET snapshot DIR`).
    dir: PathBuf,
    /// `--diff` snapshots taken after it, in order: the VM goes on from
    /// the last.
    diffs: Vec<PathBuf>,
    /// Serve a control socket at PATH, as `eremite run --api`.
    #[arg(long, value_name = "PATH")]
    api: Option<PathBuf>,
    /// Stop the guest if it is still running after this long, as `eremite
    /// run --timeout`: exit code 124.
    #[arg(long, value_name = "DURATION", value_parser = crate::parse_duration)]
    timeout: Option<Duration>,
    /// Pin the vCPU threads to these host CPUs, as `eremite run
    /// --pin-vcpus`.
    #[arg(long, value_name = "HOST_CPUS", value_parser = crate::parse_host_cpus)]
    pin_vcpus: Option<crate::HostCpus>,
    /// The link for the snapshot's network card, as `eremite run --net`
    /// (needed when it had one; it keeps its MAC address, and the guest its
    /// IP configuration).
    #[arg(long, value_name = "LINK", value_parser = eremite_vmm::parse_net_spec)]
    net: Option<eremite_vmm::NetSpec>,
    /// Show the kernel's log and where the time to the first instruction
    /// went, on stderr.
    #[arg(long, short = 'v')]
    verbose: bool,
}

/// Send the command; print the VM's answer. Exit code 0 if it did it, 1
/// if it could not.
pub(crate) fn control(args: &VmArgs) -> ExitCode {
    let result = match &args.command {
        VmCommand::Status => eremite_vmm::api::request(&args.socket, "status", &[]),
        VmCommand::Pause => eremite_vmm::api::request(&args.socket, "pause", &[]),
        VmCommand::Resume => eremite_vmm::api::request(&args.socket, "resume", &[]),
        VmCommand::Stop => eremite_vmm::api::request(&args.socket, "stop", &[]),
        VmCommand::Snapshot { dir, stop, diff } => snapshot(&args.socket, dir, *stop, *diff),
    };
    match result {
        Ok(answer) => {
            println!("{answer}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("eremite: {error}");
            ExitCode::from(1)
        }
    }
}

/// Create DIR's two files and hand them to the VM, which writes them (it
/// cannot open files itself: it is confined). A snapshot that fails
/// leaves no state file, so nothing can restore half of it.
fn snapshot(
    socket: &Path,
    dir: &Path,
    stop: bool,
    diff: bool,
) -> Result<String, eremite_vmm::api::ApiError> {
    let (state, memory) = eremite_vmm::create_snapshot_files(dir)
        .map_err(|e| eremite_vmm::api::ApiError::Refused(format!("{}: {e}", dir.display())))?;
    let request = format!(
        "snapshot{}{}",
        if diff { " diff" } else { "" },
        if stop { " stop" } else { "" }
    );
    let answer = eremite_vmm::api::request(socket, &request, &[&state, &memory]);
    if answer.is_err() {
        let _ = std::fs::remove_file(dir.join("state"));
        let _ = std::fs::remove_file(dir.join("memory"));
    }
    answer
}

/// Restore and run to the end; exit codes as `eremite run`'s.
pub(crate) fn restore(args: &RestoreArgs, started: Instant) -> ExitCode {
    let config = RestoreConfig {
        dir: args.dir.clone(),
        diffs: args.diffs.clone(),
        api: args.api.clone(),
        timeout: args.timeout,
        pin_vcpus: args
            .pin_vcpus
            .as_ref()
            .map(|c| c.0.clone())
            .unwrap_or_default(),
        is_confined: true,
        net: args.net.clone(),
    };
    let mut console = Console::host(args.verbose);
    let called = Instant::now();
    match eremite_vmm::restore(&config, &mut console) {
        Ok(report) => {
            if let Some(message) = report.outcome.failure_message() {
                eprintln!("eremite: {message}");
            }
            if args.verbose {
                let t = &report.timings;
                let before = called - started;
                eprintln!(
                    "eremite: restore: first instruction after {} (before the VMM {}; state, \
                     memory and mounts {}, VM and vCPUs {}, the rest {}), guest run {}, \
                     teardown {}, total {}",
                    crate::ms(before + t.vmm_setup),
                    crate::ms(before),
                    crate::ms(t.load),
                    crate::ms(t.machine),
                    crate::ms(t.vmm_setup.saturating_sub(t.load + t.machine)),
                    crate::ms(t.guest_run),
                    crate::ms(called.elapsed().saturating_sub(t.vmm_setup + t.guest_run)),
                    crate::ms(started.elapsed()),
                );
            }
            ExitCode::from(report.outcome.exit_code())
        }
        Err(error) => {
            eprintln!("eremite: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
