//! The virtio-MMIO transport, version 2 (virtio 1.2 §4.2).
//!
//! [`MmioTransport`] owns one [`VirtioDevice`] and serves the 4 KiB window
//! of its registers ([`MMIO_WINDOW_BYTES`]): the control registers (§4.2.2,
//! all 32 bits wide and aligned), then the device's configuration space at
//! 0x100. Every access is first decoded into a [`Register`]; anything else
//! (another width, a misaligned or unknown offset, a write to a read-only
//! register or a read of a write-only one) reads as zero or is dropped, and
//! is counted in [`MmioTransport::bad_accesses`].
//!
//! The status handshake follows §3.1.1: `ACKNOWLEDGE`, `DRIVER`, features,
//! `FEATURES_OK` (which does not stick if the driver accepted a feature the
//! device did not offer, or not `VIRTIO_F_VERSION_1`), queue setup,
//! `DRIVER_OK` (which activates the device). The driver only ever adds
//! status bits; a write of 0 resets the device (§2.1, §4.2.2). Queue
//! registers are accepted only between `FEATURES_OK` and `DRIVER_OK` while
//! the queue is not ready (§3.1.1, §4.2.2.2). A queue is checked when the
//! driver sets `QueueReady` ([`QueueLayout::build`]); a bad one stays not
//! ready and sets `DEVICE_NEEDS_RESET` (§2.1.2), as does a device that
//! cannot start.
//!
//! Notifications: each queue has an event
//! ([`MmioTransport::queue_notify_events`]) for `KVM_IOEVENTFD` on
//! `QueueNotify` with the queue index as datamatch; a `QueueNotify` write
//! that reaches [`MmioTransport::write`] signals the same event. The interrupt event ([`MmioTransport::interrupt_event`]) is
//! for `KVM_IRQFD`; `InterruptStatus` and `InterruptACK` work as §4.2.2
//! says, for drivers that read them.

use std::io;
use std::sync::Arc;

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_mmio as reg;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::queue::{QueueError, QueueLayout};
use super::{
    ActivateError, Activation, ActiveQueue, Interrupt, QueuePosition, VirtioDevice, new_event,
};
use crate::memory::GuestRam;

/// Size of a device's MMIO window.
pub(crate) const MMIO_WINDOW_BYTES: u64 = 0x1000;
/// Offset of `QueueNotify` in the window: register each queue's event
/// there with `KVM_IOEVENTFD`, 4 bytes, datamatch the queue index.
pub(crate) const QUEUE_NOTIFY_OFFSET: u64 = reg::VIRTIO_MMIO_QUEUE_NOTIFY as u64;
/// Start of the device configuration space in the window.
const CONFIG_OFFSET: u64 = reg::VIRTIO_MMIO_CONFIG as u64;

/// `MagicValue`: "virt" in little-endian.
const MAGIC: u32 = 0x7472_6976;
/// `Version` of the modern (non-legacy) transport.
const VERSION: u32 = 2;
/// `VendorID`: "ERMT", ours.
const VENDOR_ID: u32 = u32::from_le_bytes(*b"ERMT");

const ACKNOWLEDGE: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE;
const DRIVER: u32 = VIRTIO_CONFIG_S_DRIVER;
const FEATURES_OK: u32 = VIRTIO_CONFIG_S_FEATURES_OK;
const DRIVER_OK: u32 = VIRTIO_CONFIG_S_DRIVER_OK;
const FAILED: u32 = VIRTIO_CONFIG_S_FAILED;
const NEEDS_RESET: u32 = VIRTIO_CONFIG_S_NEEDS_RESET;

/// The transport could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The host could not create an event descriptor.
    #[error("cannot create the device's event descriptors: {0}")]
    Events(#[source] io::Error),
}

/// Why the transport set `DEVICE_NEEDS_RESET`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeviceFailure {
    /// The driver enabled a queue it had configured badly.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The device could not start.
    #[error(transparent)]
    Activate(#[from] ActivateError),
    /// The driver disabled a queue while the device was running.
    #[error("guest disabled queue {0} while the device was running")]
    QueueDisabled(usize),
}

/// A control register (§4.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Register {
    MagicValue,
    Version,
    DeviceId,
    VendorId,
    DeviceFeatures,
    DeviceFeaturesSel,
    DriverFeatures,
    DriverFeaturesSel,
    QueueSel,
    QueueNumMax,
    QueueNum,
    QueueReady,
    QueueNotify,
    InterruptStatus,
    InterruptAck,
    Status,
    QueueDescLow,
    QueueDescHigh,
    QueueDriverLow,
    QueueDriverHigh,
    QueueDeviceLow,
    QueueDeviceHigh,
    ShmSel,
    ShmLenLow,
    ShmLenHigh,
    ShmBaseLow,
    ShmBaseHigh,
    ConfigGeneration,
}

