//! The virtio network card, driver side (virtio 1.2 §5.1).
//!
//! [`NetDriver`] negotiates `VIRTIO_F_VERSION_1` (required),
//! `VIRTIO_NET_F_MAC`, `VIRTIO_NET_F_MTU`, `VIRTIO_NET_F_GUEST_CSUM` and
//! `VIRTIO_F_EVENT_IDX` (when offered) and nothing else: no transmit
//! offloads, no mergeable receive buffers, no control queue. Every buffer
//! therefore starts with the 12-byte `virtio_net_hdr` (§5.1.6), zero on
//! transmit; on receive only its `DATA_VALID` and `NEEDS_CSUM` flags are
//! read (with `GUEST_CSUM`: the device checked the frame's TCP or UDP
//! checksum, or the packet was made on the host with a partial one,
//! [`Frame::is_checksum_valid`]). Every receive buffer must hold a whole
//! frame.
//!
//! Frame size ([`Sizing`]): 1514 bytes (a 1500-byte MTU) unless the device
//! offers its link's MTU. A smaller one is used as it is; a larger one
//! (a jumbo MTU, up to 64 KiB: each frame then carries up to 43 times
//! the bytes for the same per-frame cost) only if buffers of that size
//! fit the memory budget the caller gives, at least
//! [`MIN_JUMBO_RX_BUFFERS`] of them for receiving; otherwise the driver
//! stays at 1500 and the peer, told so by TCP's MSS, sends no more.
//!
//! Memory: one region the caller allocates (its size comes from the queue
//! sizes and the frame size), holding both queues' rings and one buffer
//! per descriptor. The receive queue is kept full:
//! a buffer goes back to the device as soon as its frame is copied out.
//! A transmit buffer is taken back when the device has used it, lazily,
//! when no free one is left.
//!
//! Frames are copied: out of the receive buffer into the driver's own
//! memory before anyone parses them, and from the driver's memory into the
//! transmit buffer. So the bytes the network stack sees cannot change
//! under it even if the device writes where it should not, and the kernel
//! never hands out references into shared memory. A copy of 1.5 KB costs
//! far less than the exits it shares a path with.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::marker::PhantomData;

use crate::mmio::{InitError, Transport, feature};
use crate::queue::{QueueError, QueueLayout, SplitQueue};
use crate::{DeviceRegisters, DmaMemory, align_up};

/// `DeviceID` of a network card (§5.1.1).
pub const NET_DEVICE_ID: u32 = 1;
/// The receive queue (`receiveq1`, §5.1.2).
pub const RX_QUEUE: u16 = 0;
/// The transmit queue (`transmitq1`).
pub const TX_QUEUE: u16 = 1;
/// `struct virtio_net_hdr` with `VIRTIO_F_VERSION_1` (§5.1.6): `flags`,
/// `gso_type`, `hdr_len`, `gso_size`, `csum_start`, `csum_offset` and
/// `num_buffers`.
pub const NET_HDR_BYTES: usize = 12;
/// Largest frame sent without a larger MTU from the device: an Ethernet
/// header and a 1500-byte payload (no FCS).
pub const MAX_FRAME_BYTES: usize = ETHERNET_HEADER_BYTES + STANDARD_MTU_BYTES;
/// Size of each receive buffer at the standard MTU: the header and 1524
/// bytes of frame, room for a full frame with an 802.1Q tag. More than
/// the 1526 bytes (header included) §5.1.6.3.1 asks for without
/// mergeable buffers.
pub const RX_BUFFER_BYTES: u32 = 1536;
/// The standard Ethernet MTU, and the smallest accepted from a device
/// (IPv4 needs 576; anything less is taken as 576).
const STANDARD_MTU_BYTES: usize = 1500;
const MIN_MTU_BYTES: usize = 576;
/// An Ethernet header, and room for one 802.1Q tag.
const ETHERNET_HEADER_BYTES: usize = 14;
const VLAN_TAG_BYTES: usize = 4;
/// Alignment of the region's base and of each area in it (a cache line).
const AREA_ALIGN: u64 = 64;
/// Shortest frame taken from the device: an Ethernet header.
const MIN_FRAME_BYTES: usize = 14;
/// With a jumbo MTU: transmit buffers (a 256 KiB TCP window is 4 frames),
/// and the fewest receive buffers worth it (each holds one frame however
/// small, so a burst of small ones needs many).
const JUMBO_TX_BUFFERS: u16 = 16;
pub const MIN_JUMBO_RX_BUFFERS: u16 = 32;

