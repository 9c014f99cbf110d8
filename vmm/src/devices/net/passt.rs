//! The user-mode backend: a `passt` process (Debian package `passt`,
//! <https://passt.top>) that the VMM starts for the VM and stops with it.
//! passt terminates the guest's TCP, UDP and ICMP in the host's own
//! sockets, so the guest reaches the host and whatever the host can reach
//! without root, a tap or a namespace; it listens on the published host
//! ports (`-t`, `-u`) and hands their connections to the guest; it maps
//! the gateway address to the host's loopback and forwards DNS queries
//! sent to the gateway to the host's resolver (`--dns-forward`).
//!
//! The two talk over a connected `AF_UNIX` stream pair whose far end passt
//! gets as `--fd`: passt exits when this end closes, so it cannot outlive
//! a VMM that is killed. Frames go as QEMU's stream netdev frames them
//! (`stream`).
//!
//! The guest's address, prefix and gateway are passt's `-a`, `-n`, `-g`,
//! the same values the VMM gives the guest's kernel; nothing needs DHCP.
//! passt's messages go to an anonymous file and are shown only when it
//! fails.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::PollFlags;
use rustix::fs::{MemfdFlags, memfd_create};
use rustix::io::{FdFlags, fcntl_setfd};
use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};

use super::publish::{PortProtocol, Publish};
use super::stream::{Framed, wait_for};
use super::{MAX_FRAME_BYTES, MacAddr, NetBackend};

/// The MTU offered to the guest (and told to passt): Ethernet's, not
/// passt's own default of 65520. With 64 KiB frames Debian 12's passt
/// (2023-03) lost track of its sequence numbers after the guest's window
/// had closed and stalled for seconds; at 1500 a 2 MB echo takes 0.13 s
/// instead of 5 s and a 100 MB download runs at twice the speed
/// (docs/network.md, "User-mode networking").
const MTU: u16 = 1500;
/// Socket buffers asked for on our end (the kernel may give less).
const SOCKET_BUFFER_BYTES: usize = 4 << 20;
/// How long passt may take to answer its first frame.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// How passt is to be run.
#[derive(Debug, Clone)]
pub(crate) struct PasstConfig<'a> {
    /// The guest's address and prefix length.
    pub(crate) address: Ipv4Addr,
    pub(crate) prefix_len: u8,
    /// The gateway: connections to it reach the host's loopback, DNS
    /// queries to it the host's resolver.
    pub(crate) gateway: Ipv4Addr,
    /// Where the host's resolver is, if not in `/etc/resolv.conf`.
    pub(crate) dns: Option<Ipv4Addr>,
    /// Published ports.
    pub(crate) publish: &'a [Publish],
    /// The card's address (used for the readiness probe).
    pub(crate) mac: MacAddr,
}

/// passt cannot be started or died.
#[derive(Debug, thiserror::Error)]
pub enum PasstError {
    /// Not installed.
    #[error(
        "user-mode networking needs passt, which is not installed (Debian: `apt install passt`)"
    )]
    Missing,
    /// A published host port is taken or cannot be bound.
    #[error("cannot publish {publish}: host port {}:{}: {source}", publish.host_addr, publish.host_port)]
    Port {
        /// The port.
        publish: Publish,
        /// Why (`EADDRINUSE`: in use).
        source: io::Error,
    },
    /// Starting it failed for another reason.
    #[error("cannot start passt: {0}")]
    Spawn(#[source] io::Error),
    /// It exited or did not answer.
    #[error("passt {0}")]
    Failed(String),
}

/// A running passt and our end of its socket.
#[derive(Debug)]
pub(crate) struct Passt {
    link: Framed,
    child: Child,
    /// passt's standard output and error.
    log: File,
}

impl Passt {
    /// Check the published ports, start passt and wait until it answers.
    #[cfg(test)]
    fn start(config: &PasstConfig<'_>) -> Result<Self, PasstError> {
        let mut passt = Self::spawn(config)?;
        passt.wait_ready(config)?;
        Ok(passt)
    }

