//! The network device's worker thread: moves frames between the queues and
//! the backend.
//!
//! [`Worker::run`] waits in epoll for four things: the stop event, the two
//! queues' notification events (level-triggered, drained on wake-up) and
//! the backend (edge-triggered). Each wake-up serves the transmit queue
//! ([`Worker::process_tx`]: each chain is a header and a frame, read out of
//! guest memory and written to the backend) and then the receive queue
//! ([`Worker::process_rx`]: each frame from the backend goes, behind a
//! zeroed header, into the next buffer the driver posted). Both return
//! every chain they take to the used ring, refused or not, so the driver
//! gets its buffers back.
//!
//! Notifications follow §2.7.7 and §2.7.10 through `virtio-queue`: while a
//! queue is being drained the driver's notifications are off, and turned on
//! again (with `VIRTIO_F_EVENT_IDX`: `avail_event` set to where the device
//! stands) only when the device needs more; the receive queue asks only
//! when it has run out of buffers and the backend has frames, which it then
//! leaves in the backend (the tap's kernel queue). Interrupts are raised
//! once per pass, or every [`RX_BATCH`] frames on a long receive pass, and
//! only if the driver's `used_event` was crossed. A pass handles at most
//! [`PASS_BUDGET`] chains and then notifies itself, so a guest (or the
//! network) that never stops cannot keep the thread from its stop event.
//!
//! A broken ring (an available index more than a ring ahead, a ring the
//! device cannot read) or a failing epoll ends the thread after setting
//! `DEVICE_NEEDS_RESET`.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, PoisonError};

use virtio_bindings::virtio_net::VIRTIO_NET_HDR_F_DATA_VALID;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::checksum;
use super::{
    MAX_FRAME_BYTES, MIN_FRAME_BYTES, MIN_RX_BUFFER_BYTES, NET_HDR_BYTES, NUM_BUFFERS_OFFSET,
    NetBackend, NetCounters,
};
use crate::devices::queue::{Chain, ChainError, Offered, pop_chain, put_used};
use crate::devices::{ActiveQueue, Interrupt};
use crate::memory::GuestRam;

/// Most chains (or frames) one pass over a queue handles before the worker
/// looks at its other events again.
pub(super) const PASS_BUDGET: usize = 256;
/// `VIRTIO_NET_HDR_F_DATA_VALID` in `virtio_net_hdr.flags` (§5.1.6), a
/// byte.
#[allow(clippy::cast_possible_truncation)]
const HDR_F_DATA_VALID: u8 = VIRTIO_NET_HDR_F_DATA_VALID as u8;
/// Received frames between two interrupt checks on a long pass.
pub(super) const RX_BATCH: usize = 64;

const STOP: u64 = 0;
const RX_NOTIFY: u64 = 1;
const TX_NOTIFY: u64 = 2;
const BACKEND: u64 = 3;

