//! The guest's virtio-MMIO devices: which window and vector each has, and
//! the routing of the vCPUs' MMIO exits to them.
//!
//! Device `n` has the 4 KiB window at [`VIRTIO_MMIO_ADDR`] +
//! [`VIRTIO_MMIO_STRIDE`] × `n` and the local APIC vector
//! [`DEVICE_VECTOR`] + `n` (`interface::layout`); the guest learns both
//! from a `virtio_mmio.device=` token on its command line, which
//! [`MmioBus::cmdline`] gives. Each transport sits behind a [`Mutex`]: every
//! vCPU thread may exit on its registers. The fast paths take no exit and
//! no lock: `kvm` registers each queue's notification event and the
//! interrupt event with KVM (`KVM_IOEVENTFD`, `KVM_IRQFD`).

use std::sync::Mutex;

use eremite_interface::cmdline::VirtioMmio;
use eremite_interface::layout::{
    DEVICE_VECTOR, MAX_VIRTIO_DEVICES, VIRTIO_MMIO_ADDR, VIRTIO_MMIO_STRIDE,
};

use super::{
    HostLink, MMIO_WINDOW_BYTES, MacAddr, MmioTransport, Net, NetBackend, NetCounters,
    TransportState,
};
use crate::lock;

const _: () = assert!(MMIO_WINDOW_BYTES == VIRTIO_MMIO_STRIDE);

/// A network card on the virtio-MMIO transport, backed by a tap or passt
/// (or, in tests, another backend).
pub(crate) type NetCard<B = HostLink> = MmioTransport<Net<B>>;

/// A card as a snapshot keeps it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct SavedCard {
    /// Its Ethernet address (the guest knows it; a restore keeps it).
    pub(crate) mac: [u8; 6],
    pub(crate) transport: TransportState,
}

/// One device on the bus.
pub(crate) struct Slot<B: NetBackend = HostLink> {
    /// Its window and vector, as the guest's command line announces them.
    pub(crate) window: VirtioMmio,
    /// Where its frames go on the host, for the report.
    link: String,
    mac: MacAddr,
    pub(crate) card: Mutex<NetCard<B>>,
}

/// The bus is full: [`MAX_VIRTIO_DEVICES`] devices at most.
#[derive(Debug, thiserror::Error)]
#[error("at most {MAX_VIRTIO_DEVICES} virtio devices fit in the guest's MMIO windows")]
pub struct BusFull;

/// What a network card did, for `--stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetReport {
    /// Where the card's frames went on the host (`tap NAME`, or
    /// user-mode networking).
    pub link: String,
    /// The card's Ethernet address.
    pub mac: MacAddr,
    /// Frames, bytes, drops and errors of the data path.
    pub counters: NetCounters,
    /// Interrupts the device raised (eventfd writes, each an MSI through
    /// `KVM_IRQFD`; the local APIC may merge those that come close together).
    pub interrupts: u64,
    /// Register accesses the transport ignored (bad width, offset or
    /// direction).
    pub bad_register_accesses: u64,
    /// Why the device last asked for a reset (`DEVICE_NEEDS_RESET`), if it
    /// did: the guest's driver broke a rule, or the worker stopped.
    pub failure: Option<String>,
}

/// The virtio-MMIO devices of a VM.
pub(crate) struct MmioBus<B: NetBackend = HostLink> {
    slots: Vec<Slot<B>>,
}

impl<B: NetBackend> Default for MmioBus<B> {
    fn default() -> Self {
        Self { slots: Vec::new() }
    }
}

impl<B: NetBackend> MmioBus<B> {
    /// Put `card` (whose frames go to `link`, address `mac`) in the next
    /// window.
    pub(crate) fn add_net(
        &mut self,
        card: NetCard<B>,
        link: &str,
        mac: MacAddr,
    ) -> Result<(), BusFull> {
        let index = u8::try_from(self.slots.len()).map_err(|_| BusFull)?;
        if u64::from(index) >= MAX_VIRTIO_DEVICES {
            return Err(BusFull);
        }
        self.slots.push(Slot {
            window: VirtioMmio {
                addr: VIRTIO_MMIO_ADDR + u64::from(index) * VIRTIO_MMIO_STRIDE,
                size: MMIO_WINDOW_BYTES,
                vector: DEVICE_VECTOR + index,
            },
            link: link.to_owned(),
            mac,
            card: Mutex::new(card),
        });
        Ok(())
    }

