//! A split virtqueue, driver side (virtio 1.2 §2.7).
//!
//! Three areas in shared memory (§2.7.1): the descriptor table (16 bytes
//! per descriptor), the driver area or available ring (`flags`, `idx`,
//! `ring[size]`, `used_event`) and the device area or used ring (`flags`,
//! `idx`, `ring[size]` of `{id: u32, len: u32}`, `avail_event`).
//!
//! [`SplitQueue`] keeps everything it needs to trust in its own memory:
//! the free list and the links of every chain in flight live in private
//! arrays, never read back from the descriptor table, so the device can
//! change nothing but the used ring's contents, and those are checked
//! ([`SplitQueue::pop_used`]).
//!
//! Notification suppression (§2.7.7, §2.7.10): with `VIRTIO_F_EVENT_IDX`,
//! the driver notifies only when the device's `avail_event` lies among
//! the entries published since the last decision, and the device
//! interrupts only when it crosses `used_event`. Without it, the flags
//! `VIRTQ_USED_F_NO_NOTIFY` and `VIRTQ_AVAIL_F_NO_INTERRUPT` serve.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::{DmaMemory, align_up, write_zeros};

/// Largest split queue (§2.7: "Queue Size ... maximum 32768").
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// Bytes of a descriptor.
const DESC_BYTES: u64 = 16;
/// `VIRTQ_DESC_F_NEXT`: the chain continues at `next`.
const DESC_F_NEXT: u16 = 1;
/// `VIRTQ_DESC_F_WRITE`: the device writes this buffer.
const DESC_F_WRITE: u16 = 2;
/// `VIRTQ_AVAIL_F_NO_INTERRUPT` (without `EVENT_IDX`).
const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// `VIRTQ_USED_F_NO_NOTIFY` (without `EVENT_IDX`).
const USED_F_NO_NOTIFY: u16 = 1;
/// The used ring starts on its own cache line, so the device's writes
/// there do not share a line with the driver's writes to the available
/// ring (the specification asks for 4-byte alignment only, §2.7).
const USED_RING_ALIGN: u64 = 64;
/// Distance from the next used index to `used_event` while interrupts are
/// off: the device can never cross it, since at most [`MAX_QUEUE_SIZE`]
/// (0x8000) chains are in flight.
const FAR_AWAY: u16 = 0x8000;

/// Where a queue's three areas are, and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLayout {
    /// Entries in the queue: a power of two, at most [`MAX_QUEUE_SIZE`].
    pub size: u16,
    /// Descriptor table, 16-byte aligned.
    pub desc_addr: u64,
    /// Driver area (available ring), 2-byte aligned.
    pub avail_addr: u64,
    /// Device area (used ring), 4-byte aligned.
    pub used_addr: u64,
}

impl QueueLayout {
    /// Bytes a queue of `size` entries takes when placed by [`Self::at`].
    pub const fn bytes(size: u16) -> u64 {
        let size = size as u64;
        Self::used_offset(size) + 6 + 8 * size
    }

    /// The three areas of a queue of `size` entries, one after the other
    /// from `base` (16-byte aligned), with the used ring on its own cache
    /// line.
    pub const fn at(base: u64, size: u16) -> Self {
        Self {
            size,
            desc_addr: base,
            avail_addr: base + DESC_BYTES * size as u64,
            used_addr: base + Self::used_offset(size as u64),
        }
    }

    const fn used_offset(size: u64) -> u64 {
        // Descriptors, then flags, idx, ring and used_event.
        align_up(DESC_BYTES * size + 6 + 2 * size, USED_RING_ALIGN)
    }

    /// Whether the size is a power of two no larger than
    /// [`MAX_QUEUE_SIZE`] and the areas are aligned as §2.7 requires.
    pub fn is_valid(&self) -> bool {
        self.size.is_power_of_two()
            && self.size <= MAX_QUEUE_SIZE
            && self.desc_addr.is_multiple_of(16)
            && self.avail_addr.is_multiple_of(2)
            && self.used_addr.is_multiple_of(4)
    }