impl Register {
    /// The register at `offset` for an access of `len` bytes: only 32-bit
    /// accesses to a register's own offset are valid (§4.2.2.2).
    fn decode(offset: u64, len: usize) -> Option<Self> {
        if len != 4 {
            return None;
        }
        use Register::*;
        Some(match u32::try_from(offset).ok()? {
            reg::VIRTIO_MMIO_MAGIC_VALUE => MagicValue,
            reg::VIRTIO_MMIO_VERSION => Version,
            reg::VIRTIO_MMIO_DEVICE_ID => DeviceId,
            reg::VIRTIO_MMIO_VENDOR_ID => VendorId,
            reg::VIRTIO_MMIO_DEVICE_FEATURES => DeviceFeatures,
            reg::VIRTIO_MMIO_DEVICE_FEATURES_SEL => DeviceFeaturesSel,
            reg::VIRTIO_MMIO_DRIVER_FEATURES => DriverFeatures,
            reg::VIRTIO_MMIO_DRIVER_FEATURES_SEL => DriverFeaturesSel,
            reg::VIRTIO_MMIO_QUEUE_SEL => QueueSel,
            reg::VIRTIO_MMIO_QUEUE_NUM_MAX => QueueNumMax,
            reg::VIRTIO_MMIO_QUEUE_NUM => QueueNum,
            reg::VIRTIO_MMIO_QUEUE_READY => QueueReady,
            reg::VIRTIO_MMIO_QUEUE_NOTIFY => QueueNotify,
            reg::VIRTIO_MMIO_INTERRUPT_STATUS => InterruptStatus,
            reg::VIRTIO_MMIO_INTERRUPT_ACK => InterruptAck,
            reg::VIRTIO_MMIO_STATUS => Status,
            reg::VIRTIO_MMIO_QUEUE_DESC_LOW => QueueDescLow,
            reg::VIRTIO_MMIO_QUEUE_DESC_HIGH => QueueDescHigh,
            reg::VIRTIO_MMIO_QUEUE_AVAIL_LOW => QueueDriverLow,
            reg::VIRTIO_MMIO_QUEUE_AVAIL_HIGH => QueueDriverHigh,
            reg::VIRTIO_MMIO_QUEUE_USED_LOW => QueueDeviceLow,
            reg::VIRTIO_MMIO_QUEUE_USED_HIGH => QueueDeviceHigh,
            reg::VIRTIO_MMIO_SHM_SEL => ShmSel,
            reg::VIRTIO_MMIO_SHM_LEN_LOW => ShmLenLow,
            reg::VIRTIO_MMIO_SHM_LEN_HIGH => ShmLenHigh,
            reg::VIRTIO_MMIO_SHM_BASE_LOW => ShmBaseLow,
            reg::VIRTIO_MMIO_SHM_BASE_HIGH => ShmBaseHigh,
            reg::VIRTIO_MMIO_CONFIG_GENERATION => ConfigGeneration,
            _ => return None,
        })
    }
}

/// One queue's registers.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct QueueRegs {
    layout: QueueLayout,
    is_ready: bool,
}

/// A suspended transport, as a snapshot keeps it: its registers, its
/// interrupt's state and where its device's queues stand.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct TransportState {
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<QueueRegs>,
    interrupt_status: u32,
    needs_reset: bool,
    /// `None`: the device was not serving (no `DRIVER_OK`, or it failed).
    positions: Option<Vec<QueuePosition>>,
}

/// A virtio device on the MMIO transport.
pub(crate) struct MmioTransport<D> {
    device: D,
    ram: GuestRam,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<QueueRegs>,
    notify: Vec<Arc<EventFd>>,
    interrupt: Arc<Interrupt>,
    failure: Option<DeviceFailure>,
    bad_accesses: u64,
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// Put `device` on a transport over `ram`, in reset state.
    pub(crate) fn new(device: D, ram: GuestRam) -> Result<Self, TransportError> {
        let count = device.queue_max_sizes().len();
        let notify = (0..count)
            .map(|_| new_event().map(Arc::new))
            .collect::<io::Result<Vec<_>>>()
            .map_err(TransportError::Events)?;
        let interrupt = Arc::new(Interrupt::new().map_err(TransportError::Events)?);
        let mut transport = Self {
            device,
            ram,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues: Vec::new(),
            notify,
            interrupt,
            failure: None,
            bad_accesses: 0,
        };
        transport.reset();
        Ok(transport)
    }