/// Why a worker stopped on its own.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkerFault {
    /// The guest broke a ring.
    #[error("guest broke a virtqueue: {0}")]
    Queue(#[from] virtio_queue::Error),
    /// The host failed the event loop.
    #[error("the device's event loop failed: {0}")]
    Host(#[source] io::Error),
    /// The backend is gone for good (passt exited, or broke the framing).
    #[error("{0}")]
    Backend(#[source] io::Error),
    /// A bug: the thread panicked (and the backend was lost).
    #[error("the device's worker thread panicked")]
    Panicked,
}

/// What a finished worker hands back.
pub(super) struct Finished<B> {
    pub(super) backend: B,
    pub(super) fault: Option<WorkerFault>,
    /// The receive and transmit queues, where the worker left them (a
    /// receive buffer it had taken but not filled is given back to the
    /// ring), to go on with after a suspension.
    pub(super) queues: (ActiveQueue, ActiveQueue),
}

/// The backend side of the worker: the backend, its buffers and counters.
struct FrameIo<B> {
    backend: B,
    /// The backend may have frames: set by its edge, cleared at
    /// `WouldBlock`.
    is_backend_readable: bool,
    /// A receive buffer the driver posted (head index and chain), waiting
    /// for a frame.
    rx_chain: Option<(u16, Chain)>,
    /// Header and frame for receiving; the header stays as set up but for
    /// its `flags`.
    rx_frame: Vec<u8>,
    /// `VIRTIO_NET_F_GUEST_CSUM`: check each received frame's TCP or UDP
    /// checksum and flag it `DATA_VALID` when right.
    vouches_for_checksums: bool,
    /// Header and frame for transmitting.
    tx_frame: Vec<u8>,
    counters: NetCounters,
}

/// The state of a running network device.
pub(super) struct Worker<B> {
    ram: GuestRam,
    rx: Queue,
    tx: Queue,
    rx_notify: Arc<EventFd>,
    tx_notify: Arc<EventFd>,
    interrupt: Arc<Interrupt>,
    io: FrameIo<B>,
    shared_counters: Arc<Mutex<NetCounters>>,
}

impl<B: NetBackend> Worker<B> {
    pub(super) fn new(
        ram: GuestRam,
        rx: ActiveQueue,
        tx: ActiveQueue,
        interrupt: Arc<Interrupt>,
        backend: B,
        shared_counters: Arc<Mutex<NetCounters>>,
    ) -> Self {
        let mut rx_frame = vec![0u8; NET_HDR_BYTES + MAX_FRAME_BYTES];
        // §5.1.6.4: one buffer per frame without VIRTIO_NET_F_MRG_RXBUF;
        // everything else zero (no offloads).
        rx_frame[NUM_BUFFERS_OFFSET..NET_HDR_BYTES].copy_from_slice(&1u16.to_le_bytes());
        let counters = *shared_counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Self {
            ram,
            rx: rx.queue,
            tx: tx.queue,
            rx_notify: rx.notify,
            tx_notify: tx.notify,
            interrupt,
            io: FrameIo {
                backend,
                is_backend_readable: true,
                rx_chain: None,
                rx_frame,
                vouches_for_checksums: false,
                tx_frame: vec![0u8; NET_HDR_BYTES + MAX_FRAME_BYTES],
                counters,
            },
            shared_counters,
        }
    }

    /// Check received checksums for the driver (it negotiated
    /// `VIRTIO_NET_F_GUEST_CSUM`).
    pub(super) fn vouch_for_checksums(&mut self) {
        self.io.vouches_for_checksums = true;
    }

    /// Serve the queues until `stop` is signalled or the device breaks;
    /// hand the backend back.
    pub(super) fn run(mut self, stop: &EventFd) -> Finished<B> {
        let fault = self.serve(stop).err();
        self.finish(fault)
    }

    /// End before serving, with `fault`.
    pub(super) fn fail(self, fault: WorkerFault) -> Finished<B> {
        self.finish(Some(fault))
    }

    fn finish(mut self, fault: Option<WorkerFault>) -> Finished<B> {
        if fault.is_some() {
            self.interrupt.signal_needs_reset();
        }
        self.publish_counters();
        if self.io.rx_chain.take().is_some() {
            self.rx.go_to_previous_position();
        }
        Finished {
            backend: self.io.backend,
            fault,
            queues: (
                ActiveQueue {
                    queue: self.rx,
                    notify: self.rx_notify,
                },
                ActiveQueue {
                    queue: self.tx,
                    notify: self.tx_notify,
                },
            ),
        }
    }

    fn serve(&mut self, stop: &EventFd) -> Result<(), WorkerFault> {
        let epoll = Epoll::new().map_err(WorkerFault::Host)?;
        let level = EventSet::IN;
        let edge = EventSet::IN | EventSet::EDGE_TRIGGERED;
        for (fd, events, token) in [
            (stop.as_raw_fd(), level, STOP),
            (self.rx_notify.as_raw_fd(), level, RX_NOTIFY),
            (self.tx_notify.as_raw_fd(), level, TX_NOTIFY),
            (self.io.backend.ready_fd(), edge, BACKEND),
        ] {
            epoll
                .ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
                .map_err(WorkerFault::Host)?;
        }
        // Buffers offered before the notifications were watched.
        self.process_tx()?;
        self.process_rx()?;
        self.publish_counters();
        let mut events = [EpollEvent::default(); 4];
        loop {
            let count = match epoll.wait(-1, &mut events) {
                Ok(count) => count,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(WorkerFault::Host(e)),
            };
            let (mut has_rx, mut has_tx) = (false, false);
            for event in &events[..count] {
                match event.data() {
                    STOP => return Ok(()),
                    RX_NOTIFY => {
                        // Non-blocking: reading resets the counter.
                        let _ = self.rx_notify.read();
                        has_rx = true;
                    }
                    TX_NOTIFY => {
                        let _ = self.tx_notify.read();
                        has_tx = true;
                    }
                    _ => {
                        self.io.is_backend_readable = true;
                        has_rx = true;
                    }
                }
            }
            if has_tx {
                self.process_tx()?;
            }
            if has_rx {
                self.process_rx()?;
            }
            self.publish_counters();
        }
    }

    /// Send every frame the driver queued (up to the budget).
    pub(super) fn process_tx(&mut self) -> Result<(), WorkerFault> {
        let mem = self.ram.memory();
        let mut used = 0;
        'pass: loop {
            self.tx.disable_notification(mem)?;
            while let Some(Offered { head, chain }) = pop_chain(&mut self.tx, &self.ram)? {
                self.io.transmit(&self.ram, chain)?;
                put_used(&mut self.tx, &self.ram, head, 0)?;
                used += 1;
                if used == PASS_BUDGET {
                    // Come back after the other events.
                    let _ = self.tx_notify.write(1);
                    break 'pass;
                }
            }
            // Ask to be notified; look once more in case the driver added
            // chains before it could see that.
            if !self.tx.enable_notification(mem)? {
                break;
            }
        }
        if used > 0 && self.tx.needs_notification(mem)? {
            self.interrupt.signal_used_buffer();
        }
        Ok(())
    }

    /// Move frames from the backend into the driver's buffers while both
    /// last (up to the budget).
    pub(super) fn process_rx(&mut self) -> Result<(), WorkerFault> {
        let mem = self.ram.memory();
        let mut used = 0;
        let mut taken = 0;
        self.rx.disable_notification(mem)?;
        while self.io.is_backend_readable {
            if taken == PASS_BUDGET {
                let _ = self.rx_notify.write(1);
                break;
            }
            taken += 1;
            if self.io.rx_chain.is_none() {
                match pop_chain(&mut self.rx, &self.ram)? {
                    Some(Offered { head, chain }) => {
                        match chain.and_then(receive_buffer) {
                            Ok(chain) => self.io.rx_chain = Some((head, chain)),
                            Err(_) => {
                                self.io.counters.bad_chains += 1;
                                put_used(&mut self.rx, &self.ram, head, 0)?;
                                used += 1;
                            }
                        }
                        continue;
                    }
                    None => {
                        // Out of buffers: the frames wait in the backend
                        // until the driver posts more and notifies.
                        if self.rx.enable_notification(mem)? {
                            self.rx.disable_notification(mem)?;
                            continue;
                        }
                        break;
                    }
                }
            }
            if let Some((head, len)) = self.io.receive(&self.ram)? {
                put_used(&mut self.rx, &self.ram, head, len)?;
                used += 1;
                if used % RX_BATCH == 0 && self.rx.needs_notification(mem)? {
                    self.interrupt.signal_used_buffer();
                }
            }
        }
        if used % RX_BATCH != 0 && self.rx.needs_notification(mem)? {
            self.interrupt.signal_used_buffer();
        }
        Ok(())
    }

    fn publish_counters(&self) {
        *self
            .shared_counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = self.io.counters;
    }

    #[cfg(test)]
    pub(super) fn counters(&self) -> NetCounters {
        self.io.counters
    }
}

/// Whether a backend error means the backend is gone for good (its process
/// exited, or its stream can no longer be framed) rather than a frame lost.
fn is_fatal(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData | io::ErrorKind::BrokenPipe
    )
}

