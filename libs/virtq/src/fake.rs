//! Test doubles: [`TestMemory`], shared memory over a `Vec` that can log
//! the driver's accesses and fences in order; [`DeviceRing`], the device's
//! side of one split virtqueue over it; and [`FakeNet`], a virtio-MMIO
//! network card (registers, status handshake, configuration space, both
//! queues) stepped by hand from the tests, single-threaded.
//!
//! The device side reads and writes memory through `get_*`/`put_*`, which
//! are not logged, so a log holds only what the driver did.

use std::cell::RefCell;
use std::rc::Rc;
use std::vec;
use std::vec::Vec;

use crate::mmio::{feature, reg, status};
use crate::queue::{QueueLayout, is_event_crossed};
use crate::{DeviceRegisters, DmaMemory, NET_HDR_BYTES};

/// One thing the driver did to shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read { addr: u64, len: usize },
    Write { addr: u64, len: usize },
    PublishFence,
    ConsumeFence,
    FullFence,
}

struct MemInner {
    bytes: Vec<u8>,
    log: Option<Vec<Access>>,
}

/// Shared memory from address 0 to its size.
#[derive(Clone)]
pub(crate) struct TestMemory(Rc<RefCell<MemInner>>);

impl TestMemory {
    pub(crate) fn new(size: usize) -> Self {
        Self(Rc::new(RefCell::new(MemInner {
            bytes: vec![0; size],
            log: None,
        })))
    }

    /// Start logging the driver's accesses (dropping any earlier log).
    pub(crate) fn start_log(&self) {
        self.0.borrow_mut().log = Some(Vec::new());
    }

    pub(crate) fn take_log(&self) -> Vec<Access> {
        self.0.borrow_mut().log.take().unwrap_or_default()
    }

    fn range(&self, addr: u64, len: usize) -> core::ops::Range<usize> {
        let start = usize::try_from(addr).unwrap();
        let end = start.checked_add(len).unwrap();
        assert!(
            end <= self.0.borrow().bytes.len(),
            "access at {addr:#x}+{len} outside memory"
        );
        start..end
    }

    fn record(&self, access: Access) {
        if let Some(log) = self.0.borrow_mut().log.as_mut() {
            log.push(access);
        }
    }

    pub(crate) fn get_bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let range = self.range(addr, len);
        self.0.borrow().bytes[range].to_vec()
    }

    pub(crate) fn put_bytes(&self, addr: u64, bytes: &[u8]) {
        let range = self.range(addr, bytes.len());
        self.0.borrow_mut().bytes[range].copy_from_slice(bytes);
    }

    pub(crate) fn get_u16(&self, addr: u64) -> u16 {
        u16::from_le_bytes(self.get_bytes(addr, 2).try_into().unwrap())
    }
    pub(crate) fn get_u32(&self, addr: u64) -> u32 {
        u32::from_le_bytes(self.get_bytes(addr, 4).try_into().unwrap())
    }
    pub(crate) fn get_u64(&self, addr: u64) -> u64 {
        u64::from_le_bytes(self.get_bytes(addr, 8).try_into().unwrap())
    }
    pub(crate) fn put_u16(&self, addr: u64, value: u16) {
        self.put_bytes(addr, &value.to_le_bytes());
    }
    pub(crate) fn put_u32(&self, addr: u64, value: u32) {
        self.put_bytes(addr, &value.to_le_bytes());
    }

    fn driver_read(&self, addr: u64, len: usize) -> Vec<u8> {
        assert!(
            addr.is_multiple_of(len.clamp(1, 8) as u64) || len > 8,
            "misaligned read"
        );
        self.record(Access::Read { addr, len });
        self.get_bytes(addr, len)
    }

    fn driver_write(&self, addr: u64, bytes: &[u8]) {
        let len = bytes.len();
        assert!(
            addr.is_multiple_of(len.clamp(1, 8) as u64) || len > 8,
            "misaligned write"
        );
        self.record(Access::Write { addr, len });
        self.put_bytes(addr, bytes);
    }
}

