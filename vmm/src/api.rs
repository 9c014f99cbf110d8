//! The control socket of a running VM (`eremite run --api SOCKET`) and its
//! client (`eremite vm SOCKET COMMAND`).
//!
//! A Unix stream socket; a client connects, sends one line and reads one
//! line back, then the server closes the connection. Commands:
//! `status`, `pause`, `resume`, `stop`, and `snapshot [diff] [stop]`,
//! which comes with two descriptors (`SCM_RIGHTS`): the snapshot's `state`
//! and `memory` files, created by the client (`crate::snapshot`). Answers
//! are `ok ...` or `error: ...`. One client is served at a time; a client
//! that sends nothing within [`REQUEST_TIMEOUT`] is dropped.
//!
//! The server runs on a thread of its own from the moment the vCPUs run
//! ([`serve`]), confined like the others (`confine`, `ThreadKind::Api`).

use std::io::{IoSlice, IoSliceMut, Write as _};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};

use eremite_interface::errno;

use crate::kvm::HostStop;
use crate::kvm::control::{CpuAtPause, PausedClock, VmControl};
use crate::memory::GuestRam;
use crate::snapshot::{self, PageHashes, SavedCpu, State};

/// How long the server waits for a connected client's request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest request line.
const MAX_REQUEST: usize = 256;

/// The control socket could not be made or reached.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{}: another VM's control socket is there and answers", .0.display())]
    InUse(PathBuf),
    #[error("{}: {source}", path.display())]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no VM answers there ({source})", path.display())]
    NoVm {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
}

/// Listen on `path`. A socket file left by a VM that is gone is replaced;
/// one a live VM answers on is not.
pub(crate) fn bind(path: &Path) -> Result<UnixListener, ApiError> {
    let socket_error = |source| ApiError::Socket {
        path: path.to_owned(),
        source,
    };
    match UnixListener::bind(path) {
        Ok(listener) => Ok(listener),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            use std::os::unix::fs::FileTypeExt as _;
            let is_socket = std::fs::symlink_metadata(path)
                .map_err(socket_error)?
                .file_type()
                .is_socket();
            if !is_socket || UnixStream::connect(path).is_ok() {
                return Err(if is_socket {
                    ApiError::InUse(path.to_owned())
                } else {
                    socket_error(std::io::Error::other("exists and is not a socket"))
                });
            }
            std::fs::remove_file(path).map_err(socket_error)?;
            UnixListener::bind(path).map_err(socket_error)
        }
        Err(e) => Err(socket_error(e)),
    }
}

/// What a snapshot of this VM records besides what the pause gives.
pub(crate) struct SnapshotTemplate {
    pub(crate) ram: GuestRam,
    pub(crate) cpu_features: String,
    pub(crate) tsc_khz: u64,
    pub(crate) image: PathBuf,
    pub(crate) is_verbose: bool,
    pub(crate) mounts: Vec<crate::MountSpec>,
    /// Why this VM cannot be snapshotted, if it cannot.
    pub(crate) unsupported: Option<String>,
    /// Where the guest's own snapshots go (`--snapshot-to`): `state`,
    /// `memory`.
    pub(crate) guest_files: Option<(std::fs::File, std::fs::File)>,
}

/// Serve the control socket (if there is one) and the guest's snapshot
/// requests until the VM ends.
pub(crate) fn serve(
    listener: Option<&UnixListener>,
    control: &dyn VmControl,
    template: &SnapshotTemplate,
) {
    if let Err(error) = crate::confine::enter(crate::confine::ThreadKind::Api) {
        eprintln!("eremite: the control socket is off: {error}");
        return;
    }
    let mut server = Server {
        control,
        template,
        paused: None,
        last: None,
    };
    let (ended, requested) = (control.ended(), control.requested());
    loop {
        let mut fds = vec![
            PollFd::new(&ended, PollFlags::IN),
            PollFd::new(&requested, PollFlags::IN),
        ];
        if let Some(listener) = listener {
            fds.push(PollFd::new(listener, PollFlags::IN));
        }
        if poll(&mut fds, None).is_err() {
            continue;
        }
        if !fds[0].revents().is_empty() {
            return;
        }
        if !fds[1].revents().is_empty() {
            server.serve_guest_request();
            continue;
        }
        let Some(Ok((stream, _))) = listener
            .filter(|_| fds.get(2).is_some_and(|fd| !fd.revents().is_empty()))
            .map(UnixListener::accept)
        else {
            continue;
        };
        let answer = match read_request(&stream) {
            Ok((line, files)) => server.answer(&line, files),
            Err(error) => format!("error: {error}"),
        };
        let mut stream = stream;
        let _ = stream.write_all(format!("{answer}\n").as_bytes());
    }
}