    fn desc(&self, index: u16) -> u64 {
        self.desc_addr + DESC_BYTES * u64::from(index)
    }
    fn avail_flags(&self) -> u64 {
        self.avail_addr
    }
    fn avail_idx(&self) -> u64 {
        self.avail_addr + 2
    }
    fn avail_ring(&self, slot: u16) -> u64 {
        self.avail_addr + 4 + 2 * u64::from(slot)
    }
    fn used_event(&self) -> u64 {
        self.avail_ring(self.size)
    }
    fn avail_bytes(&self) -> u64 {
        6 + 2 * u64::from(self.size)
    }
    fn used_flags(&self) -> u64 {
        self.used_addr
    }
    fn used_idx(&self) -> u64 {
        self.used_addr + 2
    }
    fn used_ring(&self, slot: u16) -> u64 {
        self.used_addr + 4 + 8 * u64::from(slot)
    }
    fn avail_event(&self) -> u64 {
        self.used_ring(self.size)
    }
    fn used_bytes(&self) -> u64 {
        6 + 8 * u64::from(self.size)
    }
}

/// A chain the device has finished with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    /// The chain's head, as [`SplitQueue::add`] returned it. Its
    /// descriptors are free again.
    pub head: u16,
    /// Bytes the device says it wrote into the chain's writable buffers,
    /// or `None` when that is more than they hold (a broken device: none
    /// of the bytes can be trusted).
    pub len: Option<u32>,
}

/// Why a chain could not be added or a used entry read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// Not enough free descriptors for the chain.
    Full,
    /// A chain with no buffer.
    EmptyChain,
    /// The layout is invalid (a driver bug).
    BadLayout,
    /// The device's used index ran ahead of the chains it was given: the
    /// queue is unusable until the device is reset.
    Broken,
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full => "virtqueue full",
            Self::EmptyChain => "empty descriptor chain",
            Self::BadLayout => "bad virtqueue layout",
            Self::Broken => "device broke the virtqueue protocol",
        })
    }
}

/// The driver's side of one split virtqueue.
pub struct SplitQueue {
    layout: QueueLayout,
    has_event_idx: bool,
    /// Private links: for a free descriptor, the next free one; for a
    /// descriptor in a chain, the next one of the chain.
    links: Vec<u16>,
    free_head: u16,
    free_count: u16,
    /// Per head: descriptors in its chain while it is in flight, else 0.
    chain_len: Vec<u16>,
    /// Per head: bytes the device may write into the chain.
    writable_bytes: Vec<u32>,
    /// The available index including chains added but not yet published.
    next_avail: u16,
    /// The available index the device can see.
    published_avail: u16,
    /// The available index when the driver last decided whether to notify.
    notified_avail: u16,
    /// The next used entry to read.
    last_used: u16,
    /// Chains published and not yet returned.
    outstanding: u16,
    are_interrupts_enabled: bool,
    is_broken: bool,
    bad_used_entries: u64,
}

impl SplitQueue {
    /// A queue over `layout`, whose areas are zeroed here; `has_event_idx`
    /// if `VIRTIO_F_EVENT_IDX` was negotiated. Interrupts start enabled.
    ///
    /// # Errors
    /// [`QueueError::BadLayout`] if the layout is not valid.
    pub fn new(
        mem: &impl DmaMemory,
        layout: QueueLayout,
        has_event_idx: bool,
    ) -> Result<Self, QueueError> {
        if !layout.is_valid() {
            return Err(QueueError::BadLayout);
        }
        let size = layout.size;
        write_zeros(mem, layout.desc_addr, DESC_BYTES * u64::from(size));
        write_zeros(mem, layout.avail_addr, layout.avail_bytes());
        write_zeros(mem, layout.used_addr, layout.used_bytes());
        let links = (1..=size).collect();
        Ok(Self {
            layout,
            has_event_idx,
            links,
            free_head: 0,
            free_count: size,
            chain_len: vec![0; usize::from(size)],
            writable_bytes: vec![0; usize::from(size)],
            next_avail: 0,
            published_avail: 0,
            notified_avail: 0,
            last_used: 0,
            outstanding: 0,
            are_interrupts_enabled: true,
            is_broken: false,
            bad_used_entries: 0,
        })
    }

    /// The queue's layout.
    pub fn layout(&self) -> &QueueLayout {
        &self.layout
    }

    /// Descriptors not in any chain.
    pub fn free_descriptors(&self) -> u16 {
        self.free_count
    }

