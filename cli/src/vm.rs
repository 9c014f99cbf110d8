//! `eremite vm SOCKET ...` (the client of a VM's control socket, `--api`)
//! and `eremite restore DIR` (docs/snapshots.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

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
    },
}

/// `eremite restore DIR`.
#[derive(Args)]
pub(crate) struct RestoreArgs {
    /// The snapshot's directory (`eremite vm SOCKET snapshot DIR`).
    dir: PathBuf,
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
}

/// Send the command; print the VM's answer. Exit code 0 if it did it, 1
/// if it could not.
pub(crate) fn control(args: &VmArgs) -> ExitCode {
    let result = match &args.command {
        VmCommand::Status => eremite_vmm::api::request(&args.socket, "status", &[]),
        VmCommand::Pause => eremite_vmm::api::request(&args.socket, "pause", &[]),
        VmCommand::Resume => eremite_vmm::api::request(&args.socket, "resume", &[]),
        VmCommand::Stop => eremite_vmm::api::request(&args.socket, "stop", &[]),
        VmCommand::Snapshot { dir, stop } => snapshot(&args.socket, dir, *stop),
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
fn snapshot(socket: &Path, dir: &Path, stop: bool) -> Result<String, eremite_vmm::api::ApiError> {
    let io = |path: &Path, source| eremite_vmm::api::ApiError::Socket {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let create = |name: &str| {
        let path = dir.join(name);
        std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| io(&path, e))
    };
    let state = create("state")?;
    let memory = create("memory")?;
    let request = if stop { "snapshot stop" } else { "snapshot" };
    let answer = eremite_vmm::api::request(socket, request, &[&state, &memory]);
    if answer.is_err() {
        let _ = std::fs::remove_file(dir.join("state"));
        let _ = std::fs::remove_file(dir.join("memory"));
    }
    answer
}

/// Restore and run to the end; exit codes as `eremite run`'s.
pub(crate) fn restore(args: &RestoreArgs) -> ExitCode {
    let config = RestoreConfig {
        dir: args.dir.clone(),
        api: args.api.clone(),
        timeout: args.timeout,
        pin_vcpus: args
            .pin_vcpus
            .as_ref()
            .map(|c| c.0.clone())
            .unwrap_or_default(),
        is_confined: true,
    };
    let mut console = Console::host(false);
    match eremite_vmm::restore(&config, &mut console) {
        Ok(report) => {
            if let Some(message) = report.outcome.failure_message() {
                eprintln!("eremite: {message}");
            }
            ExitCode::from(report.outcome.exit_code())
        }
        Err(error) => {
            eprintln!("eremite: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