/// One request line, and the descriptors that came with it.
fn read_request(stream: &UnixStream) -> std::io::Result<(String, Vec<OwnedFd>)> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut line = Vec::new();
    let mut files = Vec::new();
    while !line.contains(&b'\n') {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(stream, PollFlags::IN)];
        let timeout = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        });
        if poll(&mut fds, Some(&timeout))? == 0 {
            return Err(std::io::Error::other("no request within 2 s"));
        }
        let mut buf = [0u8; MAX_REQUEST];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut ancillary = RecvAncillaryBuffer::new(&mut space);
        let got = recvmsg(
            stream,
            &mut [IoSliceMut::new(&mut buf)],
            &mut ancillary,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        for message in ancillary.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                files.extend(received);
            }
        }
        if got.bytes == 0 {
            return Err(std::io::Error::other("the request ended without a newline"));
        }
        line.extend_from_slice(&buf[..got.bytes]);
        if line.len() > MAX_REQUEST {
            return Err(std::io::Error::other("request too long"));
        }
    }
    let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
    let line = String::from_utf8_lossy(&line[..end]).trim().to_owned();
    Ok((line, files))
}

/// The server's memory between requests.
struct Server<'a> {
    control: &'a dyn VmControl,
    template: &'a SnapshotTemplate,
    /// Where the clocks stood at the pause asked with `pause`.
    paused: Option<PausedClock>,
    /// The last snapshot this run wrote: its identity and its pages, what
    /// a `--diff` snapshot is a difference from.
    last: Option<(String, PageHashes)>,
}

/// Why no snapshot was written.
enum NotWritten {
    /// This VM, or this request, cannot be snapshotted.
    Unsupported(String),
    /// Writing it failed.
    Failed(String),
}

impl NotWritten {
    fn errno(&self) -> errno::Errno {
        match self {
            Self::Unsupported(_) => errno::EOPNOTSUPP,
            Self::Failed(_) => errno::EIO,
        }
    }

    fn message(&self) -> &str {
        match self {
            Self::Unsupported(message) | Self::Failed(message) => message,
        }
    }
}