const _: () = assert!(NET_HDR_BYTES + MAX_FRAME_BYTES + VLAN_TAG_BYTES <= RX_BUFFER_BYTES as usize);

/// Frame size and queue sizes, from what the device offers and the
/// memory budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizing {
    /// Largest frame sent or received (an Ethernet header and the MTU).
    pub max_frame_bytes: usize,
    /// Size of each buffer, header included (a multiple of 64).
    pub buffer_bytes: u32,
    /// Receive and transmit queue sizes (powers of two).
    pub rx_size: u16,
    pub tx_size: u16,
}

impl Sizing {
    /// The sizes for a device whose link MTU is `device_mtu` (`None`:
    /// `VIRTIO_NET_F_MTU` not offered) and whose queues hold at most
    /// `rx_max` and `tx_max`, with queues of at most `wanted` and buffers
    /// of at most `budget_bytes` in all for a jumbo MTU.
    pub fn new(
        device_mtu: Option<u16>,
        rx_max: u16,
        tx_max: u16,
        wanted: u16,
        budget_bytes: u64,
    ) -> Self {
        let wanted = wanted.max(1);
        let standard = |mtu: usize| Self {
            max_frame_bytes: ETHERNET_HEADER_BYTES + mtu,
            buffer_bytes: RX_BUFFER_BYTES,
            rx_size: power_of_two_at_most(rx_max.min(wanted)),
            tx_size: power_of_two_at_most(tx_max.min(wanted)),
        };
        let mtu = device_mtu.map_or(STANDARD_MTU_BYTES, |m| usize::from(m).max(MIN_MTU_BYTES));
        if mtu <= STANDARD_MTU_BYTES {
            return standard(mtu);
        }
        let max_frame_bytes = ETHERNET_HEADER_BYTES + mtu;
        let buffer = align_up(
            (NET_HDR_BYTES + max_frame_bytes + VLAN_TAG_BYTES) as u64,
            AREA_ALIGN,
        );
        let tx_size = power_of_two_at_most(tx_max.min(wanted).min(JUMBO_TX_BUFFERS));
        let rx_fit = budget_bytes.saturating_sub(buffer * u64::from(tx_size)) / buffer;
        let rx_size = power_of_two_at_most(
            rx_max
                .min(wanted)
                .min(u16::try_from(rx_fit).unwrap_or(u16::MAX)),
        );
        // At most `rx_fit`: too little memory shows here too.
        if rx_size < MIN_JUMBO_RX_BUFFERS {
            return standard(STANDARD_MTU_BYTES);
        }
        Self {
            max_frame_bytes,
            // At most 12 + 65549 + 4 rounded up: fits.
            buffer_bytes: u32::try_from(buffer).unwrap_or(u32::MAX),
            rx_size,
            tx_size,
        }
    }

    /// Bytes of frame a receive buffer holds.
    fn rx_frame_capacity(&self) -> usize {
        self.buffer_bytes as usize - NET_HDR_BYTES
    }
}

/// Network device feature bits (§5.1.3), as masks.
pub mod net_feature {
    /// `VIRTIO_NET_F_CSUM` (0): never accepted.
    pub const CSUM: u64 = 1 << 0;
    /// `VIRTIO_NET_F_GUEST_CSUM` (1): the device may vouch for received
    /// checksums (`VIRTIO_NET_HDR_F_DATA_VALID`).
    pub const GUEST_CSUM: u64 = 1 << 1;
    /// `VIRTIO_NET_F_MTU` (3): the link's MTU in the configuration space.
    pub const MTU: u64 = 1 << 3;
    /// `VIRTIO_NET_F_MAC` (5): `mac` in the configuration space.
    pub const MAC: u64 = 1 << 5;
    /// `VIRTIO_NET_F_MRG_RXBUF` (15): never accepted.
    pub const MRG_RXBUF: u64 = 1 << 15;
    /// `VIRTIO_NET_F_STATUS` (16): not accepted (the link is assumed up).
    pub const STATUS: u64 = 1 << 16;
}

/// `virtio_net_hdr.flags` (§5.1.6): `NEEDS_CSUM` (the checksum is only
/// partial: the packet was made on the host, as QEMU's tap backend
/// passes them once the driver takes `GUEST_CSUM`, and needs no check)
/// and `DATA_VALID` (the device checked it).
const HDR_F_NEEDS_CSUM: u8 = 1;
const HDR_F_DATA_VALID: u8 = 2;