    /// Check the published ports, start passt and send it a first frame;
    /// [`Self::wait_ready`] then waits for its answer (the VM can be set up
    /// in between).
    pub(crate) fn spawn(config: &PasstConfig<'_>) -> Result<Self, PasstError> {
        for publish in config.publish {
            check_port_free(publish).map_err(|source| PasstError::Port {
                publish: *publish,
                source,
            })?;
        }
        let (ours, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| PasstError::Spawn(e.into()))?;
        let log = memfd_create("passt-log", MemfdFlags::CLOEXEC)
            .map(File::from)
            .map_err(|e| PasstError::Spawn(e.into()))?;
        let mut command = Command::new("passt");
        command
            .args(["--foreground", "--quiet", "--ipv4-only", "--fd"])
            .arg(theirs.as_raw_fd().to_string())
            .args(passt_args(config))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().map_err(PasstError::Spawn)?))
            .stderr(Stdio::from(log.try_clone().map_err(PasstError::Spawn)?));
        // passt's end must survive its exec: clear close-on-exec just for
        // the spawn. (Only this thread starts processes while a VM is set
        // up, so no other child inherits it.)
        fcntl_setfd(&theirs, FdFlags::empty()).map_err(|e| PasstError::Spawn(e.into()))?;
        let child = command.spawn().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => PasstError::Missing,
            _ => PasstError::Spawn(e),
        })?;
        drop(theirs);
        let socket = UnixStream::from(ours);
        // Bigger buffers than the default ~200 KiB keep a fast stream
        // from stalling on the socket; smaller ones still work.
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(&socket, SOCKET_BUFFER_BYTES);
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&socket, SOCKET_BUFFER_BYTES);
        let mut passt = Self {
            link: Framed::new(socket).map_err(PasstError::Spawn)?,
            child,
            log,
        };
        // Who has the gateway's address? Once passt answers, it has set
        // up, bound the published ports and reads its socket.
        let request = arp_request(config.mac, config.address, config.gateway);
        if passt.link.send(&request).is_err() {
            return Err(passt.failure("exited as it started"));
        }
        Ok(passt)
    }

    /// Wait for passt's answer to the frame [`Self::spawn`] sent.
    pub(crate) fn wait_ready(&mut self, config: &PasstConfig<'_>) -> Result<(), PasstError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut frame = vec![0; MAX_FRAME_BYTES];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !wait_for(&self.link.socket, PollFlags::IN, left) {
                return Err(self.failure("did not answer within 5 s"));
            }
            match self.link.read_frame(&mut frame) {
                Ok(len) if is_arp_reply(&frame[..len], config.gateway) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Err(self.failure("exited as it started")),
            }
        }
    }

    /// What went wrong, with passt's exit status and its last messages.
    fn failure(&mut self, what: &str) -> PasstError {
        let deadline = Instant::now() + Duration::from_millis(200);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => break None,
            }
        };
        let mut text = String::new();
        let _ = self.log.rewind();
        let _ = self.log.read_to_string(&mut text);
        // passt also tries syslog and says it drops root: not the cause.
        let messages: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|line| {
                !line.is_empty()
                    && !line.starts_with("Failed to send")
                    && !line.starts_with("Don't run as root")
            })
            .collect();
        let mut message = match status {
            Some(status) => format!("{what} ({status})"),
            None => what.to_owned(),
        };
        if !messages.is_empty() {
            message += ": ";
            message += &messages[messages.len().saturating_sub(3)..].join("; ");
        }
        PasstError::Failed(message)
    }

    /// Describe passt's end for a dead link (it exited, most likely).
    fn dead(&mut self) -> io::Error {
        let message = self.failure("exited").to_string();
        eprintln!("eremite: {message}; the guest's network is down");
        io::Error::new(io::ErrorKind::UnexpectedEof, message)
    }
}

impl NetBackend for Passt {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.link.read_frame(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => self.dead(),
            _ => e,
        })
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        self.link.send(frame).map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => self.dead(),
            _ => e,
        })
    }

    fn ready_fd(&self) -> RawFd {
        self.link.socket.as_raw_fd()
    }

    fn mtu(&self) -> u16 {
        MTU
    }
}