impl DmaMemory for TestMemory {
    fn read_u16(&self, addr: u64) -> u16 {
        u16::from_le_bytes(self.driver_read(addr, 2).try_into().unwrap())
    }
    fn read_u32(&self, addr: u64) -> u32 {
        u32::from_le_bytes(self.driver_read(addr, 4).try_into().unwrap())
    }
    fn read_u64(&self, addr: u64) -> u64 {
        u64::from_le_bytes(self.driver_read(addr, 8).try_into().unwrap())
    }
    fn write_u16(&self, addr: u64, value: u16) {
        self.driver_write(addr, &value.to_le_bytes());
    }
    fn write_u32(&self, addr: u64, value: u32) {
        self.driver_write(addr, &value.to_le_bytes());
    }
    fn write_u64(&self, addr: u64, value: u64) {
        self.driver_write(addr, &value.to_le_bytes());
    }
    fn read_bytes(&self, addr: u64, out: &mut [u8]) {
        self.record(Access::Read {
            addr,
            len: out.len(),
        });
        out.copy_from_slice(&self.get_bytes(addr, out.len()));
    }
    fn write_bytes(&self, addr: u64, bytes: &[u8]) {
        self.record(Access::Write {
            addr,
            len: bytes.len(),
        });
        self.put_bytes(addr, bytes);
    }
    fn publish_fence(&self) {
        self.record(Access::PublishFence);
    }
    fn consume_fence(&self) {
        self.record(Access::ConsumeFence);
    }
    fn full_fence(&self) {
        self.record(Access::FullFence);
    }
}

/// A chain as the device sees it.
#[derive(Debug)]
pub(crate) struct DeviceChain {
    pub(crate) head: u16,
    /// (address, length, is_writable) per descriptor.
    pub(crate) buffers: Vec<(u64, u32, bool)>,
}

/// The device's side of one split queue.
pub(crate) struct DeviceRing {
    pub(crate) layout: QueueLayout,
    pub(crate) has_event_idx: bool,
    /// Next available entry to take.
    pub(crate) next_avail: u16,
    /// The used index as last written.
    pub(crate) used_idx: u16,
    /// Interrupts the device decided to send.
    pub(crate) interrupts: u32,
}

impl DeviceRing {
    pub(crate) fn new(layout: QueueLayout, has_event_idx: bool) -> Self {
        Self {
            layout,
            has_event_idx,
            next_avail: 0,
            used_idx: 0,
            interrupts: 0,
        }
    }

    fn size(&self) -> u64 {
        u64::from(self.layout.size)
    }

    pub(crate) fn avail_idx(&self, mem: &TestMemory) -> u16 {
        mem.get_u16(self.layout.avail_addr + 2)
    }

    /// Take the next available chain.
    pub(crate) fn pop(&mut self, mem: &TestMemory) -> Option<DeviceChain> {
        if self.avail_idx(mem) == self.next_avail {
            return None;
        }
        let slot = u64::from(self.next_avail) % self.size();
        let head = mem.get_u16(self.layout.avail_addr + 4 + 2 * slot);
        self.next_avail = self.next_avail.wrapping_add(1);
        let mut buffers = Vec::new();
        let mut index = head;
        for _ in 0..self.layout.size {
            assert!(
                index < self.layout.size,
                "descriptor index {index} out of range"
            );
            let desc = self.layout.desc_addr + 16 * u64::from(index);
            let flags = mem.get_u16(desc + 12);
            buffers.push((mem.get_u64(desc), mem.get_u32(desc + 8), flags & 2 != 0));
            if flags & 1 == 0 {
                return Some(DeviceChain { head, buffers });
            }
            index = mem.get_u16(desc + 14);
        }
        panic!("descriptor chain loops");
    }

    /// Write a used entry, publish it, and decide on an interrupt.
    pub(crate) fn push(&mut self, mem: &TestMemory, id: u32, len: u32) {
        self.put_entry(mem, id, len);
        let old = self.used_idx;
        self.used_idx = old.wrapping_add(1);
        mem.put_u16(self.layout.used_addr + 2, self.used_idx);
        let wants_interrupt = if self.has_event_idx {
            let used_event = mem.get_u16(self.layout.avail_addr + 4 + 2 * self.size());
            is_event_crossed(used_event, self.used_idx, old)
        } else {
            mem.get_u16(self.layout.avail_addr) & 1 == 0
        };
        if wants_interrupt {
            self.interrupts += 1;
        }
    }

    /// Write the entry at the current used index without publishing it.
    pub(crate) fn put_entry(&self, mem: &TestMemory, id: u32, len: u32) {
        let entry = self.layout.used_addr + 4 + 8 * (u64::from(self.used_idx) % self.size());
        mem.put_u32(entry, id);
        mem.put_u32(entry + 4, len);
    }