impl Server<'_> {
    /// Carry out one request; the answer line.
    fn answer(&mut self, line: &str, files: Vec<OwnedFd>) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        let result = match words.as_slice() {
            ["status"] => Ok(if self.control.is_paused() {
                "paused".to_owned()
            } else {
                "running".to_owned()
            }),
            ["pause"] => self
                .control
                .pause()
                .map(|clock| {
                    self.paused = Some(clock);
                    "paused".to_owned()
                })
                .map_err(|e| e.to_string()),
            ["resume"] => self
                .control
                .resume()
                .map(|()| {
                    self.paused = None;
                    "running".to_owned()
                })
                .map_err(|e| e.to_string()),
            ["stop"] => {
                self.control.stop(HostStop::Control);
                Ok("stopping".to_owned())
            }
            ["snapshot", flags @ ..] if flags.iter().all(|f| ["stop", "diff"].contains(f)) => {
                self.take_snapshot(files, flags.contains(&"stop"), flags.contains(&"diff"))
            }
            _ => Err(format!(
                "unknown request {:?} (status, pause, resume, stop, snapshot [diff] [stop])",
                line.chars().take(40).collect::<String>()
            )),
        };
        match result {
            Ok(text) => format!("ok {text}"),
            Err(text) => format!("error: {text}"),
        }
    }

    /// The guest asked for a snapshot (`Port::Snapshot`): once every vCPU
    /// has parked, write it into `--snapshot-to`'s files, answer the guest
    /// (its request reads "restored" in the snapshot itself, "taken" once
    /// the VM goes on) and go on or stop.
    fn serve_guest_request(&mut self) {
        let Some(taken) = self.control.take_guest_request() else {
            return;
        };
        let Ok((request, clock)) = taken else {
            // The VM ended, or the vCPUs would not stop: nothing to answer.
            return;
        };
        let result_at = request.addr
            + core::mem::offset_of!(eremite_interface::hypercall::Snapshot, result) as u64;
        let ram = &self.template.ram;
        let answer = |value: i64| {
            // The request struct was checked to lie in RAM when decoded.
            let _ = ram.write(result_at, &value.to_le_bytes());
        };
        answer(eremite_interface::hypercall::Snapshot::RESTORED);
        let written = match &self.template.guest_files {
            None => Err(NotWritten::Unsupported("no --snapshot-to".to_owned())),
            Some((state, memory)) => {
                self.write_snapshot((state, memory), &clock, request.stop, false)
            }
        };
        match written {
            Ok(_) if request.stop => self.control.stop(HostStop::Snapshot),
            Ok(_) => {
                answer(0);
                let _ = self.control.resume();
            }
            Err(error) => {
                eprintln!(
                    "eremite: the guest's snapshot was not written: {}",
                    error.message()
                );
                answer(-i64::from(error.errno().0));
                let _ = self.control.resume();
            }
        }
    }

    /// Pause (unless paused), write the snapshot into `files` (state,
    /// memory), then resume (unless it was paused) or stop.
    fn take_snapshot(
        &mut self,
        files: Vec<OwnedFd>,
        then_stop: bool,
        is_diff: bool,
    ) -> Result<String, String> {
        let [state_fd, memory_fd]: [OwnedFd; 2] = files
            .try_into()
            .map_err(|_| "a snapshot needs its state and memory files".to_owned())?;
        let (state_file, memory_file) = (
            std::fs::File::from(state_fd),
            std::fs::File::from(memory_fd),
        );
        let started = Instant::now();
        let was_paused = self.paused.is_some();
        let clock = match self.paused {
            Some(clock) => clock,
            None => self.control.pause().map_err(|e| e.to_string())?,
        };
        let result = self.write_snapshot((&state_file, &memory_file), &clock, then_stop, is_diff);
        if result.is_ok() && then_stop {
            self.control.stop(HostStop::Snapshot);
        } else if !was_paused {
            let _ = self.control.resume();
        }
        let written = result.map_err(|e| e.message().to_owned())?;
        Ok(format!(
            "snapshot: {} KiB of memory written in {} ms{}{}",
            written / 1024,
            started.elapsed().as_millis(),
            if is_diff { " (a difference)" } else { "" },
            if then_stop { ", the VM stops" } else { "" }
        ))
    }

    /// Write the snapshot of the paused VM (a difference from the last one
    /// with `is_diff`), its devices stopped meanwhile and serving again
    /// after, unless it was written and the VM `stops`. Returns the bytes
    /// of memory written.
    fn write_snapshot(
        &mut self,
        (state_file, memory_file): (&std::fs::File, &std::fs::File),
        clock: &PausedClock,
        stops: bool,
        is_diff: bool,
    ) -> Result<u64, NotWritten> {
        if let Some(why) = &self.template.unsupported {
            return Err(NotWritten::Unsupported(format!(
                "the VM cannot be snapshotted: {why}"
            )));
        }
        let host_files = self.control.host_files().map_err(NotWritten::Unsupported)?;
        let previous = match (is_diff, &self.last) {
            (false, _) => None,
            (true, Some(last)) => Some(last),
            (true, None) => {
                return Err(NotWritten::Unsupported(
                    "--diff: this run has written no snapshot to be a difference from".into(),
                ));
            }
        };
        let cards = self.control.suspend_devices();
        let written = write_files(
            state_file,
            memory_file,
            self.control,
            self.template,
            clock,
            (cards, host_files),
            previous,
        );
        if written.is_err() || !stops {
            self.control.resume_devices();
        }
        let (bytes, last) = written.map_err(NotWritten::Failed)?;
        self.last = Some(last);
        Ok(bytes)
    }
}