    /// Stop every card for a snapshot, keeping its queues; their states,
    /// in window order.
    pub(crate) fn suspend(&self) -> Vec<SavedCard> {
        self.slots
            .iter()
            .map(|slot| SavedCard {
                mac: slot.mac.0,
                transport: lock(&slot.card).suspend(),
            })
            .collect()
    }

    /// Let every card serve again after [`MmioBus::suspend`].
    pub(crate) fn resume(&self) {
        for slot in &self.slots {
            lock(&slot.card).resume();
        }
    }

    /// Put the cards where a snapshot left them: as many as it had, with
    /// its addresses, each taking up its state.
    pub(crate) fn restore(&self, saved: &[SavedCard]) -> Result<(), String> {
        if saved.len() != self.slots.len() {
            return Err(format!(
                "the snapshot's VM had {} network cards, this one {}",
                saved.len(),
                self.slots.len()
            ));
        }
        for (slot, card) in self.slots.iter().zip(saved) {
            if slot.mac.0 != card.mac {
                return Err("a card's address differs from the snapshot's".into());
            }
            lock(&slot.card).restore(&card.transport)?;
        }
        Ok(())
    }

    /// The devices, in window order.
    pub(crate) fn slots(&self) -> &[Slot<B>] {
        &self.slots
    }