    /// Write a used index as a broken device would.
    pub(crate) fn set_used_idx(&mut self, mem: &TestMemory, idx: u16) {
        self.used_idx = idx;
        mem.put_u16(self.layout.used_addr + 2, idx);
    }

    /// Ask for a notification when the driver publishes past what the
    /// device has taken (`avail_event`, or clearing `NO_NOTIFY`).
    pub(crate) fn want_notifications(&self, mem: &TestMemory) {
        if self.has_event_idx {
            mem.put_u16(self.layout.used_addr + 4 + 8 * self.size(), self.next_avail);
        } else {
            mem.put_u16(self.layout.used_addr, 0);
        }
    }

    /// Ask for no notifications (without `EVENT_IDX`: `NO_NOTIFY`; with
    /// it, `avail_event` simply stays behind).
    pub(crate) fn refuse_notifications(&self, mem: &TestMemory) {
        if !self.has_event_idx {
            mem.put_u16(self.layout.used_addr, 1);
        }
    }
}

#[derive(Clone, Copy, Default)]
struct QueueRegs {
    num: u32,
    desc: u64,
    driver: u64,
    device: u64,
    is_ready: bool,
}

/// The fake card's state; tests set the public knobs before the driver
/// starts.
pub(crate) struct DeviceState {
    pub(crate) mem: TestMemory,
    pub(crate) magic: u32,
    pub(crate) version: u32,
    pub(crate) device_id: u32,
    pub(crate) offered: u64,
    pub(crate) config: Vec<u8>,
    pub(crate) queue_num_max: [u32; 2],
    /// Clear `FEATURES_OK` whatever the driver accepted.
    pub(crate) refuses_features: bool,
    /// `Status` reads non-zero this many times after a reset.
    pub(crate) reset_reads_needed: u32,
    /// Change the configuration generation on this many config reads.
    pub(crate) generation_changes: u32,
    /// Queues whose `QueueReady` reads 1 from the start.
    pub(crate) preset_ready: [bool; 2],

    pub(crate) status: u32,
    /// Every value written to `Status`.
    pub(crate) status_writes: Vec<u32>,
    pub(crate) driver_features: u64,
    /// Register reads and writes (each one a VM exit on real hardware).
    pub(crate) accesses: u32,
    /// `QueueNotify` values written.
    pub(crate) notifications: Vec<u32>,
    pub(crate) rings: Vec<DeviceRing>,
    device_features_sel: u32,
    driver_features_sel: u32,
    queue_sel: u32,
    queues: [QueueRegs; 2],
    generation: u32,
    reset_reads_left: u32,
}

impl DeviceState {
    fn reset(&mut self) {
        self.status = 0;
        self.driver_features = 0;
        self.queues = [QueueRegs::default(); 2];
        self.rings.clear();
        self.reset_reads_left = self.reset_reads_needed;
    }

    fn selected(&mut self) -> Option<&mut QueueRegs> {
        self.queues.get_mut(usize::try_from(self.queue_sel).ok()?)
    }

    fn write_status(&mut self, value: u32) {
        self.status_writes.push(value);
        if value == 0 {
            self.reset();
            return;
        }
        let mut value = value;
        let is_new_features_ok =
            value & status::FEATURES_OK != 0 && self.status & status::FEATURES_OK == 0;
        if is_new_features_ok
            && (self.refuses_features
                || self.driver_features & !self.offered != 0
                || self.driver_features & feature::VERSION_1 == 0)
        {
            value &= !status::FEATURES_OK;
        }
        let is_new_driver_ok =
            value & status::DRIVER_OK != 0 && self.status & status::DRIVER_OK == 0;
        self.status = value;
        if is_new_driver_ok {
            let has_event_idx = self.driver_features & feature::EVENT_IDX != 0;
            self.rings = self
                .queues
                .iter()
                .map(|q| {
                    assert!(q.is_ready, "DRIVER_OK with a queue not ready");
                    let layout = QueueLayout {
                        size: u16::try_from(q.num).unwrap(),
                        desc_addr: q.desc,
                        avail_addr: q.driver,
                        used_addr: q.device,
                    };
                    DeviceRing::new(layout, has_event_idx)
                })
                .collect();
        }
    }
}

