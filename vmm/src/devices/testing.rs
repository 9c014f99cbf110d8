//! A fake virtio driver for the device tests: register accesses as a
//! driver makes them, and split queues laid out in guest RAM (virtio 1.2
//! §2.7) that the test fills and reads back like a driver would. Also
//! [`NetNs`], a network namespace for the tests that need a tap.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::fs::File;
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_FEATURES_OK,
};
use virtio_bindings::virtio_mmio as reg;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::Queue;

use super::queue::QueueLayout;
use super::{MmioTransport, VirtioDevice};
use crate::memory::GuestRam;

pub(crate) const NEXT: u16 = VRING_DESC_F_NEXT as u16;
pub(crate) const WRITE: u16 = VRING_DESC_F_WRITE as u16;

/// A 32-bit register read.
pub(crate) fn read_reg<D: VirtioDevice>(t: &mut MmioTransport<D>, offset: u32) -> u32 {
    let mut data = [0u8; 4];
    t.read(u64::from(offset), &mut data);
    u32::from_le_bytes(data)
}

/// A 32-bit register write.
pub(crate) fn write_reg<D: VirtioDevice>(t: &mut MmioTransport<D>, offset: u32, value: u32) {
    t.write(u64::from(offset), &value.to_le_bytes());
}

/// Status bits as §3.1.1 sets them, up to features: ACKNOWLEDGE, DRIVER,
/// the `features`, FEATURES_OK. Returns the status read back.
pub(crate) fn negotiate<D: VirtioDevice>(t: &mut MmioTransport<D>, features: u64) -> u32 {
    write_reg(t, reg::VIRTIO_MMIO_STATUS, 0);
    let mut status = VIRTIO_CONFIG_S_ACKNOWLEDGE;
    write_reg(t, reg::VIRTIO_MMIO_STATUS, status);
    status |= VIRTIO_CONFIG_S_DRIVER;
    write_reg(t, reg::VIRTIO_MMIO_STATUS, status);
    for sel in 0..2 {
        write_reg(t, reg::VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
        write_reg(
            t,
            reg::VIRTIO_MMIO_DRIVER_FEATURES,
            (features >> (32 * sel)) as u32,
        );
    }
    write_reg(
        t,
        reg::VIRTIO_MMIO_STATUS,
        status | VIRTIO_CONFIG_S_FEATURES_OK,
    );
    read_reg(t, reg::VIRTIO_MMIO_STATUS)
}

/// Wait up to five seconds for `done`.
pub(crate) fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A split queue in guest RAM, driven by the test.
pub(crate) struct FakeQueue {
    pub(crate) size: u16,
    pub(crate) desc: u64,
    pub(crate) avail: u64,
    pub(crate) used: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

impl FakeQueue {
    /// A queue of `size` entries at `base` (16-byte aligned): descriptor
    /// table, then the available ring, then the used ring.
    pub(crate) fn new(base: u64, size: u16) -> Self {
        let n = u64::from(size);
        let avail = base + 16 * n;
        let used = (avail + 6 + 2 * n).next_multiple_of(4);
        Self {
            size,
            desc: base,
            avail,
            used,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
        }
    }

    pub(crate) fn layout(&self) -> QueueLayout {
        QueueLayout {
            size: u32::from(self.size),
            descriptor_table: self.desc,
            driver_area: self.avail,
            device_area: self.used,
        }
    }

    /// A ready `virtio-queue` over this layout, as the transport builds it.
    pub(crate) fn queue(&self, ram: &GuestRam, has_event_idx: bool) -> Queue {
        self.layout().build(self.size, ram, has_event_idx).unwrap()
    }

    /// Zero the rings and set the queue up through the transport's
    /// registers as queue `index`.
    pub(crate) fn configure<D: VirtioDevice>(
        &self,
        t: &mut MmioTransport<D>,
        ram: &GuestRam,
        index: u32,
    ) {
        let end = self.used + 6 + 8 * u64::from(self.size);
        ram.write(self.desc, &vec![0; (end - self.desc) as usize])
            .unwrap();
        write_reg(t, reg::VIRTIO_MMIO_QUEUE_SEL, index);
        write_reg(t, reg::VIRTIO_MMIO_QUEUE_NUM, u32::from(self.size));
        for (low, addr) in [
            (reg::VIRTIO_MMIO_QUEUE_DESC_LOW, self.desc),
            (reg::VIRTIO_MMIO_QUEUE_AVAIL_LOW, self.avail),
            (reg::VIRTIO_MMIO_QUEUE_USED_LOW, self.used),
        ] {
            write_reg(t, low, addr as u32);
            write_reg(t, low + 4, (addr >> 32) as u32);
        }
        write_reg(t, reg::VIRTIO_MMIO_QUEUE_READY, 1);
    }

    /// Write descriptor `index`.
    pub(crate) fn write_descriptor(
        &self,
        ram: &GuestRam,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let at = self.desc + 16 * u64::from(index);
        ram.write_obj(at, &addr).unwrap();
        ram.write_obj(at + 8, &len).unwrap();
        ram.write_obj(at + 12, &flags).unwrap();
        ram.write_obj(at + 14, &next).unwrap();
    }

    /// Put `head` in the available ring and publish it.
    pub(crate) fn make_available(&mut self, ram: &GuestRam, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        ram.write_obj(self.avail + 4 + 2 * slot, &head).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        ram.write_obj(self.avail + 2, &self.avail_idx).unwrap();
    }

    /// Offer a chain of `(addr, len, is_device_writable)` buffers; returns
    /// its head index.
    pub(crate) fn offer(&mut self, ram: &GuestRam, buffers: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, is_writable)) in buffers.iter().enumerate() {
            let index = self.next_desc;
            self.next_desc = (self.next_desc + 1) % self.size;
            let mut flags = if is_writable { WRITE } else { 0 };
            if i + 1 < buffers.len() {
                flags |= NEXT;
            }
            self.write_descriptor(ram, index, addr, len, flags, self.next_desc);
        }
        self.make_available(ram, head);
        head
    }

    /// The used ring's `idx`.
    pub(crate) fn used_idx(&self, ram: &GuestRam) -> u16 {
        ram.read_obj(self.used + 2).unwrap()
    }

    /// The used ring's `flags` (bit 0: VRING_USED_F_NO_NOTIFY).
    pub(crate) fn used_flags(&self, ram: &GuestRam) -> u16 {
        ram.read_obj(self.used).unwrap()
    }

    /// Used entries `(id, len)` added since the last call.
    pub(crate) fn take_used(&mut self, ram: &GuestRam) -> Vec<(u32, u32)> {
        let idx = self.used_idx(ram);
        let mut entries = Vec::new();
        while self.used_seen != idx {
            let slot = u64::from(self.used_seen % self.size);
            let at = self.used + 4 + 8 * slot;
            entries.push((ram.read_obj(at).unwrap(), ram.read_obj(at + 4).unwrap()));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        entries
    }

    /// `used_event`, after the available ring (§2.7.10).
    pub(crate) fn set_used_event(&self, ram: &GuestRam, value: u16) {
        let n = u64::from(self.size);
        ram.write_obj(self.avail + 4 + 2 * n, &value).unwrap();
    }

    /// `avail_event`, after the used ring (§2.7.10).
    pub(crate) fn avail_event(&self, ram: &GuestRam) -> u16 {
        let n = u64::from(self.size);
        ram.read_obj(self.used + 4 + 8 * n).unwrap()
    }
}

/// A network namespace made for one test (`ip netns add`), deleted on
/// drop. Needs root and iproute2's `ip`; fails, never skips, without them.
pub(crate) struct NetNs {
    name: String,
}

fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (the tap tests need iproute2): {e}"));
    assert!(
        output.status.success(),
        "`ip {}` failed (the tap tests need root): {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl NetNs {
    pub(crate) fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "eremite-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        Self { name }
    }

    /// `ip -n NAME args...`
    pub(crate) fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Run `f` on a thread inside the namespace.
    pub(crate) fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(&path).unwrap();
                rustix::thread::move_into_link_name_space(
                    ns.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Not `ip()`: a panic while unwinding would abort the test run.
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}