/// A chain the device can receive a frame into.
fn receive_buffer(chain: Chain) -> Result<Chain, ChainError> {
    let chain = chain.into_writable_only()?;
    if chain.writable_bytes() < MIN_RX_BUFFER_BYTES {
        return Err(ChainError::TooSmall);
    }
    Ok(chain)
}

impl<B: NetBackend> FrameIo<B> {
    /// Send the frame of a transmit chain (or count why not); an error
    /// when the backend is gone for good.
    fn transmit(
        &mut self,
        ram: &GuestRam,
        parsed: Result<Chain, ChainError>,
    ) -> Result<(), WorkerFault> {
        let Ok(chain) = parsed.and_then(Chain::into_readable_only) else {
            self.counters.bad_chains += 1;
            return Ok(());
        };
        let total = chain.readable_bytes();
        let frame_bytes = usize::try_from(total)
            .ok()
            .and_then(|total| total.checked_sub(NET_HDR_BYTES))
            .filter(|len| (MIN_FRAME_BYTES..=MAX_FRAME_BYTES).contains(len));
        let Some(frame_bytes) = frame_bytes else {
            self.counters.tx_dropped += 1;
            return Ok(());
        };
        let buffer = &mut self.tx_frame[..NET_HDR_BYTES + frame_bytes];
        if !chain.read(ram, buffer).is_ok_and(|n| n == buffer.len()) {
            // Cannot happen: the chain's buffers were checked against RAM.
            self.counters.bad_chains += 1;
            return Ok(());
        }
        // The header asks for no offload the device offers: ignore it.
        match self.backend.write_frame(&buffer[NET_HDR_BYTES..]) {
            Ok(()) => {
                self.counters.tx_frames += 1;
                self.counters.tx_bytes += frame_bytes as u64;
            }
            Err(e) if is_fatal(&e) => return Err(WorkerFault::Backend(e)),
            Err(_) => self.counters.backend_errors += 1,
        }
        Ok(())
    }

