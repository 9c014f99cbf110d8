//! The virtio-MMIO transport, version 2 (virtio 1.2 §4.2): register
//! offsets, device status and feature bits, and [`Transport`], which runs
//! the initialisation handshake (§3.1.1, §4.2.3.1), sets queues up
//! (§4.2.3.2), notifies them (§4.2.3.3) and resets the device.
//!
//! Every register access is a VM exit (about 30 µs on our hosts), so the
//! transport keeps a copy of the status it wrote and of the selected queue
//! instead of reading them back, and reads only what the specification
//! asks it to check. Setting a network card up takes 49 accesses (see the
//! tests).

use core::fmt;

use crate::DeviceRegisters;
use crate::queue::{MAX_QUEUE_SIZE, QueueLayout};

/// Register offsets in the window (§4.2.2, table "MMIO Device Register
/// Layout").
pub mod reg {
    /// `0x74726976` ("virt").
    pub const MAGIC_VALUE: u32 = 0x000;
    /// 2 for the virtio 1.x interface (1 is the legacy one).
    pub const VERSION: u32 = 0x004;
    /// Device type (§5); 0 means no device behind this window.
    pub const DEVICE_ID: u32 = 0x008;
    /// The device's features, 32 bits selected by `DEVICE_FEATURES_SEL`.
    pub const DEVICE_FEATURES: u32 = 0x010;
    pub const DEVICE_FEATURES_SEL: u32 = 0x014;
    /// The features the driver accepts, 32 bits selected by
    /// `DRIVER_FEATURES_SEL`.
    pub const DRIVER_FEATURES: u32 = 0x020;
    pub const DRIVER_FEATURES_SEL: u32 = 0x024;
    /// Selects the queue the `QUEUE_*` registers below refer to.
    pub const QUEUE_SEL: u32 = 0x030;
    pub const QUEUE_NUM_MAX: u32 = 0x034;
    pub const QUEUE_NUM: u32 = 0x038;
    pub const QUEUE_READY: u32 = 0x044;
    /// Written with a queue index: "there are new buffers".
    pub const QUEUE_NOTIFY: u32 = 0x050;
    pub const INTERRUPT_STATUS: u32 = 0x060;
    pub const INTERRUPT_ACK: u32 = 0x064;
    pub const STATUS: u32 = 0x070;
    pub const QUEUE_DESC_LOW: u32 = 0x080;
    pub const QUEUE_DESC_HIGH: u32 = 0x084;
    pub const QUEUE_DRIVER_LOW: u32 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u32 = 0x094;
    pub const QUEUE_DEVICE_LOW: u32 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u32 = 0x0a4;
    pub const CONFIG_GENERATION: u32 = 0x0fc;
    /// Start of the device-specific configuration space.
    pub const CONFIG: u32 = 0x100;
    /// Size of the window.
    pub const WINDOW_BYTES: u32 = 0x1000;
}

/// Device status bits (§2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    pub const FAILED: u32 = 128;
}

/// Device-independent feature bits (§6), as masks.
pub mod feature {
    /// `VIRTIO_F_INDIRECT_DESC` (28): never accepted here.
    pub const INDIRECT_DESC: u64 = 1 << 28;
    /// `VIRTIO_F_EVENT_IDX` (29): `used_event` and `avail_event` (§2.7.7,
    /// §2.7.10).
    pub const EVENT_IDX: u64 = 1 << 29;
    /// `VIRTIO_F_VERSION_1` (32): the virtio 1.x interface. Required: this
    /// driver speaks no legacy interface.
    pub const VERSION_1: u64 = 1 << 32;
    /// `VIRTIO_F_ACCESS_PLATFORM` (33): never accepted (guest physical
    /// addresses are what the device uses).
    pub const ACCESS_PLATFORM: u64 = 1 << 33;
    /// `VIRTIO_F_RING_PACKED` (34): never accepted (split rings only).
    pub const RING_PACKED: u64 = 1 << 34;
}