/// Write the state and memory files; the bytes of memory written, and the
/// snapshot's identity and pages.
fn write_files(
    state_file: &std::fs::File,
    memory_file: &std::fs::File,
    control: &dyn VmControl,
    template: &SnapshotTemplate,
    clock: &PausedClock,
    (cards, host_files): (Vec<crate::devices::SavedCard>, crate::sandbox::SavedFiles),
    previous: Option<&(String, PageHashes)>,
) -> Result<(u64, (String, PageHashes)), String> {
    let cpus = control
        .cpus()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|cpu| match cpu {
            CpuAtPause::Waiting => SavedCpu::Waiting,
            CpuAtPause::Parked(state) => SavedCpu::Running(state),
        })
        .collect();
    let io = |e: std::io::Error| format!("cannot write the snapshot: {e}");
    let written =
        snapshot::write_memory(&template.ram, memory_file, previous.map(|(_, h)| h)).map_err(io)?;
    let state = State {
        interface_version: eremite_interface::INTERFACE_VERSION,
        eremite_version: env!("CARGO_PKG_VERSION").to_owned(),
        cpu_features: template.cpu_features.clone(),
        tsc_khz: template.tsc_khz,
        frozen_ticks: clock.frozen_ticks(),
        memory_bytes: template.ram.layout().total_bytes(),
        memory_file_bytes: snapshot::memory_file_bytes(&template.ram),
        image: template.image.clone(),
        is_verbose: template.is_verbose,
        mounts: template.mounts.clone(),
        cpus,
        cards,
        host_files,
        diff: previous.map(|(parent, _)| snapshot::Diff {
            parent: parent.clone(),
            changed: written.changed,
        }),
    };
    let bytes = state.to_file_bytes();
    state_file.set_len(0).map_err(io)?;
    state_file.write_all_at(&bytes, 0).map_err(io)?;
    memory_file.sync_all().map_err(io)?;
    state_file.sync_all().map_err(io)?;
    Ok((written.bytes, (snapshot::state_id(&bytes), written.hashes)))
}

/// Send `request` (one line) to the VM at `socket`, with `files`, and
/// return its answer: `Ok` with what follows `ok `, `Err(Refused)` with
/// what follows `error: `.
pub fn request(socket: &Path, request: &str, files: &[&std::fs::File]) -> Result<String, ApiError> {
    let stream = UnixStream::connect(socket).map_err(|source| ApiError::NoVm {
        path: socket.to_owned(),
        source,
    })?;
    let io = |source| ApiError::Socket {
        path: socket.to_owned(),
        source,
    };
    let line = format!("{request}\n");
    let fds: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !ancillary.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(ApiError::Refused("too many files for one request".into()));
    }
    sendmsg(
        &stream,
        &[IoSlice::new(line.as_bytes())],
        &mut ancillary,
        SendFlags::empty(),
    )
    .map_err(|e| io(e.into()))?;
    let mut answer = String::new();
    use std::io::Read as _;
    (&stream)
        .take(64 * 1024)
        .read_to_string(&mut answer)
        .map_err(io)?;
    let answer = answer.trim_end();
    if let Some(ok) = answer.strip_prefix("ok ") {
        Ok(ok.to_owned())
    } else if let Some(error) = answer.strip_prefix("error: ") {
        Err(ApiError::Refused(error.to_owned()))
    } else {
        Err(ApiError::Refused(format!(
            "the VM ended before it answered{}",
            if answer.is_empty() {
                String::new()
            } else {
                format!(": {answer}")
            }
        )))
    }
}
