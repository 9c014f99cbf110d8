//! `--net switch:NAME`: VMs in several processes on one Ethernet segment,
//! with no root. The switch is a process of its own (`eremite switch
//! NAME`, which the first VM starts and which ends a few seconds after the
//! last VM has gone) listening on a Unix socket, `switch-NAME.sock` in
//! `$XDG_RUNTIME_DIR/eremite/` (or `/tmp/eremite-UID/`, mode 0700). Each
//! VM's card connects to it and sends and receives frames as QEMU's
//! stream netdev frames them (`stream`), so QEMU's `-netdev stream` could
//! join too.
//!
//! The switch learns which port each source address came from and sends
//! a frame for a known unicast address there, and any other frame to
//! every other port. Each port's output is a byte buffer of at most
//! [`MAX_QUEUED_BYTES`]: a frame that does not fit is dropped whole, so a
//! VM that floods, or one that stops reading, costs the others nothing
//! but its own lost frames, and the switch's memory stays bounded.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};

use super::stream::{Framed, LENGTH_BYTES, push_framed};
use super::{MAX_FRAME_BYTES, NetBackend};

/// A switch's output to one port, at most.
pub(crate) const MAX_QUEUED_BYTES: usize = 2 << 20;
/// Ports (VMs) on one switch, at most.
const MAX_PORTS: usize = 64;
/// Addresses learnt, at most (the table is cleared when full).
const MAX_ADDRESSES: usize = 4096;
/// Frames read from one port in one pass.
const PASS_FRAMES: usize = 64;
/// How long the switch waits for its first port, and lingers after its
/// last.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a VM waits for a switch it started to listen.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// A switch cannot be reached or run.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// Not a name the switch's socket can have.
    #[error(
        "switch name {0:?} must be 1 to 64 letters, digits, '-', '_' and '.', not starting with '.'"
    )]
    Name(String),
    /// The socket's directory cannot be made or used.
    #[error("cannot use {path}: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// No switch answers and none can be started.
    #[error("cannot reach switch {name} at {path}: {source}")]
    Connect {
        /// The switch's name.
        name: String,
        /// Its socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The switch's own loop failed.
    #[error("switch {name}: {source}")]
    Serve {
        /// The switch's name.
        name: String,
        /// Why.
        source: io::Error,
    },
}