    /// A guest read of `data.len()` bytes at `offset` in the window.
    pub(crate) fn read(&mut self, offset: u64, data: &mut [u8]) {
        if (CONFIG_OFFSET..MMIO_WINDOW_BYTES).contains(&offset) {
            self.device.read_config(offset - CONFIG_OFFSET, data);
            return;
        }
        match Register::decode(offset, data.len()).and_then(|r| self.read_register(r)) {
            Some(value) => data.copy_from_slice(&value.to_le_bytes()),
            None => {
                data.fill(0);
                self.bad_accesses += 1;
            }
        }
    }

    /// A guest write of `data` at `offset` in the window.
    pub(crate) fn write(&mut self, offset: u64, data: &[u8]) {
        // The configuration space of the devices here is read-only.
        let is_done = match (
            Register::decode(offset, data.len()),
            <[u8; 4]>::try_from(data),
        ) {
            (Some(register), Ok(bytes)) => self.write_register(register, u32::from_le_bytes(bytes)),
            _ => false,
        };
        if !is_done {
            self.bad_accesses += 1;
        }
    }

    /// Each queue's notification event and the datamatch (its index) to
    /// register it with `KVM_IOEVENTFD` at [`QUEUE_NOTIFY_OFFSET`].
    pub(crate) fn queue_notify_events(&self) -> impl Iterator<Item = (u32, &EventFd)> {
        (0u32..).zip(self.notify.iter().map(|event| &**event))
    }

    /// The interrupt event, to register with `KVM_IRQFD`.
    pub(crate) fn interrupt_event(&self) -> &EventFd {
        self.interrupt.event()
    }

    /// Accesses the transport ignored (bad width, offset or direction).
    pub(crate) fn bad_accesses(&self) -> u64 {
        self.bad_accesses
    }

    /// Interrupts the device and the transport raised (each an event
    /// write), resets included.
    pub(crate) fn interrupts(&self) -> u64 {
        self.interrupt.raised()
    }

    /// Why the transport last set `DEVICE_NEEDS_RESET`, if it did.
    pub(crate) fn failure(&self) -> Option<&DeviceFailure> {
        self.failure.as_ref()
    }

    /// The device.
    pub(crate) fn device(&self) -> &D {
        &self.device
    }

    /// Stop the device (the VM is ending): when this returns, no device
    /// thread touches guest memory any more.
    pub(crate) fn shutdown(&mut self) {
        self.device.reset();
    }

    /// Stop the device for a snapshot, keeping its queues: when this
    /// returns, no device thread touches guest memory until
    /// [`MmioTransport::resume`]. Returns the state to save.
    pub(crate) fn suspend(&mut self) -> TransportState {
        let positions = self.device.suspend();
        TransportState {
            status: self.status,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            queue_sel: self.queue_sel,
            queues: self.queues.clone(),
            interrupt_status: self.interrupt.status(),
            needs_reset: self.interrupt.needs_reset(),
            positions,
        }
    }

    /// Serve the queues again after [`MmioTransport::suspend`].
    pub(crate) fn resume(&mut self) {
        if let Err(e) = self.device.resume() {
            self.fail(e.into());
        }
    }

    /// Take up `state` (a snapshot's, untrusted like the guest): the
    /// registers, the interrupt, and a device serving its queues from
    /// where they stood. A queue layout that is not valid here fails the
    /// device (`DEVICE_NEEDS_RESET`), as a bad `QueueReady` would.
    pub(crate) fn restore(&mut self, state: &TransportState) -> Result<(), String> {
        if state.queues.len() != self.queues.len() {
            return Err(format!(
                "{} queues, not {}",
                state.queues.len(),
                self.queues.len()
            ));
        }
        self.reset();
        self.status = state.status;
        self.device_features_sel = state.device_features_sel;
        self.driver_features_sel = state.driver_features_sel;
        self.driver_features = state.driver_features;
        self.queue_sel = state.queue_sel;
        self.queues.clone_from(&state.queues);
        self.interrupt
            .restore(state.interrupt_status, state.needs_reset);
        if let Some(positions) = &state.positions {
            if self.status & DRIVER_OK == 0 || positions.len() != self.queues.len() {
                return Err("queue positions for a device that was not serving".into());
            }
            self.activate(Some(positions));
        }
        Ok(())
    }