/// A received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The Ethernet frame, without FCS.
    pub bytes: &'a [u8],
    /// Its TCP or UDP checksum needs no check: the device checked it
    /// (`DATA_VALID`) or it is a partial one (`NEEDS_CSUM`) of a packet
    /// made on the host (only with `GUEST_CSUM`).
    pub is_checksum_valid: bool,
}

/// What the caller chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Largest queue wanted (each queue gets the largest power of two no
    /// larger than this and the device's `QueueNumMax`). Each entry costs
    /// a 1.5 KiB buffer (a frame's worth with a jumbo MTU).
    pub max_queue_size: u16,
    /// Most bytes the buffers may take with a jumbo MTU (see [`Sizing`]).
    pub jumbo_budget_bytes: u64,
    /// The card's address when the device offers none (§5.1.5: the
    /// driver then makes one up, preferably random and locally
    /// administered).
    pub fallback_mac: [u8; 6],
}

/// Why a card could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetInitError {
    /// The transport handshake failed.
    Transport(InitError),
    /// The allocator gave no region of this many bytes.
    NoMemory { bytes: u64 },
    /// The region's base is not 64-byte aligned.
    MisalignedMemory(u64),
    /// A queue could not be made (a driver bug).
    Queue(QueueError),
}

impl From<InitError> for NetInitError {
    fn from(e: InitError) -> Self {
        Self::Transport(e)
    }
}

impl fmt::Display for NetInitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transport(e) => e.fmt(f),
            Self::NoMemory { bytes } => write!(f, "no memory for the queues ({bytes} bytes)"),
            Self::MisalignedMemory(base) => write!(f, "queue memory at {base:#x} is misaligned"),
            Self::Queue(e) => e.fmt(f),
        }
    }
}

/// What the driver did, for statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Frames handed to the caller, and their bytes (without the header).
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Receive buffers the device returned with an impossible length
    /// (more than the buffer, or less than a header and an Ethernet
    /// header); the buffer goes back to the device.
    pub rx_errors: u64,
    /// Frames given to the device, and their bytes.
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames dropped: longer than [`MAX_FRAME_BYTES`], or no transmit
    /// buffer free (only a reply made while receiving can meet that).
    pub tx_dropped: u64,
    /// `QueueNotify` writes (exits), per queue.
    pub rx_notifications: u64,
    pub tx_notifications: u64,
    /// Used entries skipped because their id named no chain in flight.
    pub bad_used_entries: u64,
}

/// Where everything lives in the region.
struct Layout {
    rx: QueueLayout,
    tx: QueueLayout,
    rx_buffers: u64,
    tx_buffers: u64,
    bytes: u64,
}

impl Layout {
    fn new(base: u64, sizing: &Sizing) -> Self {
        let Sizing {
            rx_size, tx_size, ..
        } = *sizing;
        let stride = u64::from(sizing.buffer_bytes);
        let tx_ring = align_up(QueueLayout::bytes(rx_size), AREA_ALIGN);
        let rx_buffers = align_up(tx_ring + QueueLayout::bytes(tx_size), AREA_ALIGN);
        let tx_buffers = rx_buffers + stride * u64::from(rx_size);
        Self {
            rx: QueueLayout::at(base, rx_size),
            tx: QueueLayout::at(base + tx_ring, tx_size),
            rx_buffers: base + rx_buffers,
            tx_buffers: base + tx_buffers,
            bytes: tx_buffers + stride * u64::from(tx_size),
        }
    }
}

/// The receive side.
struct Rx {
    queue: SplitQueue,
    buffers_addr: u64,
    /// Size of each buffer, header included.
    buffer_bytes: u32,
    /// Per descriptor head: the buffer of the chain in flight.
    buffer_of_head: Vec<Option<u16>>,
    /// The last frame received, copied out of shared memory.
    frame: Vec<u8>,
    /// `GUEST_CSUM` was negotiated: the header's `DATA_VALID` and
    /// `NEEDS_CSUM` count.
    has_checksum_flag: bool,
    frames: u64,
    bytes: u64,
    errors: u64,
    notifications: u64,
}