    /// Read one frame from the backend into the pending receive buffer.
    /// Returns the buffer's head index and the bytes written when it was
    /// used; `None` when there was no frame or it was dropped; an error
    /// when the backend is gone for good.
    fn receive(&mut self, ram: &GuestRam) -> Result<Option<(u16, u32)>, WorkerFault> {
        let Some(capacity) = self
            .rx_chain
            .as_ref()
            .map(|(_, chain)| chain.writable_bytes())
        else {
            return Ok(None);
        };
        let frame_bytes = match self.backend.read_frame(&mut self.rx_frame[NET_HDR_BYTES..]) {
            Ok(len) => len,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.is_backend_readable = false;
                return Ok(None);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(None),
            Err(e) if is_fatal(&e) => return Err(WorkerFault::Backend(e)),
            Err(_) => {
                // Wait for the next edge rather than spin on the error.
                self.counters.backend_errors += 1;
                self.is_backend_readable = false;
                return Ok(None);
            }
        };
        let total = NET_HDR_BYTES + frame_bytes;
        if total as u64 > capacity {
            // Keep the buffer for the next frame.
            self.counters.rx_dropped += 1;
            return Ok(None);
        }
        let Some((head, chain)) = self.rx_chain.take() else {
            return Ok(None);
        };
        // §5.1.6.4: DATA_VALID only with GUEST_CSUM negotiated.
        let is_valid = self.vouches_for_checksums
            && checksum::is_transport_checksum_valid(&self.rx_frame[NET_HDR_BYTES..total]);
        self.rx_frame[0] = if is_valid { HDR_F_DATA_VALID } else { 0 };
        match chain.write(ram, &self.rx_frame[..total]) {
            Ok(written) if written == total => {
                self.counters.rx_frames += 1;
                self.counters.rx_bytes += frame_bytes as u64;
                // At most NET_HDR_BYTES + MAX_FRAME_BYTES.
                Ok(Some((head, u32::try_from(total).unwrap_or(0))))
            }
            _ => {
                // Cannot happen: the chain's buffers were checked.
                self.counters.bad_chains += 1;
                Ok(Some((head, 0)))
            }
        }
    }
}