/// `MagicValue`: "virt" in little-endian.
const MAGIC: u32 = 0x7472_6976;
/// Queues a device may have here (a network card has two).
const MAX_QUEUES: usize = 8;
/// Reads of `Status` after a reset before giving up (§2.4.2: the driver
/// waits for 0). A device that resets synchronously, as ours does, reads
/// 0 the first time.
const RESET_POLLS: u32 = 1000;
/// Reads of a configuration field before giving up when its generation
/// keeps changing (§2.5.1).
const CONFIG_READ_ATTEMPTS: u32 = 8;

/// Why a device could not be set up. Each is the device's answer, not a
/// bug of the caller, except [`InitError::BadQueueLayout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    /// `MagicValue` is not "virt": no virtio-MMIO device here.
    BadMagic(u32),
    /// `Version` is not 2 (1 is the legacy interface).
    UnsupportedVersion(u32),
    /// `DeviceID` is 0: the slot has no device.
    NoDevice,
    /// The device is of another type.
    WrongDevice { expected: u32, found: u32 },
    /// `Status` did not read 0 after a reset.
    ResetTimeout,
    /// The device does not offer features the driver requires.
    MissingFeatures(u64),
    /// `FEATURES_OK` did not stick: the device refused the subset.
    FeaturesRefused,
    /// The queue is already live (`QueueReady` reads 1 before setup).
    QueueInUse(u16),
    /// The device has no such queue (`QueueNumMax` reads 0).
    QueueUnavailable(u16),
    /// A queue layout that is not a power of two in size or misaligned,
    /// or larger than the device allows: a driver bug.
    BadQueueLayout(u16),
    /// The configuration generation kept changing while it was read.
    ConfigUnstable,
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic(value) => write!(f, "no virtio-MMIO device (magic {value:#x})"),
            Self::UnsupportedVersion(1) => write!(f, "legacy virtio-MMIO device (version 1)"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported virtio-MMIO version {v}"),
            Self::NoDevice => write!(f, "empty virtio-MMIO slot (device ID 0)"),
            Self::WrongDevice { expected, found } => {
                write!(f, "virtio device ID {found}, expected {expected}")
            }
            Self::ResetTimeout => write!(f, "device did not finish its reset"),
            Self::MissingFeatures(bits) => write!(f, "device lacks required features {bits:#x}"),
            Self::FeaturesRefused => write!(f, "device refused the features (FEATURES_OK)"),
            Self::QueueInUse(q) => write!(f, "queue {q} already ready before setup"),
            Self::QueueUnavailable(q) => write!(f, "device has no queue {q}"),
            Self::BadQueueLayout(q) => write!(f, "queue {q}: bad size or alignment"),
            Self::ConfigUnstable => write!(f, "configuration space kept changing"),
        }
    }
}

/// A virtio-MMIO device being set up or running.
pub struct Transport<R> {
    regs: R,
    /// The status bits the driver has set since the last reset.
    status: u32,
    /// Features negotiated.
    features: u64,
    /// The queue `QueueSel` selects, if known.
    selected_queue: Option<u16>,
    /// `QueueNumMax` of each queue read so far (index = queue).
    queue_max: [u16; MAX_QUEUES],
}

impl<R: DeviceRegisters> Transport<R> {
    /// Identify the device behind `regs`, reset it, and negotiate features
    /// up to `FEATURES_OK` (§3.1.1 steps 1 to 6): the result has
    /// `required` (plus `VERSION_1`) and those of `wanted` the device
    /// offers. On failure after the reset, the device is left with
    /// `FAILED` set.
    ///
    /// # Errors
    /// Not a virtio-MMIO 1.x device of type `device_id`, a reset that does
    /// not finish, required features missing or refused.
    pub fn negotiate(
        regs: R,
        device_id: u32,
        required: u64,
        wanted: u64,
    ) -> Result<Self, InitError> {
        let magic = regs.read32(reg::MAGIC_VALUE);
        if magic != MAGIC {
            return Err(InitError::BadMagic(magic));
        }
        let version = regs.read32(reg::VERSION);
        if version != 2 {
            return Err(InitError::UnsupportedVersion(version));
        }
        match regs.read32(reg::DEVICE_ID) {
            0 => return Err(InitError::NoDevice),
            found if found != device_id => {
                return Err(InitError::WrongDevice {
                    expected: device_id,
                    found,
                });
            }
            _ => {}
        }
        let mut transport = Self {
            regs,
            status: 0,
            features: 0,
            selected_queue: None,
            queue_max: [0; MAX_QUEUES],
        };
        transport.reset()?;
        transport
            .negotiate_features(required | feature::VERSION_1, wanted)
            .inspect_err(|_| {
                transport.fail();
            })?;
        Ok(transport)
    }

