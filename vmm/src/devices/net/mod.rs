//! The virtio network device (virtio 1.2 §5.1).
//!
//! [`Net`] is a [`VirtioDevice`] with one receive queue (0) and one transmit
//! queue (1). It offers `VIRTIO_F_VERSION_1`, `VIRTIO_NET_F_MAC`,
//! `VIRTIO_NET_F_MTU` (the backend's, e.g. the tap's: frames up to 64 KiB
//! when the tap has a jumbo MTU), `VIRTIO_NET_F_STATUS` (the link is
//! always up), `VIRTIO_NET_F_GUEST_CSUM` (the device checks received TCP
//! and UDP checksums and says so with `DATA_VALID`, `checksum`) and
//! `VIRTIO_F_EVENT_IDX`; no other offloads and no mergeable receive buffers, so
//! every buffer starts with a 12-byte `virtio_net_hdr` the device ignores
//! on transmit and zeroes (with `num_buffers` 1) on receive (§5.1.6).
//!
//! When the driver sets `DRIVER_OK`, [`Net`] starts a worker thread
//! (`worker`) that owns the queues and the [`NetBackend`] and waits in
//! epoll for the queues' notification events, the backend and a stop
//! event; a reset or the end of the VM stops and joins it, and the backend
//! comes back for the next activation. The backends are [`Tap`] (a host tap
//! interface, `tap`), [`Passt`] (user-mode networking through a `passt`
//! process, `passt`), both behind [`HostLink`], and, in tests, an
//! in-memory one. `spec` parses the `--net` flag, `publish` the `-p` and
//! `--add-host` flags of user-mode networking.

mod checksum;
mod passt;
mod publish;
mod spec;
mod stream;
mod switch;
mod tap;
mod worker;

#[cfg(test)]
mod tests;

use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS,
    VIRTIO_NET_S_LINK_UP,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::QueueT;
use vmm_sys_util::eventfd::EventFd;

use super::{
    ActivateError, Activation, ActiveQueue, Interrupt, QueuePosition, VirtioDevice, new_event,
    read_config_bytes,
};
use crate::affinity::Placement;
use crate::confine::{self, ThreadKind};
use crate::memory::GuestRam;
pub use passt::PasstError;
pub(crate) use passt::{Passt, PasstConfig};
pub use publish::{
    HostAddr, HostEntry, PortProtocol, Publish, PublishError, parse_host_entry, parse_publish,
};
pub use spec::{Link, MacAddr, NetSpec, NetSpecError, parse_net_spec};
pub(crate) use switch::SwitchPort;
pub use switch::{SwitchError, ensure_switch, serve_switch, switch_socket_path};
pub(crate) use tap::Tap;
pub use tap::TapError;
use worker::{Finished, Worker, WorkerFault};

/// Queue indices (§5.1.2).
const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
/// Size of each queue.
const QUEUE_SIZE: u16 = 256;
/// `struct virtio_net_hdr` with `VIRTIO_F_VERSION_1` (§5.1.6).
const NET_HDR_BYTES: usize = 12;
/// Offset of `num_buffers` in the header.
const NUM_BUFFERS_OFFSET: usize = 10;
/// Largest frame either way: a 64 KiB IP packet and its Ethernet header.
const MAX_FRAME_BYTES: usize = 65_550;
/// Smallest frame sent: an Ethernet header.
const MIN_FRAME_BYTES: usize = 14;
/// Smallest receive buffer taken: with neither mergeable buffers nor
/// receive offloads the driver should post at least 1526 bytes
/// (§5.1.6.3.1), a header and a 1514-byte frame. Smaller chains are
/// returned unused, so they cannot hold up the queue.
const MIN_RX_BUFFER_BYTES: u64 = 1526;

/// Bytes of `struct virtio_net_config` the device fills in: up to `mtu`.
const CONFIG_BYTES: usize = 12;

/// `status` in the configuration space: `VIRTIO_NET_S_LINK_UP` (1).
#[allow(clippy::cast_possible_truncation)]
const LINK_UP: u16 = VIRTIO_NET_S_LINK_UP as u16;