    /// Whether the device broke the protocol ([`QueueError::Broken`]).
    pub fn is_broken(&self) -> bool {
        self.is_broken
    }

    /// Used entries skipped because their id was not the head of a chain
    /// in flight (out of range, or returned twice).
    pub fn bad_used_entries(&self) -> u64 {
        self.bad_used_entries
    }

    /// Put a chain of `readable` then `writable` buffers (address, length)
    /// in the descriptor table and the available ring, unpublished
    /// (§2.7.13.1, §2.7.13.2). Returns the chain's head.
    ///
    /// # Errors
    /// No buffer, not enough free descriptors, or a broken queue.
    pub fn add(
        &mut self,
        mem: &impl DmaMemory,
        readable: &[(u64, u32)],
        writable: &[(u64, u32)],
    ) -> Result<u16, QueueError> {
        if self.is_broken {
            return Err(QueueError::Broken);
        }
        let count = readable.len() + writable.len();
        if count == 0 {
            return Err(QueueError::EmptyChain);
        }
        if count > usize::from(self.free_count) {
            return Err(QueueError::Full);
        }
        // The chain is the first `count` descriptors of the free list, in
        // its order, so the private links already describe the chain.
        let head = self.free_head;
        let mut index = head;
        let mut writable_bytes = 0u32;
        let buffers = readable
            .iter()
            .map(|b| (b, 0))
            .chain(writable.iter().map(|b| (b, DESC_F_WRITE)));
        for (n, (&(addr, len), flags)) in buffers.enumerate() {
            let next = self.links[usize::from(index)];
            let desc = self.layout.desc(index);
            let is_last = n + 1 == count;
            mem.write_u64(desc, addr);
            mem.write_u32(desc + 8, len);
            mem.write_u16(desc + 12, if is_last { flags } else { flags | DESC_F_NEXT });
            mem.write_u16(desc + 14, if is_last { 0 } else { next });
            if flags == DESC_F_WRITE {
                writable_bytes = writable_bytes.saturating_add(len);
            }
            if is_last {
                self.free_head = next;
            } else {
                index = next;
            }
        }
        #[allow(clippy::cast_possible_truncation)] // count <= free_count
        let count = count as u16;
        self.free_count -= count;
        self.chain_len[usize::from(head)] = count;
        self.writable_bytes[usize::from(head)] = writable_bytes;
        let slot = self.next_avail & (self.layout.size - 1);
        mem.write_u16(self.layout.avail_ring(slot), head);
        self.next_avail = self.next_avail.wrapping_add(1);
        Ok(head)
    }

    /// Make every chain added so far visible to the device: a write
    /// barrier, then the available index (§2.7.13.3).
    pub fn publish(&mut self, mem: &impl DmaMemory) {
        let added = self.next_avail.wrapping_sub(self.published_avail);
        if added == 0 {
            return;
        }
        mem.publish_fence();
        mem.write_u16(self.layout.avail_idx(), self.next_avail);
        self.published_avail = self.next_avail;
        self.outstanding = self.outstanding.saturating_add(added);
    }

    /// Whether the device wants a notification for the chains published
    /// since the last call (§2.7.13.4): with `EVENT_IDX`, when its
    /// `avail_event` lies among them; without, unless it set
    /// `VIRTQ_USED_F_NO_NOTIFY`. The full barrier orders the published
    /// index before the read of the device's answer, so either the device
    /// sees the new entries when it re-checks, or the driver sees that it
    /// must notify.
    pub fn should_notify(&mut self, mem: &impl DmaMemory) -> bool {
        if self.is_broken {
            return false;
        }
        let old = self.notified_avail;
        let new = self.published_avail;
        if old == new {
            return false;
        }
        self.notified_avail = new;
        mem.full_fence();
        if self.has_event_idx {
            let event = mem.read_u16(self.layout.avail_event());
            is_event_crossed(event, new, old)
        } else {
            mem.read_u16(self.layout.used_flags()) & USED_F_NO_NOTIFY == 0
        }
    }

    /// Whether the device has returned chains not yet taken back.
    pub fn has_used(&self, mem: &impl DmaMemory) -> bool {
        !self.is_broken && mem.read_u16(self.layout.used_idx()) != self.last_used
    }