/// The transmit side.
struct Tx {
    queue: SplitQueue,
    buffers_addr: u64,
    buffer_bytes: u32,
    /// Largest frame sent.
    max_frame_bytes: usize,
    buffer_of_head: Vec<Option<u16>>,
    /// Buffers not given to the device.
    free: Vec<u16>,
    /// Where the caller writes a frame before it is copied to a buffer.
    scratch: Vec<u8>,
    frames: u64,
    bytes: u64,
    dropped: u64,
    notifications: u64,
}

/// What [`NetDriver::activate`] makes.
struct Live<M> {
    mem: M,
    mac: [u8; 6],
    rx: Rx,
    tx: Tx,
}

/// A virtio network card, live.
///
/// Dropping it resets the device, so the device no longer touches the
/// region, before the region is dropped (if the reset does not finish,
/// the region is leaked rather than freed).
pub struct NetDriver<R: DeviceRegisters, M: DmaMemory> {
    transport: Transport<R>,
    /// `None` only while dropping.
    mem: Option<M>,
    mac: [u8; 6],
    rx: Rx,
    tx: Tx,
}

impl<R: DeviceRegisters, M: DmaMemory> NetDriver<R, M> {
    /// Set up the network card behind `regs` (§3.1.1, §5.1.5) and make it
    /// live with its receive queue full. `alloc(bytes)` gives the region
    /// for the rings and buffers: the memory and its physical base,
    /// 64-byte aligned. On failure the device is left with `FAILED` set
    /// and never went live, so the region may be freed.
    ///
    /// Costs 49 register accesses (exits) and one notification.
    ///
    /// # Errors
    /// See [`NetInitError`].
    pub fn new(
        regs: R,
        config: NetConfig,
        alloc: impl FnOnce(u64) -> Option<(M, u64)>,
    ) -> Result<Self, NetInitError> {
        let mut transport = Transport::negotiate(
            regs,
            NET_DEVICE_ID,
            0,
            net_feature::MAC | net_feature::MTU | net_feature::GUEST_CSUM | feature::EVENT_IDX,
        )?;
        match Self::activate(&mut transport, config, alloc) {
            Ok(Live { mem, mac, rx, tx }) => Ok(Self {
                transport,
                mem: Some(mem),
                mac,
                rx,
                tx,
            }),
            Err((e, mem)) => {
                transport.fail();
                // The device may have the rings' addresses but never got
                // DRIVER_OK, so it has not touched the region.
                drop(mem);
                Err(e)
            }
        }
    }