/// Where the device's frames go and come from.
pub(crate) trait NetBackend: Send + 'static {
    /// Read one frame into `buf`; `ErrorKind::WouldBlock` when none waits.
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Send one frame.
    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()>;
    /// A descriptor that polls readable when frames arrive; the worker
    /// watches it edge-triggered and reads until `WouldBlock`.
    fn ready_fd(&self) -> RawFd;
    /// The link's MTU, offered to the driver (`VIRTIO_NET_F_MTU`).
    fn mtu(&self) -> u16 {
        1500
    }
}

/// The host end of a card: one of the backends `--net` chooses.
#[derive(Debug)]
pub(crate) enum HostLink {
    /// `tap:NAME`.
    Tap(Tap),
    /// `user`.
    Passt(Passt),
    /// `switch:NAME`.
    Switch(SwitchPort),
}

impl NetBackend for HostLink {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tap(tap) => tap.read_frame(buf),
            Self::Passt(passt) => passt.read_frame(buf),
            Self::Switch(port) => port.read_frame(buf),
        }
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        match self {
            Self::Tap(tap) => tap.write_frame(frame),
            Self::Passt(passt) => passt.write_frame(frame),
            Self::Switch(port) => port.write_frame(frame),
        }
    }

    fn ready_fd(&self) -> RawFd {
        match self {
            Self::Tap(tap) => tap.ready_fd(),
            Self::Passt(passt) => passt.ready_fd(),
            Self::Switch(port) => port.ready_fd(),
        }
    }

    fn mtu(&self) -> u16 {
        match self {
            Self::Tap(tap) => tap.mtu(),
            Self::Passt(passt) => passt.mtu(),
            Self::Switch(port) => port.mtu(),
        }
    }
}

/// What the device did, for `--stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Frames sent to the backend.
    pub tx_frames: u64,
    /// Their bytes (without the virtio-net header).
    pub tx_bytes: u64,
    /// Transmit chains whose frame was shorter than an Ethernet header or
    /// longer than 65 550 bytes.
    pub tx_dropped: u64,
    /// Frames given to the guest.
    pub rx_frames: u64,
    /// Their bytes (without the virtio-net header).
    pub rx_bytes: u64,
    /// Frames that did not fit the guest's buffer.
    pub rx_dropped: u64,
    /// Chains refused: malformed, wrong direction, or too small to
    /// receive into. Each is returned to the guest unused.
    pub bad_chains: u64,
    /// Reads or writes the backend failed.
    pub backend_errors: u64,
}

/// A running worker thread.
struct RunningWorker<B> {
    stop: EventFd,
    thread: JoinHandle<Finished<B>>,
}

/// A virtio network card.
pub(crate) struct Net<B: NetBackend> {
    config: [u8; CONFIG_BYTES],
    backend: Option<B>,
    /// Where the worker thread runs (`--pin-vcpus`).
    placement: Placement,
    worker: Option<RunningWorker<B>>,
    counters: Arc<Mutex<NetCounters>>,
    fault: Option<WorkerFault>,
    /// What the last activation gave (RAM, interrupt, features), to start
    /// the worker again after a suspension.
    activated: Option<(GuestRam, Arc<Interrupt>, u64)>,
    /// The queues of a suspended worker (`VirtioDevice::suspend`).
    suspended: Option<(ActiveQueue, ActiveQueue)>,
}