    fn read_register(&self, register: Register) -> Option<u32> {
        use Register::*;
        Some(match register {
            MagicValue => MAGIC,
            Version => VERSION,
            DeviceId => self.device.device_id(),
            VendorId => VENDOR_ID,
            DeviceFeatures => half(self.device.features(), self.device_features_sel),
            QueueNumMax => self.selected().map_or(0, |(_, _, max)| u32::from(max)),
            QueueReady => self
                .selected()
                .map_or(0, |(_, regs, _)| u32::from(regs.is_ready)),
            InterruptStatus => self.interrupt.status(),
            Status if self.interrupt.needs_reset() => self.status | NEEDS_RESET,
            Status => self.status,
            // No shared memory regions: length -1, base all ones (§4.2.2).
            ShmLenLow | ShmLenHigh | ShmBaseLow | ShmBaseHigh => u32::MAX,
            // The configuration never changes.
            ConfigGeneration => 0,
            DeviceFeaturesSel | DriverFeatures | DriverFeaturesSel | QueueSel | QueueNum
            | QueueNotify | InterruptAck | QueueDescLow | QueueDescHigh | QueueDriverLow
            | QueueDriverHigh | QueueDeviceLow | QueueDeviceHigh | ShmSel => return None,
        })
    }

    /// Act on a register write; `false` if the write was not allowed.
    fn write_register(&mut self, register: Register, value: u32) -> bool {
        use Register::*;
        match register {
            DeviceFeaturesSel => self.device_features_sel = value,
            DriverFeaturesSel => self.driver_features_sel = value,
            DriverFeatures => return self.set_driver_features(value),
            QueueSel => self.queue_sel = value,
            QueueNum => return self.set_layout(|l| l.size = value),
            QueueDescLow => return self.set_layout(|l| set_low(&mut l.descriptor_table, value)),
            QueueDescHigh => return self.set_layout(|l| set_high(&mut l.descriptor_table, value)),
            QueueDriverLow => return self.set_layout(|l| set_low(&mut l.driver_area, value)),
            QueueDriverHigh => return self.set_layout(|l| set_high(&mut l.driver_area, value)),
            QueueDeviceLow => return self.set_layout(|l| set_low(&mut l.device_area, value)),
            QueueDeviceHigh => return self.set_layout(|l| set_high(&mut l.device_area, value)),
            QueueReady => return self.set_queue_ready(value),
            QueueNotify => return self.notify(value),
            InterruptAck => self.interrupt.acknowledge(value),
            Status => return self.set_status(value),
            ShmSel => {}
            MagicValue | Version | DeviceId | VendorId | DeviceFeatures | QueueNumMax
            | InterruptStatus | ShmLenLow | ShmLenHigh | ShmBaseLow | ShmBaseHigh
            | ConfigGeneration => return false,
        }
        true
    }

    /// The selected queue: its index, registers and maximum size.
    fn selected(&self) -> Option<(usize, QueueRegs, u16)> {
        let index = usize::try_from(self.queue_sel).ok()?;
        let max = *self.device.queue_max_sizes().get(index)?;
        Some((index, *self.queues.get(index)?, max))
    }

    /// Queues are set up after `FEATURES_OK` and before `DRIVER_OK`
    /// (§3.1.1 step 7).
    fn is_configuring_queues(&self) -> bool {
        self.status & (FEATURES_OK | DRIVER_OK) == FEATURES_OK
    }

    /// Change the selected queue's layout, if it may change now.
    fn set_layout(&mut self, change: impl FnOnce(&mut QueueLayout)) -> bool {
        let index = match self.selected() {
            Some((index, regs, _)) if self.is_configuring_queues() && !regs.is_ready => index,
            _ => return false,
        };
        change(&mut self.queues[index].layout);
        true
    }

    fn set_queue_ready(&mut self, value: u32) -> bool {
        let Some((index, regs, max)) = self.selected() else {
            return false;
        };
        match value {
            1 if regs.is_ready => true,
            1 if self.is_configuring_queues() => {
                match regs.layout.build(max, &self.ram, false) {
                    Ok(_) => self.queues[index].is_ready = true,
                    Err(e) => self.fail(e.into()),
                }
                true
            }
            0 => {
                // A running device must stop touching the queue (§4.2.2.1);
                // the device cannot run without it, so it needs a reset.
                if regs.is_ready && self.status & DRIVER_OK != 0 {
                    self.device.reset();
                    self.fail(DeviceFailure::QueueDisabled(index));
                }
                self.queues[index].is_ready = false;
                true
            }
            _ => false,
        }
    }

    fn notify(&mut self, value: u32) -> bool {
        match usize::try_from(value).ok().and_then(|i| self.notify.get(i)) {
            Some(event) => {
                // Fails only if the counter would overflow: a notification
                // is pending anyway.
                let _ = event.write(1);
                true
            }
            None => false,
        }
    }