    /// Everything between `FEATURES_OK` and `DRIVER_OK`. On failure, the
    /// region (if any) is returned with the error so it outlives `FAILED`.
    fn activate(
        transport: &mut Transport<R>,
        config: NetConfig,
        alloc: impl FnOnce(u64) -> Option<(M, u64)>,
    ) -> Result<Live<M>, (NetInitError, Option<M>)> {
        let mut mac = config.fallback_mac;
        if transport.has_features(net_feature::MAC) {
            // struct virtio_net_config starts with mac[6] (§5.1.4).
            transport
                .read_config(0, &mut mac)
                .map_err(|e| (e.into(), None))?;
        }
        let device_mtu = if transport.has_features(net_feature::MTU) {
            // struct virtio_net_config: mac[6], status, max_virtqueue_pairs,
            // then mtu (§5.1.4).
            let mut mtu = [0; 2];
            transport
                .read_config(10, &mut mtu)
                .map_err(|e| (e.into(), None))?;
            Some(u16::from_le_bytes(mtu))
        } else {
            None
        };
        let rx_max = transport
            .queue_max_size(RX_QUEUE)
            .map_err(|e| (e.into(), None))?;
        let tx_max = transport
            .queue_max_size(TX_QUEUE)
            .map_err(|e| (e.into(), None))?;
        let sizing = Sizing::new(
            device_mtu,
            rx_max,
            tx_max,
            config.max_queue_size,
            config.jumbo_budget_bytes,
        );
        let Sizing {
            rx_size, tx_size, ..
        } = sizing;
        let bytes = Layout::new(0, &sizing).bytes;
        let (mem, base) = alloc(bytes).ok_or((NetInitError::NoMemory { bytes }, None))?;
        if !base.is_multiple_of(AREA_ALIGN) {
            return Err((NetInitError::MisalignedMemory(base), Some(mem)));
        }
        let layout = Layout::new(base, &sizing);
        let has_event_idx = transport.has_features(feature::EVENT_IDX);
        let queues = SplitQueue::new(&mem, layout.rx, has_event_idx)
            .and_then(|rx| Ok((rx, SplitQueue::new(&mem, layout.tx, has_event_idx)?)));
        let (rx_queue, tx_queue) = match queues {
            Ok(queues) => queues,
            Err(e) => return Err((NetInitError::Queue(e), Some(mem))),
        };
        // The transmit queue was selected last: set it up first.
        let setup = transport
            .setup_queue(TX_QUEUE, &layout.tx)
            .and_then(|()| transport.setup_queue(RX_QUEUE, &layout.rx));
        if let Err(e) = setup {
            return Err((e.into(), Some(mem)));
        }
        let mut rx = Rx {
            queue: rx_queue,
            buffers_addr: layout.rx_buffers,
            buffer_bytes: sizing.buffer_bytes,
            buffer_of_head: vec![None; usize::from(rx_size)],
            frame: vec![0; sizing.rx_frame_capacity()],
            has_checksum_flag: transport.has_features(net_feature::GUEST_CSUM),
            frames: 0,
            bytes: 0,
            errors: 0,
            notifications: 0,
        };
        for buffer in 0..rx_size {
            if let Err(e) = rx.post(&mem, buffer) {
                return Err((NetInitError::Queue(e), Some(mem)));
            }
        }
        let mut tx = Tx {
            queue: tx_queue,
            buffers_addr: layout.tx_buffers,
            buffer_bytes: sizing.buffer_bytes,
            max_frame_bytes: sizing.max_frame_bytes,
            buffer_of_head: vec![None; usize::from(tx_size)],
            free: (0..tx_size).rev().collect(),
            scratch: vec![0; sizing.max_frame_bytes],
            frames: 0,
            bytes: 0,
            dropped: 0,
            notifications: 0,
        };
        // Transmit completions are collected when buffers run out; no
        // interrupt is wanted for them unless the ring is full
        // (`enable_interrupts`).
        tx.queue.disable_interrupts(&mem);
        rx.queue.publish(&mem);
        // §3.1.1 step 8. Nothing fails after this.
        transport.finish();
        if rx.queue.should_notify(&mem) {
            transport.notify(RX_QUEUE);
            rx.notifications += 1;
        }
        Ok(Live { mem, mac, rx, tx })
    }

    /// Largest frame sent or received: an Ethernet header and the MTU
    /// (see [`Sizing`]).
    pub fn max_frame_bytes(&self) -> usize {
        self.tx.max_frame_bytes
    }

    /// Whether the device may vouch for received checksums
    /// (`GUEST_CSUM`): then the caller checks those of frames it did not
    /// vouch for, and need not check the others.
    pub fn has_checksum_offload(&self) -> bool {
        self.rx.has_checksum_flag
    }

    /// The card's MAC address (the device's, or the fallback).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Whether the device offered `VIRTIO_NET_F_MAC`.
    pub fn has_device_mac(&self) -> bool {
        self.transport.has_features(net_feature::MAC)
    }

    /// The negotiated features.
    pub fn features(&self) -> u64 {
        self.transport.features()
    }

    /// Entries in the receive and the transmit queue.
    pub fn queue_sizes(&self) -> (u16, u16) {
        (self.rx.queue.layout().size, self.tx.queue.layout().size)
    }

    /// Whether the device broke the ring protocol on either queue; the
    /// card then moves no more frames (a reset would be needed).
    pub fn is_broken(&self) -> bool {
        self.rx.queue.is_broken() || self.tx.queue.is_broken()
    }

    /// What the driver did so far.
    pub fn counters(&self) -> NetCounters {
        NetCounters {
            rx_frames: self.rx.frames,
            rx_bytes: self.rx.bytes,
            rx_errors: self.rx.errors,
            tx_frames: self.tx.frames,
            tx_bytes: self.tx.bytes,
            tx_dropped: self.tx.dropped,
            rx_notifications: self.rx.notifications,
            tx_notifications: self.tx.notifications,
            bad_used_entries: self.rx.queue.bad_used_entries() + self.tx.queue.bad_used_entries(),
        }
    }

    /// The next frame received, if any, and a slot to send a reply. The
    /// frame has been copied out of its buffer, which is already back in
    /// the receive queue. The slot drops its frame if no transmit buffer
    /// is free. Receive interrupts stay off until
    /// [`Self::enable_interrupts`].
    pub fn receive(&mut self) -> Option<(Frame<'_>, TxSlot<'_, R, M>)> {
        let Self { mem, rx, tx, .. } = self;
        let mem = mem.as_ref()?;
        let (len, is_checksum_valid) = rx.next_frame(mem)?;
        Some((
            Frame {
                bytes: &rx.frame[..len],
                is_checksum_valid,
            },
            TxSlot {
                tx,
                mem,
                _registers: PhantomData,
            },
        ))
    }