    /// One command-line parameter per device, announcing it to the guest.
    pub(crate) fn cmdline(&self) -> impl Iterator<Item = VirtioMmio> + '_ {
        self.slots.iter().map(|slot| slot.window)
    }

    /// The device whose window holds `addr`, and the offset in it.
    fn find(&self, addr: u64) -> Option<(&Slot<B>, u64)> {
        let index = addr.checked_sub(VIRTIO_MMIO_ADDR)? / VIRTIO_MMIO_STRIDE;
        let slot = self.slots.get(usize::try_from(index).ok()?)?;
        let offset = addr - slot.window.addr;
        (offset < slot.window.size).then_some((slot, offset))
    }

    /// Serve a guest read of `data.len()` bytes at `addr`; `false` if no
    /// device's window holds it.
    pub(crate) fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        let Some((slot, offset)) = self.find(addr) else {
            return false;
        };
        lock(&slot.card).read(offset, data);
        true
    }

    /// Serve a guest write of `data` at `addr`; `false` if no device's
    /// window holds it.
    pub(crate) fn write(&self, addr: u64, data: &[u8]) -> bool {
        let Some((slot, offset)) = self.find(addr) else {
            return false;
        };
        lock(&slot.card).write(offset, data);
        true
    }

    /// Stop every device (the VM has ended: no vCPU runs) and report what
    /// each did. When this returns no device thread touches guest memory.
    pub(crate) fn shutdown(&self) -> Vec<NetReport> {
        self.slots
            .iter()
            .map(|slot| {
                let mut card = lock(&slot.card);
                card.shutdown();
                NetReport {
                    link: slot.link.clone(),
                    mac: slot.mac,
                    counters: card.device().counters(),
                    interrupts: card.interrupts(),
                    bad_register_accesses: card.bad_accesses(),
                    failure: card
                        .device()
                        .fault()
                        .map(ToString::to_string)
                        .or_else(|| card.failure().map(ToString::to_string)),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn windows_and_vectors_follow_the_layout() {
        let window = |n: u8| VirtioMmio {
            addr: VIRTIO_MMIO_ADDR + u64::from(n) * VIRTIO_MMIO_STRIDE,
            size: 0x1000,
            vector: DEVICE_VECTOR + n,
        };
        assert_eq!(window(0).to_string(), "virtio_mmio.device=4K@0xd0000000:34");
        assert_eq!(window(7).to_string(), "virtio_mmio.device=4K@0xd0007000:41");
        for n in 0..8 {
            window(n).validate().unwrap();
        }
    }

    /// A backend that never receives and drops what it sends.
    struct Silent(vmm_sys_util::eventfd::EventFd);

    impl NetBackend for Silent {
        fn read_frame(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::WouldBlock.into())
        }

        fn write_frame(&mut self, _: &[u8]) -> std::io::Result<()> {
            Ok(())
        }

        fn ready_fd(&self) -> std::os::fd::RawFd {
            std::os::fd::AsRawFd::as_raw_fd(&self.0)
        }
    }

    fn bus_of(cards: usize) -> MmioBus<Silent> {
        let ram = crate::memory::GuestRam::new(8 << 20).unwrap();
        let mut bus = MmioBus::default();
        for n in 0..cards {
            let mac = MacAddr::local(u32::try_from(n).unwrap());
            let backend = Silent(super::super::new_event().unwrap());
            let card = MmioTransport::new(Net::new(mac, backend), ram.clone()).unwrap();
            bus.add_net(card, &format!("tap{n}"), mac).unwrap();
        }
        bus
    }

    fn read32(bus: &MmioBus<Silent>, addr: u64) -> Option<u32> {
        let mut data = [0u8; 4];
        bus.read(addr, &mut data).then(|| u32::from_le_bytes(data))
    }

    #[test]
    fn accesses_reach_the_device_whose_window_holds_them() {
        const MAGIC: u32 = u32::from_le_bytes(*b"virt");
        const STATUS: u64 = 0x70;
        let bus = bus_of(2);
        assert_eq!(read32(&bus, VIRTIO_MMIO_ADDR), Some(MAGIC));
        assert_eq!(read32(&bus, VIRTIO_MMIO_ADDR + 0x1000), Some(MAGIC));
        assert_eq!(
            read32(&bus, VIRTIO_MMIO_ADDR + 0x2000),
            None,
            "no third card"
        );
        assert_eq!(read32(&bus, VIRTIO_MMIO_ADDR - 4), None);
        // The second card's status changes, the first's does not.
        assert!(bus.write(VIRTIO_MMIO_ADDR + 0x1000 + STATUS, &1u32.to_le_bytes()));
        assert_eq!(read32(&bus, VIRTIO_MMIO_ADDR + STATUS), Some(0));
        assert_eq!(read32(&bus, VIRTIO_MMIO_ADDR + 0x1000 + STATUS), Some(1));
        // The configuration space: the MAC address.
        let mut mac = [0u8; 6];
        assert!(bus.read(VIRTIO_MMIO_ADDR + 0x1100, &mut mac));
        assert_eq!(mac, MacAddr::local(1).0);
        // A bad access is the device's to count, not the bus's to refuse.
        assert!(bus.write(VIRTIO_MMIO_ADDR + 0xffc, &[0]));
        let tokens: Vec<String> = bus.cmdline().map(|w| w.to_string()).collect();
        assert_eq!(
            tokens,
            [
                "virtio_mmio.device=4K@0xd0000000:34",
                "virtio_mmio.device=4K@0xd0001000:35"
            ]
        );
        let reports = bus.shutdown();
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].link, "tap0");
        assert_eq!(reports[0].bad_register_accesses, 1);
        assert_eq!(reports[1].mac, MacAddr::local(1));
        assert_eq!(reports[1].bad_register_accesses, 0);
        assert_eq!(reports[1].failure, None);
    }

    #[test]
    fn the_bus_holds_eight_devices() {
        let mut bus = bus_of(8);
        let ram = crate::memory::GuestRam::new(8 << 20).unwrap();
        let mac = MacAddr::local(9);
        let card = MmioTransport::new(
            Net::new(mac, Silent(super::super::new_event().unwrap())),
            ram,
        )
        .unwrap();
        assert!(bus.add_net(card, "tap8", mac).is_err());
        assert_eq!(
            bus.cmdline().last().unwrap().to_string(),
            "virtio_mmio.device=4K@0xd0007000:41"
        );
    }

    #[test]
    fn an_empty_bus_claims_no_address() {
        let bus = MmioBus::<HostLink>::default();
        let mut data = [0u8; 4];
        for addr in [0, VIRTIO_MMIO_ADDR, VIRTIO_MMIO_ADDR + 0x50, u64::MAX] {
            assert!(!bus.read(addr, &mut data));
            assert!(!bus.write(addr, &data));
        }
        assert_eq!(bus.cmdline().count(), 0);
        assert!(bus.shutdown().is_empty());
    }
}