    fn negotiate_features(&mut self, required: u64, wanted: u64) -> Result<(), InitError> {
        self.set_status(status::ACKNOWLEDGE);
        self.set_status(status::DRIVER);
        self.regs.write32(reg::DEVICE_FEATURES_SEL, 0);
        let low = self.regs.read32(reg::DEVICE_FEATURES);
        self.regs.write32(reg::DEVICE_FEATURES_SEL, 1);
        let high = self.regs.read32(reg::DEVICE_FEATURES);
        let offered = u64::from(high) << 32 | u64::from(low);
        let missing = required & !offered;
        if missing != 0 {
            return Err(InitError::MissingFeatures(missing));
        }
        let accepted = offered & (required | wanted);
        #[allow(clippy::cast_possible_truncation)] // halves of a u64
        {
            self.regs.write32(reg::DRIVER_FEATURES_SEL, 0);
            self.regs.write32(reg::DRIVER_FEATURES, accepted as u32);
            self.regs.write32(reg::DRIVER_FEATURES_SEL, 1);
            self.regs
                .write32(reg::DRIVER_FEATURES, (accepted >> 32) as u32);
        }
        self.set_status(status::FEATURES_OK);
        // §3.1.1 step 6: the device clears FEATURES_OK if it cannot work
        // with this subset.
        if self.regs.read32(reg::STATUS) & status::FEATURES_OK == 0 {
            return Err(InitError::FeaturesRefused);
        }
        self.features = accepted;
        Ok(())
    }

    /// The negotiated features.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Whether every bit of `bits` was negotiated.
    pub fn has_features(&self, bits: u64) -> bool {
        self.features & bits == bits
    }

    /// The largest size queue `index` may have (`QueueNumMax`, capped at
    /// [`MAX_QUEUE_SIZE`]), after checking the queue is not live yet
    /// (§4.2.3.2 steps 1 to 3).
    ///
    /// # Errors
    /// The queue is live or does not exist (or is beyond the 8 queues
    /// this transport handles).
    pub fn queue_max_size(&mut self, index: u16) -> Result<u16, InitError> {
        if usize::from(index) >= MAX_QUEUES {
            return Err(InitError::QueueUnavailable(index));
        }
        self.select_queue(index);
        if self.regs.read32(reg::QUEUE_READY) != 0 {
            return Err(InitError::QueueInUse(index));
        }
        let max = self.regs.read32(reg::QUEUE_NUM_MAX);
        if max == 0 {
            return Err(InitError::QueueUnavailable(index));
        }
        #[allow(clippy::cast_possible_truncation)] // capped at 32768
        let max = max.min(u32::from(MAX_QUEUE_SIZE)) as u16;
        self.queue_max[usize::from(index)] = max;
        Ok(max)
    }