    /// A slot to send one frame, if a transmit buffer is free (buffers the
    /// device has finished with are collected first when none is).
    pub fn transmit(&mut self) -> Option<TxSlot<'_, R, M>> {
        let Self { mem, tx, .. } = self;
        let mem = mem.as_ref()?;
        if tx.free.is_empty() {
            tx.reclaim(mem);
        }
        if tx.free.is_empty() || tx.queue.is_broken() {
            return None;
        }
        Some(TxSlot {
            tx,
            mem,
            _registers: PhantomData,
        })
    }

    /// Tell the device about the frames sent and the receive buffers given
    /// back since the last call, if it asked to be told (`EVENT_IDX`): at
    /// most one notification per queue, each an exit, however many frames
    /// moved. Call it after every round of [`Self::receive`] and
    /// [`Self::transmit`]: until then the device may not see them.
    pub fn flush(&mut self) {
        let Some(mem) = self.mem.as_ref() else {
            return;
        };
        if self.tx.queue.should_notify(mem) {
            self.transport.notify(TX_QUEUE);
            self.tx.notifications += 1;
        }
        if self.rx.queue.should_notify(mem) {
            self.transport.notify(RX_QUEUE);
            self.rx.notifications += 1;
        }
    }

    /// Whether received frames wait in the queue: one look at the used
    /// index, nothing taken. For a CPU that watches the card while it
    /// spins idle, with [`Self::disable_receive_interrupts`].
    pub fn has_frames(&self) -> bool {
        self.mem
            .as_ref()
            .is_some_and(|mem| self.rx.queue.has_used(mem))
    }

    /// Ask the device not to interrupt for received frames (a hint): for
    /// a caller that watches [`Self::has_frames`] itself, so a frame
    /// costs no interrupt. [`Self::enable_interrupts`] asks again.
    pub fn disable_receive_interrupts(&mut self) {
        if let Some(mem) = self.mem.as_ref() {
            self.rx.queue.disable_interrupts(mem);
        }
    }

    /// Acknowledge the device's `InterruptStatus` (one or two exits), for
    /// transports whose interrupt is a line that stays raised until then
    /// (QEMU's virtio-MMIO). Call it before [`Self::enable_interrupts`]:
    /// whatever the device signals after it raises the line again.
    pub fn acknowledge_interrupt(&self) {
        self.transport.acknowledge_interrupt();
    }

    /// Ask for an interrupt when a frame arrives and, if every transmit
    /// buffer is with the device, when one comes back. Returns whether
    /// such work is already there: then the caller polls again rather
    /// than sleeping, since the interrupt for it may never come (§2.7.7.2).
    pub fn enable_interrupts(&mut self) -> bool {
        let Some(mem) = self.mem.as_ref() else {
            return false;
        };
        let has_rx = self.rx.queue.enable_interrupts(mem);
        if !self.tx.free.is_empty() {
            return has_rx;
        }
        self.tx.reclaim(mem);
        let has_tx = !self.tx.free.is_empty() || self.tx.queue.enable_interrupts(mem);
        has_rx || has_tx
    }
}

impl<R: DeviceRegisters, M: DmaMemory> Drop for NetDriver<R, M> {
    fn drop(&mut self) {
        if self.transport.reset().is_err() {
            // The device may still write into the region: never free it.
            core::mem::forget(self.mem.take());
        }
    }
}

impl Rx {
    fn buffer_addr(&self, buffer: u16) -> u64 {
        self.buffers_addr + u64::from(self.buffer_bytes) * u64::from(buffer)
    }

    /// Give `buffer` to the device (unpublished).
    fn post(&mut self, mem: &impl DmaMemory, buffer: u16) -> Result<(), QueueError> {
        let head = self
            .queue
            .add(mem, &[], &[(self.buffer_addr(buffer), self.buffer_bytes)])?;
        self.buffer_of_head[usize::from(head)] = Some(buffer);
        Ok(())
    }