/// Check a switch name: it becomes part of a file name.
pub(crate) fn check_switch_name(name: &str) -> Result<(), SwitchError> {
    let is_ok = (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if is_ok {
        Ok(())
    } else {
        Err(SwitchError::Name(name.to_owned()))
    }
}

/// Where switch `name` listens; its directory is made (0700) if missing.
pub fn switch_socket_path(name: &str) -> Result<PathBuf, SwitchError> {
    check_switch_name(name)?;
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(runtime) if !runtime.is_empty() => PathBuf::from(runtime).join("eremite"),
        _ => std::env::temp_dir().join(format!("eremite-{}", rustix::process::getuid().as_raw())),
    };
    let dir_error = |source| SwitchError::Directory {
        path: dir.clone(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(dir_error)?;
    // Someone else's directory of that name must not be used.
    let meta = std::fs::symlink_metadata(&dir).map_err(dir_error)?;
    let is_ours = meta.uid() == rustix::process::getuid().as_raw();
    if !meta.is_dir() || !is_ours || meta.permissions().mode() & 0o077 != 0 {
        return Err(dir_error(io::Error::other(
            "not a directory private to this user",
        )));
    }
    Ok(dir.join(format!("switch-{name}.sock")))
}

/// Make sure switch `name` runs, starting it with `program switch NAME`
/// when none listens: for a VM that joins it itself (QEMU's `-netdev
/// stream`), which must connect within a few seconds (the switch lingers
/// that long after its last port).
pub fn ensure_switch(name: &str, program: &Path) -> Result<(), SwitchError> {
    SwitchPort::connect(name, Some(program)).map(drop)
}

/// A VM's port on a switch.
#[derive(Debug)]
pub(crate) struct SwitchPort {
    name: String,
    link: Framed,
}

impl SwitchPort {
    /// Connect to switch `name`, starting it with `program switch NAME`
    /// (the `eremite` binary) when none listens.
    pub(crate) fn connect(name: &str, program: Option<&Path>) -> Result<Self, SwitchError> {
        let path = switch_socket_path(name)?;
        let connect_error = |source| SwitchError::Connect {
            name: name.to_owned(),
            path: path.clone(),
            source,
        };
        let stream = match UnixStream::connect(&path) {
            Ok(stream) => stream,
            Err(first) => {
                let Some(program) = program else {
                    return Err(connect_error(first));
                };
                // Its own process group: a Ctrl-C for this VM is not for
                // the switch the other VMs use. No standard streams: it
                // outlives this VM, and must not keep this VM's output
                // open (a pipe reader would wait for the switch to end).
                std::os::unix::process::CommandExt::process_group(
                    Command::new(program)
                        .args(["switch", name])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null()),
                    0,
                )
                .spawn()
                .map_err(connect_error)?;
                let deadline = Instant::now() + START_TIMEOUT;
                loop {
                    match UnixStream::connect(&path) {
                        Ok(stream) => break stream,
                        Err(_) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => return Err(connect_error(e)),
                    }
                }
            }
        };
        Ok(Self {
            name: name.to_owned(),
            link: Framed::new(stream).map_err(connect_error)?,
        })
    }

    fn gone(&self) -> io::Error {
        let message = format!("switch {} is gone", self.name);
        eprintln!("eremite: {message}; the guest's network is down");
        io::Error::new(ErrorKind::UnexpectedEof, message)
    }
}

impl NetBackend for SwitchPort {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.link.read_frame(buf).map_err(|e| match e.kind() {
            ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset => self.gone(),
            _ => e,
        })
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        self.link.send(frame).map_err(|e| match e.kind() {
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset => self.gone(),
            _ => e,
        })
    }

    fn ready_fd(&self) -> RawFd {
        self.link.socket.as_raw_fd()
    }
}

/// One VM's connection, as the switch sees it.
struct Port {
    link: Framed,
    /// Length-prefixed frames not yet written.
    out: Vec<u8>,
}

/// Run switch `name` until it has had no port for [`IDLE_TIMEOUT`].
/// Returns at once if another switch of that name already runs.
pub fn serve_switch(name: &str) -> Result<(), SwitchError> {
    let path = switch_socket_path(name)?;
    let serve_error = |source| SwitchError::Serve {
        name: name.to_owned(),
        source,
    };
    let listener = match UnixListener::bind(&path) {
        Ok(listener) => listener,
        Err(e) if e.kind() == ErrorKind::AddrInUse => {
            if UnixStream::connect(&path).is_ok() {
                return Ok(());
            }
            // A switch that died left its socket.
            std::fs::remove_file(&path).map_err(serve_error)?;
            UnixListener::bind(&path).map_err(serve_error)?
        }
        Err(e) => return Err(serve_error(e)),
    };
    listener.set_nonblocking(true).map_err(serve_error)?;
    // It serves the VMs of one user, any of which may be a guest that took
    // over its VMM: from here it only passes frames and removes its socket.
    crate::confine::confine_switch(&path).map_err(|e| serve_error(io::Error::other(e)))?;
    let mut switch = Switch::default();
    let mut idle_since = Instant::now();
    loop {
        if switch.ports.is_empty() && idle_since.elapsed() >= IDLE_TIMEOUT {
            // Only remove the socket if it is still ours.
            let _ = std::fs::remove_file(&path);
            return Ok(());
        }
        switch.pass(&listener).map_err(serve_error)?;
        if !switch.ports.is_empty() {
            idle_since = Instant::now();
        }
    }
}