fn set_half(value: &mut u64, is_high: bool, half: u32) {
    *value = if is_high {
        *value & 0xffff_ffff | u64::from(half) << 32
    } else {
        *value & !0xffff_ffff | u64::from(half)
    };
}

/// The registers of a [`FakeNet`], for the driver.
pub(crate) struct FakeRegs(Rc<RefCell<DeviceState>>);

impl DeviceRegisters for FakeRegs {
    fn read32(&self, offset: u32) -> u32 {
        let mut d = self.0.borrow_mut();
        d.accesses += 1;
        let queue_sel = d.queue_sel;
        match offset {
            reg::MAGIC_VALUE => d.magic,
            reg::VERSION => d.version,
            reg::DEVICE_ID => d.device_id,
            reg::DEVICE_FEATURES => match d.device_features_sel {
                0 => d.offered as u32,
                1 => (d.offered >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => d
                .queue_num_max
                .get(queue_sel as usize)
                .copied()
                .unwrap_or(0),
            reg::QUEUE_READY => {
                let preset = d
                    .preset_ready
                    .get(queue_sel as usize)
                    .copied()
                    .unwrap_or(false);
                u32::from(preset || d.selected().is_some_and(|q| q.is_ready))
            }
            reg::STATUS if d.reset_reads_left > 0 => {
                d.reset_reads_left -= 1;
                status::DEVICE_NEEDS_RESET
            }
            reg::STATUS => d.status,
            reg::INTERRUPT_STATUS => 0,
            reg::CONFIG_GENERATION => d.generation,
            _ => panic!("read of register {offset:#x}"),
        }
    }

    fn write32(&self, offset: u32, value: u32) {
        let mut d = self.0.borrow_mut();
        d.accesses += 1;
        match offset {
            reg::DEVICE_FEATURES_SEL => d.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => d.driver_features_sel = value,
            reg::DRIVER_FEATURES => {
                let is_high = d.driver_features_sel == 1;
                set_half(&mut d.driver_features, is_high, value);
            }
            reg::QUEUE_SEL => d.queue_sel = value,
            reg::QUEUE_NUM => d.selected().unwrap().num = value,
            reg::QUEUE_DESC_LOW => set_half(&mut d.selected().unwrap().desc, false, value),
            reg::QUEUE_DESC_HIGH => set_half(&mut d.selected().unwrap().desc, true, value),
            reg::QUEUE_DRIVER_LOW => set_half(&mut d.selected().unwrap().driver, false, value),
            reg::QUEUE_DRIVER_HIGH => set_half(&mut d.selected().unwrap().driver, true, value),
            reg::QUEUE_DEVICE_LOW => set_half(&mut d.selected().unwrap().device, false, value),
            reg::QUEUE_DEVICE_HIGH => set_half(&mut d.selected().unwrap().device, true, value),
            reg::QUEUE_READY => d.selected().unwrap().is_ready = value == 1,
            reg::QUEUE_NOTIFY => d.notifications.push(value),
            reg::INTERRUPT_ACK => {}
            reg::STATUS => d.write_status(value),
            _ => panic!("write of register {offset:#x}"),
        }
    }

    fn read8(&self, offset: u32) -> u8 {
        let mut d = self.0.borrow_mut();
        d.accesses += 1;
        assert!(offset >= reg::CONFIG, "byte read of register {offset:#x}");
        if d.generation_changes > 0 {
            d.generation_changes -= 1;
            d.generation += 1;
        }
        d.config
            .get((offset - reg::CONFIG) as usize)
            .copied()
            .unwrap_or(0)
    }
}

/// MAC address of the fake card.
pub(crate) const FAKE_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// A fake virtio-net card over a [`TestMemory`].
pub(crate) struct FakeNet(pub(crate) Rc<RefCell<DeviceState>>);

impl FakeNet {
    /// A card like eremite's VMM's: VERSION_1, MAC, STATUS, EVENT_IDX,
    /// queues of 256.
    pub(crate) fn new(mem: &TestMemory) -> Self {
        let mut config = FAKE_MAC.to_vec();
        config.extend_from_slice(&1u16.to_le_bytes());
        Self(Rc::new(RefCell::new(DeviceState {
            mem: mem.clone(),
            magic: 0x7472_6976,
            version: 2,
            device_id: 1,
            offered: feature::VERSION_1
                | crate::net_feature::MAC
                | crate::net_feature::STATUS
                | feature::EVENT_IDX,
            config,
            queue_num_max: [256, 256],
            refuses_features: false,
            reset_reads_needed: 0,
            generation_changes: 0,
            preset_ready: [false; 2],
            status: 0,
            status_writes: Vec::new(),
            driver_features: 0,
            accesses: 0,
            notifications: Vec::new(),
            rings: Vec::new(),
            device_features_sel: 0,
            driver_features_sel: 0,
            queue_sel: 0,
            queues: [QueueRegs::default(); 2],
            generation: 0,
            reset_reads_left: 0,
        })))
    }

    pub(crate) fn regs(&self) -> FakeRegs {
        FakeRegs(self.0.clone())
    }

    pub(crate) fn state(&self) -> std::cell::RefMut<'_, DeviceState> {
        self.0.borrow_mut()
    }

    /// Run `f` on queue `index`'s device side.
    pub(crate) fn ring<T>(
        &self,
        index: u16,
        f: impl FnOnce(&mut DeviceRing, &TestMemory) -> T,
    ) -> T {
        let mut d = self.0.borrow_mut();
        let mem = d.mem.clone();
        f(&mut d.rings[usize::from(index)], &mem)
    }

    /// Notifications of queue `index` so far.
    pub(crate) fn notifications(&self, index: u16) -> usize {
        self.0
            .borrow()
            .notifications
            .iter()
            .filter(|&&q| q == u32::from(index))
            .count()
    }

    /// Interrupts the device decided on for queue `index` so far.
    pub(crate) fn interrupts(&self, index: u16) -> u32 {
        self.0.borrow().rings[usize::from(index)].interrupts
    }

    /// Receive `frame` from the "network": into the next receive buffer
    /// behind a header with `num_buffers` 1. False if no buffer is posted.
    pub(crate) fn deliver(&self, frame: &[u8]) -> bool {
        self.deliver_with_flags(frame, 0)
    }

    /// [`Self::deliver`] with `flags` in the header (`DATA_VALID`: 2).
    pub(crate) fn deliver_with_flags(&self, frame: &[u8], flags: u8) -> bool {
        self.ring(crate::RX_QUEUE, |ring, mem| {
            let Some(chain) = ring.pop(mem) else {
                return false;
            };
            let mut bytes = vec![0u8; NET_HDR_BYTES];
            bytes[0] = flags;
            bytes[10] = 1;
            bytes.extend_from_slice(frame);
            let mut written = 0;
            for &(addr, len, is_writable) in &chain.buffers {
                assert!(is_writable, "readable buffer in a receive chain");
                let n = (len as usize).min(bytes.len() - written);
                mem.put_bytes(addr, &bytes[written..written + n]);
                written += n;
            }
            assert_eq!(written, bytes.len(), "frame larger than the receive buffer");
            ring.push(mem, u32::from(chain.head), u32::try_from(written).unwrap());
            true
        })
    }

    /// Offer `VIRTIO_NET_F_GUEST_CSUM`.
    pub(crate) fn offer_guest_csum(&self) {
        self.0.borrow_mut().offered |= crate::net_feature::GUEST_CSUM;
    }

    /// Offer `VIRTIO_NET_F_MTU` with `mtu` in the configuration space.
    pub(crate) fn offer_mtu(&self, mtu: u16) {
        let mut d = self.0.borrow_mut();
        d.offered |= crate::net_feature::MTU;
        d.config.resize(10, 0);
        d.config[8..10].copy_from_slice(&1u16.to_le_bytes());
        d.config.extend_from_slice(&mtu.to_le_bytes());
    }

    /// Send every frame the driver made available, returning them
    /// without their header (which must be zero).
    pub(crate) fn collect_tx(&self) -> Vec<Vec<u8>> {
        self.ring(crate::TX_QUEUE, |ring, mem| {
            let mut frames = Vec::new();
            while let Some(chain) = ring.pop(mem) {
                let mut bytes = Vec::new();
                for &(addr, len, is_writable) in &chain.buffers {
                    assert!(!is_writable, "writable buffer in a transmit chain");
                    bytes.extend(mem.get_bytes(addr, len as usize));
                }
                assert_eq!(
                    &bytes[..NET_HDR_BYTES],
                    &[0; NET_HDR_BYTES],
                    "transmit header"
                );
                frames.push(bytes[NET_HDR_BYTES..].to_vec());
                ring.push(mem, u32::from(chain.head), 0);
            }
            frames
        })
    }
}