    /// Copy the next good frame into `self.frame`; its length, and whether
    /// its checksum needs no check ([`Frame::is_checksum_valid`]). Each
    /// buffer the device returns goes straight back to it.
    fn next_frame(&mut self, mem: &impl DmaMemory) -> Option<(usize, bool)> {
        self.queue.disable_interrupts(mem);
        // Bounded: a device that returns only bad buffers cannot keep the
        // driver here.
        for _ in 0..self.queue.layout().size {
            let used = self.queue.pop_used(mem).ok()??;
            let Some(buffer) = self.buffer_of_head[usize::from(used.head)].take() else {
                continue; // cannot happen: the queue only returns heads in flight
            };
            let frame_len = used
                .len
                .and_then(|len| usize::try_from(len).ok())
                .and_then(|len| len.checked_sub(NET_HDR_BYTES))
                .filter(|len| (MIN_FRAME_BYTES..=self.frame.len()).contains(len));
            let mut flags = [0];
            match frame_len {
                Some(len) => {
                    let addr = self.buffer_addr(buffer);
                    if self.has_checksum_flag {
                        mem.read_bytes(addr, &mut flags);
                    }
                    mem.read_bytes(addr + NET_HDR_BYTES as u64, &mut self.frame[..len]);
                }
                None => self.errors += 1,
            }
            // Back to the device at once; the header needs no reset (the
            // device writes it).
            if self.post(mem, buffer).is_err() {
                return None; // broken queue
            }
            self.queue.publish(mem);
            if let Some(len) = frame_len {
                self.frames += 1;
                self.bytes += len as u64;
                return Some((len, flags[0] & (HDR_F_DATA_VALID | HDR_F_NEEDS_CSUM) != 0));
            }
        }
        None
    }
}

impl Tx {
    fn buffer_addr(&self, buffer: u16) -> u64 {
        self.buffers_addr + u64::from(self.buffer_bytes) * u64::from(buffer)
    }

    /// Take back every buffer the device has finished with.
    fn reclaim(&mut self, mem: &impl DmaMemory) {
        // Ends: each entry returned frees a distinct chain in flight.
        while let Ok(Some(used)) = self.queue.pop_used(mem) {
            if let Some(buffer) = self.buffer_of_head[usize::from(used.head)].take() {
                self.free.push(buffer);
            }
        }
        self.queue.disable_interrupts(mem);
    }
}

/// The right to send one frame, from [`NetDriver::transmit`] or
/// [`NetDriver::receive`].
pub struct TxSlot<'a, R: DeviceRegisters, M: DmaMemory> {
    tx: &'a mut Tx,
    mem: &'a M,
    /// The device is told at [`NetDriver::flush`].
    _registers: PhantomData<&'a R>,
}

impl<R: DeviceRegisters, M: DmaMemory> TxSlot<'_, R, M> {
    /// Let `fill` write a frame of `len` bytes, then give it to the device
    /// (which learns of it at the next [`NetDriver::flush`]). A frame
    /// longer than [`NetDriver::max_frame_bytes`], or with no free
    /// buffer, is written by `fill` all the same and dropped (counted).
    pub fn send<T>(self, len: usize, fill: impl FnOnce(&mut [u8]) -> T) -> T {
        let Self { tx, mem, .. } = self;
        if len > tx.max_frame_bytes {
            tx.dropped += 1;
            return fill(vec![0; len].as_mut_slice());
        }
        let buffer = tx.free.pop().or_else(|| {
            tx.reclaim(mem);
            tx.free.pop()
        });
        let result = fill(&mut tx.scratch[..len]);
        let Some(buffer) = buffer else {
            tx.dropped += 1;
            return result;
        };
        let addr = tx.buffer_addr(buffer);
        mem.write_bytes(addr, &[0; NET_HDR_BYTES]);
        mem.write_bytes(addr + NET_HDR_BYTES as u64, &tx.scratch[..len]);
        #[allow(clippy::cast_possible_truncation)] // at most a buffer
        let chain_len = (NET_HDR_BYTES + len) as u32;
        match tx.queue.add(mem, &[(addr, chain_len)], &[]) {
            Ok(head) => {
                tx.buffer_of_head[usize::from(head)] = Some(buffer);
                tx.queue.publish(mem);
                tx.frames += 1;
                tx.bytes += len as u64;
            }
            Err(_) => {
                tx.free.push(buffer);
                tx.dropped += 1;
            }
        }
        result
    }
}

/// The largest power of two no larger than `n` (at least 1).
fn power_of_two_at_most(n: u16) -> u16 {
    1 << n.max(1).ilog2()
}