    /// Take back the next chain the device has finished with (§2.7.14),
    /// or `None`. Its descriptors are free again.
    ///
    /// Checked: the used index may run ahead of the last one read by at
    /// most the chains outstanding (else the queue is broken for good); an
    /// entry whose id is not the head of a chain in flight is skipped and
    /// counted ([`Self::bad_used_entries`]); a length larger than the
    /// chain's writable buffers is reported as `None`.
    ///
    /// # Errors
    /// [`QueueError::Broken`].
    pub fn pop_used(&mut self, mem: &impl DmaMemory) -> Result<Option<Used>, QueueError> {
        // Bounded, so a device that keeps writing bogus entries cannot keep
        // the driver here.
        if self.is_broken {
            return Err(QueueError::Broken);
        }
        for _ in 0..=self.layout.size {
            let used_idx = mem.read_u16(self.layout.used_idx());
            let ready = used_idx.wrapping_sub(self.last_used);
            if ready == 0 {
                return Ok(None);
            }
            if ready > self.outstanding {
                self.is_broken = true;
                return Err(QueueError::Broken);
            }
            mem.consume_fence();
            let entry = self
                .layout
                .used_ring(self.last_used & (self.layout.size - 1));
            let id = mem.read_u32(entry);
            let len = mem.read_u32(entry + 4);
            self.last_used = self.last_used.wrapping_add(1);
            let Some(head) = self.in_flight_head(id) else {
                self.bad_used_entries += 1;
                continue;
            };
            let capacity = self.writable_bytes[usize::from(head)];
            self.free_chain(head);
            self.outstanding = self.outstanding.saturating_sub(1);
            return Ok(Some(Used {
                head,
                len: (len <= capacity).then_some(len),
            }));
        }
        Ok(None)
    }

    /// Ask for an interrupt when the device returns the next chain
    /// (§2.7.7.2: `used_event` with `EVENT_IDX`, else clearing
    /// `VIRTQ_AVAIL_F_NO_INTERRUPT`), then look at the used index again
    /// after a full barrier: returns whether chains arrived already, in
    /// which case no interrupt may come for them and the caller polls.
    pub fn enable_interrupts(&mut self, mem: &impl DmaMemory) -> bool {
        if self.is_broken {
            return false;
        }
        if self.has_event_idx {
            mem.write_u16(self.layout.used_event(), self.last_used);
        } else if !self.are_interrupts_enabled {
            mem.write_u16(self.layout.avail_flags(), 0);
        }
        self.are_interrupts_enabled = true;
        mem.full_fence();
        mem.read_u16(self.layout.used_idx()) != self.last_used
    }

    /// Ask the device not to interrupt for returned chains. With
    /// `EVENT_IDX`, `used_event` goes half the index space ahead; after
    /// 32768 more chains without a call here or to
    /// [`Self::enable_interrupts`] it is crossed once (one spurious
    /// interrupt). A hint only: the device may interrupt anyway (§2.7.7).
    pub fn disable_interrupts(&mut self, mem: &impl DmaMemory) {
        if !self.are_interrupts_enabled {
            return;
        }
        self.are_interrupts_enabled = false;
        if self.has_event_idx {
            mem.write_u16(
                self.layout.used_event(),
                self.last_used.wrapping_add(FAR_AWAY),
            );
        } else {
            mem.write_u16(self.layout.avail_flags(), AVAIL_F_NO_INTERRUPT);
        }
    }

    fn in_flight_head(&self, id: u32) -> Option<u16> {
        let head = u16::try_from(id).ok()?;
        let len = self.chain_len.get(usize::from(head))?;
        (*len != 0).then_some(head)
    }

    fn free_chain(&mut self, head: u16) {
        let count = core::mem::take(&mut self.chain_len[usize::from(head)]);
        let mut tail = head;
        for _ in 1..count {
            tail = self.links[usize::from(tail)];
        }
        self.links[usize::from(tail)] = self.free_head;
        self.free_head = head;
        self.free_count += count;
    }
}

/// `vring_need_event` (§2.7.10): whether `event` lies in `[old, new)`,
/// the indices that moved from `old` to `new`, modulo 2^16.
pub(crate) fn is_event_crossed(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}