/// The switch's state: its ports and the addresses it learnt.
struct Switch {
    ports: Vec<Port>,
    /// Source address → index into `ports`.
    addresses: HashMap<[u8; 6], usize>,
    /// Frames dropped because a port's output was full.
    dropped: u64,
    /// Where a frame is read to, reused.
    frame: Vec<u8>,
}

impl Default for Switch {
    fn default() -> Self {
        Self {
            ports: Vec::new(),
            addresses: HashMap::new(),
            dropped: 0,
            frame: vec![0; MAX_FRAME_BYTES],
        }
    }
}

impl Switch {
    /// Wait up to a second for something to do, then do it.
    fn pass(&mut self, listener: &UnixListener) -> io::Result<()> {
        let mut fds = vec![PollFd::new(listener, PollFlags::IN)];
        for port in &self.ports {
            let mut flags = PollFlags::IN;
            if !port.out.is_empty() {
                flags |= PollFlags::OUT;
            }
            fds.push(PollFd::new(&port.link.socket, flags));
        }
        let timeout = Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<PollFlags> = fds.iter().map(PollFd::revents).collect();
        drop(fds);
        if ready[0].contains(PollFlags::IN) {
            self.accept(listener);
        }
        let mut closed = Vec::new();
        for (index, flags) in ready[1..].iter().enumerate() {
            if flags.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR)
                && !self.forward_from(index)
            {
                closed.push(index);
            }
        }
        for port in &mut self.ports {
            flush(port);
        }
        for index in closed.into_iter().rev() {
            self.close(index);
        }
        Ok(())
    }

    fn accept(&mut self, listener: &UnixListener) {
        while let Ok((stream, _)) = listener.accept() {
            if self.ports.len() == MAX_PORTS {
                continue;
            }
            if let Ok(link) = Framed::new(stream) {
                self.ports.push(Port {
                    link,
                    out: Vec::new(),
                });
            }
        }
    }

    /// Forward what port `from` sent; `false` once it has gone.
    fn forward_from(&mut self, from: usize) -> bool {
        let mut frame = std::mem::take(&mut self.frame);
        let mut is_open = true;
        for _ in 0..PASS_FRAMES {
            match self.ports[from].link.read_frame(&mut frame) {
                Ok(len) => self.forward(from, &frame[..len]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    is_open = false;
                    break;
                }
            }
        }
        self.frame = frame;
        is_open
    }

    /// Send `frame`, which came from port `from`, where it goes.
    fn forward(&mut self, from: usize, frame: &[u8]) {
        let (Some(dst), Some(src)) = (frame.first_chunk::<6>(), frame.get(6..12)) else {
            return;
        };
        let src: [u8; 6] = src.try_into().unwrap_or_default();
        if src[0] & 1 == 0 {
            if self.addresses.len() == MAX_ADDRESSES && !self.addresses.contains_key(&src) {
                self.addresses.clear();
            }
            self.addresses.insert(src, from);
        }
        let known = (dst[0] & 1 == 0)
            .then(|| self.addresses.get(dst).copied())
            .flatten();
        match known {
            Some(to) if to == from => {}
            Some(to) => self.enqueue(to, frame),
            None => {
                for to in (0..self.ports.len()).filter(|&to| to != from) {
                    self.enqueue(to, frame);
                }
            }
        }
    }

    fn enqueue(&mut self, to: usize, frame: &[u8]) {
        let port = &mut self.ports[to];
        if port.out.len() + LENGTH_BYTES + frame.len() > MAX_QUEUED_BYTES {
            self.dropped += 1;
            return;
        }
        push_framed(&mut port.out, frame);
    }

    /// Forget port `index` and the addresses learnt on it.
    fn close(&mut self, index: usize) {
        self.ports.remove(index);
        self.addresses.retain(|_, port| *port != index);
        for port in self.addresses.values_mut() {
            if *port > index {
                *port -= 1;
            }
        }
    }
}