    /// Features are written after `DRIVER` and before `FEATURES_OK`
    /// (§3.1.1 step 4), 32 bits at a time.
    fn set_driver_features(&mut self, value: u32) -> bool {
        if self.status & (DRIVER | FEATURES_OK) != DRIVER {
            return false;
        }
        let value = u64::from(value);
        self.driver_features = match self.driver_features_sel {
            0 => self.driver_features & !0xffff_ffff | value,
            1 => self.driver_features & 0xffff_ffff | value << 32,
            _ => return false,
        };
        true
    }

    /// The driver may accept only what the device offered, and must accept
    /// `VIRTIO_F_VERSION_1`: this device has no legacy interface (§6.2).
    fn are_features_acceptable(&self) -> bool {
        self.driver_features & !self.device.features() == 0
            && self.driver_features & 1 << VIRTIO_F_VERSION_1 != 0
    }

    fn set_status(&mut self, value: u32) -> bool {
        if value == 0 {
            self.reset();
            return true;
        }
        // A driver that read the status back may echo DEVICE_NEEDS_RESET.
        let value = value & !NEEDS_RESET;
        let known = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK | FAILED;
        // Only a reset clears bits.
        if value & !known != 0 || self.status & !value != 0 {
            return false;
        }
        let added = value & !self.status;
        let mut status = value;
        if added & FEATURES_OK != 0 && !self.are_features_acceptable() {
            status &= !FEATURES_OK;
        }
        // Each step needs the ones before it (§3.1.1).
        let steps = [ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK];
        if steps
            .windows(2)
            .any(|w| status & w[1] != 0 && status & w[0] == 0)
        {
            return false;
        }
        self.status = status;
        if status & added & DRIVER_OK != 0 {
            self.activate(None);
        }
        true
    }

    /// Hand the queues to the device: from their start, or (a restored
    /// snapshot) from `positions`.
    fn activate(&mut self, positions: Option<&[QueuePosition]>) {
        let has_event_idx = self.driver_features & 1 << VIRTIO_RING_F_EVENT_IDX != 0;
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, ((regs, &max), notify)) in self
            .queues
            .iter()
            .zip(self.device.queue_max_sizes())
            .zip(&self.notify)
            .enumerate()
        {
            let queue = if regs.is_ready {
                regs.layout.build(max, &self.ram, has_event_idx)
            } else {
                // Not ready: the device will not touch it.
                Ok(Queue::new(max).unwrap_or_default())
            };
            let queue = queue.map(|mut queue| {
                if let Some(at) = positions.and_then(|p| p.get(i)) {
                    queue.set_next_avail(at.next_avail);
                    queue.set_next_used(at.next_used);
                }
                queue
            });
            match queue {
                Ok(queue) => queues.push(ActiveQueue {
                    queue,
                    notify: Arc::clone(notify),
                }),
                Err(e) => return self.fail(e.into()),
            }
        }
        let activation = Activation {
            ram: self.ram.clone(),
            features: self.driver_features,
            queues,
            interrupt: Arc::clone(&self.interrupt),
        };
        if let Err(e) = self.device.activate(activation) {
            self.fail(e.into());
        }
    }

    /// Set `DEVICE_NEEDS_RESET`, with a configuration change notification
    /// once the driver is running (§2.1.2).
    fn fail(&mut self, failure: DeviceFailure) {
        self.failure = Some(failure);
        if self.status & DRIVER_OK != 0 {
            self.interrupt.signal_needs_reset();
        } else {
            self.interrupt.set_needs_reset();
        }
    }

    /// Back to the state after power-on (§2.4): device stopped, status 0,
    /// no features, queues not ready, no interrupt pending. The events stay
    /// (KVM holds them).
    fn reset(&mut self) {
        self.device.reset();
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.queues = self
            .device
            .queue_max_sizes()
            .iter()
            .map(|&max| QueueRegs {
                layout: QueueLayout {
                    size: u32::from(max),
                    ..QueueLayout::default()
                },
                is_ready: false,
            })
            .collect();
        self.interrupt.clear();
        self.failure = None;
    }
}

/// Bits `32 * sel` to `32 * sel + 31` of `features`.
fn half(features: u64, sel: u32) -> u32 {
    let bits = match sel {
        0 => features,
        1 => features >> 32,
        _ => 0,
    };
    u32::try_from(bits & 0xffff_ffff).unwrap_or(0)
}

fn set_low(addr: &mut u64, value: u32) {
    *addr = *addr & !0xffff_ffff | u64::from(value);
}

fn set_high(addr: &mut u64, value: u32) {
    *addr = *addr & 0xffff_ffff | u64::from(value) << 32;
}

#[cfg(test)]
mod tests;