    /// Give queue `index` its size and ring addresses and make it live
    /// (§4.2.3.2 steps 4 to 8). [`Self::queue_max_size`] must have been
    /// called for it.
    ///
    /// # Errors
    /// A layout that is not valid for this device (a driver bug).
    pub fn setup_queue(&mut self, index: u16, layout: &QueueLayout) -> Result<(), InitError> {
        let max = self.queue_max.get(usize::from(index)).copied().unwrap_or(0);
        if !layout.is_valid() || layout.size > max {
            return Err(InitError::BadQueueLayout(index));
        }
        self.select_queue(index);
        self.regs.write32(reg::QUEUE_NUM, u32::from(layout.size));
        self.write_addr(reg::QUEUE_DESC_LOW, reg::QUEUE_DESC_HIGH, layout.desc_addr);
        self.write_addr(
            reg::QUEUE_DRIVER_LOW,
            reg::QUEUE_DRIVER_HIGH,
            layout.avail_addr,
        );
        self.write_addr(
            reg::QUEUE_DEVICE_LOW,
            reg::QUEUE_DEVICE_HIGH,
            layout.used_addr,
        );
        self.regs.write32(reg::QUEUE_READY, 1);
        Ok(())
    }

    /// Set `DRIVER_OK`: the device is live (§3.1.1 step 8).
    pub fn finish(&mut self) {
        self.set_status(status::DRIVER_OK);
    }

    /// Set `FAILED`: the driver gave up on the device (§3.1.1).
    pub fn fail(&mut self) {
        self.set_status(status::FAILED);
    }

    /// Reset the device (status 0) and wait until it reads 0 (§2.4.2).
    /// After it returns `Ok`, the device no longer touches the queues'
    /// memory.
    ///
    /// # Errors
    /// The device still had not finished after many reads.
    pub fn reset(&mut self) -> Result<(), InitError> {
        self.regs.write32(reg::STATUS, 0);
        self.status = 0;
        self.selected_queue = None;
        for _ in 0..RESET_POLLS {
            if self.regs.read32(reg::STATUS) == 0 {
                return Ok(());
            }
        }
        Err(InitError::ResetTimeout)
    }

    /// Tell the device queue `index` has new buffers (§4.2.3.3). With an
    /// ioeventfd behind `QueueNotify` this is the cheapest exit there is,
    /// but still an exit: callers ask the queue first
    /// ([`crate::SplitQueue::should_notify`]).
    pub fn notify(&self, index: u16) {
        self.regs.write32(reg::QUEUE_NOTIFY, u32::from(index));
    }

    /// Read and acknowledge `InterruptStatus` (§4.2.2), for transports
    /// whose interrupt is a level-triggered line. Not needed with an MSI
    /// (eremite's VMM), and two exits: never on the data path there.
    pub fn acknowledge_interrupt(&self) -> u32 {
        let pending = self.regs.read32(reg::INTERRUPT_STATUS);
        if pending != 0 {
            self.regs.write32(reg::INTERRUPT_ACK, pending);
        }
        pending
    }

    /// Read the device status register (one exit; diagnostics only).
    pub fn device_status(&self) -> u32 {
        self.regs.read32(reg::STATUS)
    }

    /// Copy `out.len()` bytes of the configuration space from `offset`,
    /// byte by byte (the fields read here are byte arrays, §4.2.2.2), and
    /// again while the configuration generation changes (§2.5.1).
    ///
    /// # Errors
    /// The generation kept changing.
    pub fn read_config(&self, offset: u32, out: &mut [u8]) -> Result<(), InitError> {
        for _ in 0..CONFIG_READ_ATTEMPTS {
            let before = self.regs.read32(reg::CONFIG_GENERATION);
            for (at, byte) in (reg::CONFIG + offset..).zip(out.iter_mut()) {
                *byte = self.regs.read8(at);
            }
            if self.regs.read32(reg::CONFIG_GENERATION) == before {
                return Ok(());
            }
        }
        Err(InitError::ConfigUnstable)
    }

    fn set_status(&mut self, bit: u32) {
        self.status |= bit;
        self.regs.write32(reg::STATUS, self.status);
    }

    fn select_queue(&mut self, index: u16) {
        if self.selected_queue != Some(index) {
            self.regs.write32(reg::QUEUE_SEL, u32::from(index));
            self.selected_queue = Some(index);
        }
    }

    #[allow(clippy::cast_possible_truncation)] // halves of a u64
    fn write_addr(&self, low: u32, high: u32, addr: u64) {
        self.regs.write32(low, addr as u32);
        self.regs.write32(high, (addr >> 32) as u32);
    }
}