impl Drop for Passt {
    fn drop(&mut self) {
        // The end of its stream ends passt, even when the kill cannot: a
        // VMM run as root has dropped CAP_KILL by now, and passt started
        // as root runs as nobody.
        let _ = self.link.socket.shutdown(std::net::Shutdown::Both);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// passt's options for `config`, after the fixed ones.
fn passt_args(config: &PasstConfig<'_>) -> Vec<String> {
    let mut args = vec![
        "--address".into(),
        config.address.to_string(),
        "--netmask".into(),
        config.prefix_len.to_string(),
        "--gateway".into(),
        config.gateway.to_string(),
        "--dns-forward".into(),
        config.gateway.to_string(),
        "--mtu".into(),
        MTU.to_string(),
    ];
    if let Some(dns) = config.dns {
        args.extend(["--dns".into(), dns.to_string()]);
    }
    for publish in config.publish {
        let flag = match publish.protocol {
            PortProtocol::Tcp => "--tcp-ports",
            PortProtocol::Udp => "--udp-ports",
        };
        args.push(flag.into());
        args.push(format!(
            "{}/{}:{}",
            publish.host_addr, publish.host_port, publish.guest_port
        ));
    }
    // Nothing published: passt's default is "none" for both.
    args
}

/// Whether the host port of `publish` can be bound (it is then released
/// for passt).
fn check_port_free(publish: &Publish) -> io::Result<()> {
    let addr = (publish.host_addr, publish.host_port);
    match publish.protocol {
        PortProtocol::Tcp => TcpListener::bind(addr).map(drop),
        PortProtocol::Udp => UdpSocket::bind(addr).map(drop),
    }
}

/// An ARP request (RFC 826) from `mac`/`sender` for `target`.
fn arp_request(mac: MacAddr, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::with_capacity(42);
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&mac.0);
    frame.extend_from_slice(&[0x08, 0x06]); // ARP
    frame.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet, IPv4, request
    frame.extend_from_slice(&mac.0);
    frame.extend_from_slice(&sender.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&target.octets());
    frame
}

/// Whether `frame` is an ARP reply for `target`.
fn is_arp_reply(frame: &[u8], target: Ipv4Addr) -> bool {
    frame.len() >= 42
        && frame[12..14] == [0x08, 0x06]
        && frame[20..22] == [0, 2]
        && frame[28..32] == target.octets()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn passt_gets_the_addresses_and_the_ports() {
        let publish = [
            super::super::parse_publish("8080:80").unwrap(),
            super::super::parse_publish("0.0.0.0:5353:53/udp").unwrap(),
        ];
        let config = PasstConfig {
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 0, 2, 2),
            dns: Some(Ipv4Addr::LOCALHOST),
            publish: &publish,
            mac: MacAddr::local(1),
        };
        assert_eq!(
            passt_args(&config).join(" "),
            "--address 10.0.2.15 --netmask 24 --gateway 10.0.2.2 --dns-forward 10.0.2.2 \
             --mtu 1500 --dns 127.0.0.1 --tcp-ports 127.0.0.1/8080:80 \
             --udp-ports 0.0.0.0/5353:53"
        );
    }

    fn user_config(publish: &[Publish]) -> PasstConfig<'_> {
        PasstConfig {
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 0, 2, 2),
            dns: None,
            publish,
            mac: MacAddr::local(9),
        }
    }

    #[test]
    fn passt_starts_listens_on_published_ports_and_ends_with_its_link() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let publish = [super::super::parse_publish(&format!("{port}:80")).unwrap()];
        let passt = Passt::start(&user_config(&publish)).unwrap_or_else(|e| panic!("{e}"));
        let pid = passt.child.id();
        // passt holds the port now.
        let taken = Passt::start(&user_config(&publish))
            .unwrap_err()
            .to_string();
        assert!(
            taken.contains(&format!(
                "cannot publish 127.0.0.1:{port}:80/tcp: host port"
            )) && taken.contains("in use"),
            "{taken}"
        );
        drop(passt);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "passt was reaped"
        );
        assert!(
            TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "and let the port go"
        );
    }

    #[test]
    fn arp_probe_and_reply_are_recognised() {
        let mac = MacAddr::local(7);
        let gateway = Ipv4Addr::new(10, 0, 2, 2);
        let request = arp_request(mac, Ipv4Addr::new(10, 0, 2, 15), gateway);
        assert_eq!(request.len(), 42);
        assert!(!is_arp_reply(&request, gateway), "a request is not a reply");
        let mut reply = request.clone();
        reply[20..22].copy_from_slice(&[0, 2]);
        reply[28..32].copy_from_slice(&gateway.octets());
        assert!(is_arp_reply(&reply, gateway));
        assert!(!is_arp_reply(&reply, Ipv4Addr::new(10, 0, 2, 3)));
        assert!(!is_arp_reply(&reply[..41], gateway));
    }
}