/// Write what `port`'s buffer holds, as far as its socket takes it.
fn flush(port: &mut Port) {
    while !port.out.is_empty() {
        match port.link.socket.write(&port.out) {
            Ok(0) => return,
            Ok(n) => {
                port.out.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Read;

    use super::*;

    fn frame(dst: [u8; 6], src: [u8; 6], fill: u8) -> Vec<u8> {
        let mut frame = dst.to_vec();
        frame.extend_from_slice(&src);
        frame.extend_from_slice(&[0x88, 0xb5]);
        frame.extend_from_slice(&[fill; 50]);
        frame
    }

    /// A switch with `n` ports and the test's ends of their sockets.
    fn switch_with(n: usize) -> (Switch, Vec<UnixStream>) {
        let mut switch = Switch::default();
        let mut ends = Vec::new();
        for _ in 0..n {
            let (ours, theirs) = UnixStream::pair().unwrap();
            switch.ports.push(Port {
                link: Framed::new(ours).unwrap(),
                out: Vec::new(),
            });
            ends.push(theirs);
        }
        (switch, ends)
    }

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
    const BROADCAST: [u8; 6] = [0xff; 6];

    #[test]
    fn unknown_and_broadcast_frames_flood_known_ones_go_to_their_port() {
        let (mut switch, _ends) = switch_with(3);
        switch.forward(0, &frame(BROADCAST, A, 1));
        assert!(switch.ports[0].out.is_empty(), "not back to its sender");
        assert_eq!(switch.ports[1].out.len(), 4 + 64);
        assert_eq!(switch.ports[2].out.len(), 4 + 64);
        // B answers A: A is known, on port 0.
        switch.forward(1, &frame(A, B, 2));
        assert_eq!(switch.ports[0].out.len(), 4 + 64);
        assert_eq!(switch.ports[2].out.len(), 4 + 64, "not flooded");
        // A to B: B was learnt on port 1.
        switch.forward(0, &frame(B, A, 3));
        assert_eq!(switch.ports[1].out.len(), 2 * (4 + 64));
        assert_eq!(switch.ports[2].out.len(), 4 + 64);
        // A port that goes forgets its addresses; the others move down.
        switch.close(0);
        assert_eq!(switch.addresses.get(&B), Some(&0));
        assert!(!switch.addresses.contains_key(&A));
    }

    #[test]
    fn a_port_that_does_not_read_loses_frames_not_the_others() {
        let (mut switch, _ends) = switch_with(2);
        let big = {
            let mut f = frame(BROADCAST, A, 0);
            f.resize(MAX_FRAME_BYTES, 7);
            f
        };
        for _ in 0..100 {
            switch.forward(0, &big);
        }
        assert!(switch.ports[1].out.len() <= MAX_QUEUED_BYTES);
        assert!(switch.dropped > 60, "{}", switch.dropped);
        // What is queued is whole frames.
        assert_eq!(switch.ports[1].out.len() % (4 + MAX_FRAME_BYTES), 0);
    }

    #[test]
    fn frames_cross_the_sockets_framed() {
        let (mut switch, mut ends) = switch_with(2);
        let sent = frame(BROADCAST, A, 9);
        let mut bytes = u32::try_from(sent.len()).unwrap().to_be_bytes().to_vec();
        bytes.extend_from_slice(&sent);
        ends[0].write_all(&bytes).unwrap();
        assert!(switch.forward_from(0));
        flush(&mut switch.ports[1]);
        let mut got = vec![0u8; bytes.len()];
        ends[1].read_exact(&mut got).unwrap();
        assert_eq!(got, bytes);
        drop(ends.remove(0));
        assert!(!switch.forward_from(0), "a closed port is gone");
    }

    #[test]
    fn names_are_checked() {
        for good in ["lab", "kv-bench_2", "a.b"] {
            assert!(check_switch_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_switch_name(bad).is_err(), "{bad}");
        }
    }
}