impl<B: NetBackend> Net<B> {
    /// A card with address `mac` whose frames go through `backend`.
    pub(crate) fn new(mac: MacAddr, backend: B) -> Self {
        // struct virtio_net_config (§5.1.4): mac, status,
        // max_virtqueue_pairs (one; meaningful only with VIRTIO_NET_F_MQ),
        // mtu.
        let mut config = [0u8; CONFIG_BYTES];
        config[..6].copy_from_slice(&mac.0);
        config[6..8].copy_from_slice(&LINK_UP.to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        config[10..12].copy_from_slice(&backend.mtu().to_le_bytes());
        Self {
            config,
            backend: Some(backend),
            placement: Placement::default(),
            worker: None,
            counters: Arc::default(),
            fault: None,
            activated: None,
            suspended: None,
        }
    }

    /// Stop the worker and take back what it had.
    fn join_worker(&mut self) -> Option<(ActiveQueue, ActiveQueue)> {
        let RunningWorker { stop, thread } = self.worker.take()?;
        // Fails only if the counter would overflow: it is set then.
        let _ = stop.write(1);
        match thread.join() {
            Ok(finished) => {
                self.backend = Some(finished.backend);
                self.fault = finished.fault;
                Some(finished.queues)
            }
            Err(_) => {
                self.fault = Some(WorkerFault::Panicked);
                None
            }
        }
    }

    /// Run the worker thread where `placement` puts device threads.
    pub(crate) fn with_placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// The counters as of the worker's last pass.
    pub(crate) fn counters(&self) -> NetCounters {
        *self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Why the last worker stopped on its own (it then set
    /// `DEVICE_NEEDS_RESET`); known once it has been joined by a reset or
    /// the end of the VM.
    pub(crate) fn fault(&self) -> Option<&WorkerFault> {
        self.fault.as_ref()
    }
}

impl<B: NetBackend> VirtioDevice for Net<B> {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn features(&self) -> u64 {
        [
            VIRTIO_F_VERSION_1,
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_MAC,
            VIRTIO_NET_F_MTU,
            VIRTIO_NET_F_STATUS,
            VIRTIO_RING_F_EVENT_IDX,
        ]
        .iter()
        .fold(0, |bits, bit| bits | 1 << bit)
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 2]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        self.reset();
        let Activation {
            ram,
            queues,
            interrupt,
            features,
        } = activation;
        if let Some(index) = [RX_QUEUE, TX_QUEUE]
            .into_iter()
            .find(|&i| !queues.get(i).is_some_and(|q| q.queue.ready()))
        {
            return Err(ActivateError::QueueNotReady(index));
        }
        let mut queues = queues.into_iter();
        let (Some(rx), Some(tx)) = (queues.next(), queues.next()) else {
            return Err(ActivateError::QueueNotReady(RX_QUEUE));
        };
        let stop = new_event().map_err(ActivateError::Host)?;
        let worker_stop = stop.try_clone().map_err(ActivateError::Host)?;
        let backend = self.backend.take().ok_or(ActivateError::NoBackend)?;
        self.activated = Some((ram.clone(), Arc::clone(&interrupt), features));
        let mut worker = Worker::new(ram, rx, tx, interrupt, backend, Arc::clone(&self.counters));
        if features & 1 << VIRTIO_NET_F_GUEST_CSUM != 0 {
            worker.vouch_for_checksums();
        }
        // Started by a vCPU thread, which may be pinned.
        let placement = self.placement.clone();
        // If the thread cannot start, the backend is lost with the closure
        // and later activations fail with `NoBackend`.
        let thread = thread::Builder::new()
            .name("virtio-net".into())
            .spawn(move || {
                if let Err(e) = confine::enter(ThreadKind::Device) {
                    return worker.fail(WorkerFault::Host(e));
                }
                placement.place_device_thread();
                worker.run(&worker_stop)
            })
            .map_err(ActivateError::Host)?;
        self.worker = Some(RunningWorker { stop, thread });
        self.fault = None;
        Ok(())
    }

    fn reset(&mut self) {
        self.join_worker();
        self.suspended = None;
        self.activated = None;
    }

    fn suspend(&mut self) -> Option<Vec<QueuePosition>> {
        let (rx, tx) = self.join_worker()?;
        let positions = [&rx, &tx]
            .iter()
            .map(|q| QueuePosition {
                next_avail: q.queue.next_avail(),
                next_used: q.queue.next_used(),
            })
            .collect();
        self.suspended = Some((rx, tx));
        Some(positions)
    }

    fn resume(&mut self) -> Result<(), ActivateError> {
        let (Some((rx, tx)), Some((ram, interrupt, features))) =
            (self.suspended.take(), self.activated.clone())
        else {
            return Ok(());
        };
        self.activate(Activation {
            ram,
            features,
            queues: vec![rx, tx],
            interrupt,
        })
    }
}

impl<B: NetBackend> Drop for Net<B> {
    fn drop(&mut self) {
        self.reset();
    }
}
