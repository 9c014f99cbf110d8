//! Transport tests with a probe device that records what the transport
//! hands it: registers, the handshake, feature negotiation, queue checks,
//! reset, and a stream of hostile accesses.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::sync::Mutex;

use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};

use super::*;
use crate::devices::testing::{FakeQueue, negotiate, read_reg, write_reg};

const RAM_BYTES: u64 = 1 << 20;
const FEATURE_X: u64 = 1 << 5;
const VERSION_1: u64 = 1 << VIRTIO_F_VERSION_1;
const EVENT_IDX: u64 = 1 << VIRTIO_RING_F_EVENT_IDX;
const OFFERED: u64 = VERSION_1 | EVENT_IDX | FEATURE_X;

/// A queue as the probe saw it: ready, size, descriptor table address,
/// EVENT_IDX on.
type QueueSeen = (bool, u16, u64, bool);

/// Where the probe says its queues stand when suspended.
const POSITIONS: [QueuePosition; 2] = [
    QueuePosition {
        next_avail: 7,
        next_used: 5,
    },
    QueuePosition {
        next_avail: 0,
        next_used: 0,
    },
];

/// What the transport did to the probe.
#[derive(Default)]
struct Log {
    /// Per activation: accepted features and the queues.
    activations: Vec<(u64, Vec<QueueSeen>)>,
    /// Per activation: each queue's next available and used entries.
    positions: Vec<Vec<(u16, u16)>>,
    resets: usize,
    suspends: usize,
    resumes: usize,
}

#[derive(Clone, Default)]
struct Probe {
    log: Arc<Mutex<Log>>,
}

impl VirtioDevice for Probe {
    fn device_id(&self) -> u32 {
        42
    }
    fn features(&self) -> u64 {
        OFFERED
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[256, 16]
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::devices::read_config_bytes(&[1, 2, 3, 4, 5, 6, 7, 8], offset, data);
    }
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        let queues = activation
            .queues
            .iter()
            .map(|q| {
                let q = &q.queue;
                (q.ready(), q.size(), q.desc_table(), q.event_idx_enabled())
            })
            .collect();
        let positions = activation
            .queues
            .iter()
            .map(|q| (q.queue.next_avail(), q.queue.next_used()))
            .collect();
        let mut log = self.log.lock().unwrap();
        log.activations.push((activation.features, queues));
        log.positions.push(positions);
        Ok(())
    }
    fn reset(&mut self) {
        self.log.lock().unwrap().resets += 1;
    }
    fn suspend(&mut self) -> Option<Vec<QueuePosition>> {
        let mut log = self.log.lock().unwrap();
        log.suspends += 1;
        (!log.activations.is_empty()).then(|| POSITIONS.to_vec())
    }
    fn resume(&mut self) -> Result<(), ActivateError> {
        self.log.lock().unwrap().resumes += 1;
        Ok(())
    }
}

fn transport() -> (MmioTransport<Probe>, Arc<Mutex<Log>>, GuestRam) {
    let probe = Probe::default();
    let log = Arc::clone(&probe.log);
    let ram = GuestRam::new(RAM_BYTES).unwrap();
    (MmioTransport::new(probe, ram.clone()).unwrap(), log, ram)
}

fn status(t: &mut MmioTransport<Probe>) -> u32 {
    read_reg(t, reg::VIRTIO_MMIO_STATUS)
}

fn set_status_bits(t: &mut MmioTransport<Probe>, bits: u32) {
    let now = status(t) & !NEEDS_RESET;
    write_reg(t, reg::VIRTIO_MMIO_STATUS, now | bits);
}

#[test]
fn identification_and_feature_registers_read_as_the_spec_says() {
    let (mut t, _, _) = transport();
    assert_eq!(read_reg(&mut t, reg::VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
    assert_eq!(read_reg(&mut t, reg::VIRTIO_MMIO_VERSION), 2);
    assert_eq!(read_reg(&mut t, reg::VIRTIO_MMIO_DEVICE_ID), 42);
    assert_eq!(
        read_reg(&mut t, reg::VIRTIO_MMIO_VENDOR_ID),
        u32::from_le_bytes(*b"ERMT")
    );
    for (sel, want) in [(0, OFFERED as u32), (1, (OFFERED >> 32) as u32), (2, 0)] {
        write_reg(&mut t, reg::VIRTIO_MMIO_DEVICE_FEATURES_SEL, sel);
        assert_eq!(read_reg(&mut t, reg::VIRTIO_MMIO_DEVICE_FEATURES), want);
    }
    for (sel, max) in [(0, 256), (1, 16), (2, 0), (u32::MAX, 0)] {
        write_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_SEL, sel);
        assert_eq!(read_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_NUM_MAX), max);
        assert_eq!(read_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_READY), 0);
    }
    assert_eq!(read_reg(&mut t, reg::VIRTIO_MMIO_CONFIG_GENERATION), 0);
    assert_eq!(status(&mut t), 0);
    assert_eq!(read_reg(&mut t, reg::VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    // No shared memory regions.
    assert_eq!(read_reg(&mut t, reg::VIRTIO_MMIO_SHM_LEN_LOW), u32::MAX);

    // Configuration space: any width, zeros past its end.
    let mut byte = [0u8; 1];
    t.read(0x100 + 6, &mut byte);
    assert_eq!(byte, [7]);
    let mut word = [0u8; 4];
    t.read(0x100 + 6, &mut word);
    assert_eq!(word, [7, 8, 0, 0]);
    t.read(0xffc, &mut word);
    assert_eq!(word, [0; 4]);
    assert_eq!(t.bad_accesses(), 0);
}

#[test]
fn the_handshake_activates_the_device_with_the_configured_queues() {
    let (mut t, log, ram) = transport();
    let status = negotiate(&mut t, VERSION_1 | EVENT_IDX);
    assert_eq!(
        status,
        ACKNOWLEDGE | DRIVER | FEATURES_OK,
        "FEATURES_OK sticks"
    );
    let queue = FakeQueue::new(0x4000, 128);
    queue.configure(&mut t, &ram, 0);
    write_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_SEL, 0);
    assert_eq!(read_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_READY), 1);
    assert!(log.lock().unwrap().activations.is_empty());

    set_status_bits(&mut t, DRIVER_OK);
    assert_eq!(
        read_reg(&mut t, reg::VIRTIO_MMIO_STATUS),
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK
    );
    let log = log.lock().unwrap();
    assert_eq!(log.activations.len(), 1);
    let (features, queues) = &log.activations[0];
    assert_eq!(*features, VERSION_1 | EVENT_IDX);
    assert_eq!(queues[0], (true, 128, 0x4000, true));
    assert!(!queues[1].0, "queue 1 was never enabled");
    assert_eq!(t.bad_accesses(), 0);
    assert!(t.failure().is_none());
}

#[test]
fn a_suspended_transport_restores_into_a_new_one_serving_from_where_it_stood() {
    let (mut t, log, ram) = transport();
    negotiate(&mut t, VERSION_1 | EVENT_IDX);
    FakeQueue::new(0x4000, 128).configure(&mut t, &ram, 0);
    set_status_bits(&mut t, DRIVER_OK);
    let saved = t.suspend();
    t.resume();
    assert_eq!(log.lock().unwrap().suspends, 1);
    assert_eq!(log.lock().unwrap().resumes, 1);

    let probe = Probe::default();
    let new_log = Arc::clone(&probe.log);
    let mut restored = MmioTransport::new(probe, ram.clone()).unwrap();
    restored.restore(&saved).unwrap();
    assert_eq!(
        read_reg(&mut restored, reg::VIRTIO_MMIO_STATUS),
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK
    );
    let new_log = new_log.lock().unwrap();
    assert_eq!(new_log.activations.len(), 1);
    assert_eq!(new_log.activations[0], log.lock().unwrap().activations[0]);
    assert_eq!(new_log.positions[0][0], (7, 5));
    drop(new_log);
    assert!(restored.failure().is_none());

    // A state for another device (more queues), or positions for a device
    // that was not serving, is refused.
    let mut other = saved.clone();
    other.queues.push(other.queues[0]);
    assert!(restored.restore(&other).is_err());
    let mut not_serving = saved;
    not_serving.status &= !DRIVER_OK;
    assert!(restored.restore(&not_serving).is_err());
}

#[test]
fn features_the_device_did_not_offer_make_features_ok_not_stick() {
    let (mut t, log, _) = transport();
    for features in [VERSION_1 | 1 << 6, VERSION_1 | 1 << 40, EVENT_IDX] {
        let status = negotiate(&mut t, features);
        assert_eq!(status, ACKNOWLEDGE | DRIVER, "{features:#x}");
        // DRIVER_OK cannot follow.
        set_status_bits(&mut t, DRIVER_OK);
        assert_eq!(read_reg(&mut t, reg::VIRTIO_MMIO_STATUS) & DRIVER_OK, 0);
    }
    assert!(log.lock().unwrap().activations.is_empty());
    // Features cannot change once accepted.
    negotiate(&mut t, VERSION_1);
    let bad = t.bad_accesses();
    write_reg(&mut t, reg::VIRTIO_MMIO_DRIVER_FEATURES, u32::MAX);
    assert_eq!(t.bad_accesses(), bad + 1);
}

#[test]
fn status_bits_only_grow_in_order_until_a_reset() {
    let (mut t, _, _) = transport();
    // DRIVER without ACKNOWLEDGE, unknown bits: refused.
    write_reg(&mut t, reg::VIRTIO_MMIO_STATUS, DRIVER);
    assert_eq!(status(&mut t), 0);
    write_reg(&mut t, reg::VIRTIO_MMIO_STATUS, ACKNOWLEDGE | 0x100);
    assert_eq!(status(&mut t), 0);
    write_reg(&mut t, reg::VIRTIO_MMIO_STATUS, ACKNOWLEDGE | DRIVER);
    assert_eq!(status(&mut t), ACKNOWLEDGE | DRIVER);
    // Clearing a bit needs a reset.
    write_reg(&mut t, reg::VIRTIO_MMIO_STATUS, ACKNOWLEDGE);
    assert_eq!(status(&mut t), ACKNOWLEDGE | DRIVER);
    // FAILED may come at any time; DEVICE_NEEDS_RESET echoed back is fine.
    write_reg(
        &mut t,
        reg::VIRTIO_MMIO_STATUS,
        ACKNOWLEDGE | DRIVER | FAILED | NEEDS_RESET,
    );
    assert_eq!(status(&mut t), ACKNOWLEDGE | DRIVER | FAILED);
}

#[test]
fn bad_queue_setups_are_refused_and_set_needs_reset() {
    let (mut t, _, _) = transport();
    let good = FakeQueue::new(0x4000, 16);
    let cases: [(u32, u64, u64, u64); 10] = [
        (0, good.desc, good.avail, good.used),
        (3, good.desc, good.avail, good.used),
        (512, good.desc, good.avail, good.used),
        (1 << 20, good.desc, good.avail, good.used),
        (u32::MAX, good.desc, good.avail, good.used),
        (16, good.desc + 8, good.avail, good.used),
        (16, good.desc, good.avail + 1, good.used),
        (16, good.desc, good.avail, good.used + 2),
        (16, RAM_BYTES - 16, good.avail, good.used),
        (16, good.desc, good.avail, u64::MAX - 3),
    ];
    for (size, desc, avail, used) in cases {
        negotiate(&mut t, VERSION_1);
        write_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_SEL, 0);
        write_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_NUM, size);
        for (low, addr) in [
            (reg::VIRTIO_MMIO_QUEUE_DESC_LOW, desc),
            (reg::VIRTIO_MMIO_QUEUE_AVAIL_LOW, avail),
            (reg::VIRTIO_MMIO_QUEUE_USED_LOW, used),
        ] {
            write_reg(&mut t, low, addr as u32);
            write_reg(&mut t, low + 4, (addr >> 32) as u32);
        }
        write_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_READY, 1);
        let case = format!("size {size} desc {desc:#x} avail {avail:#x} used {used:#x}");
        assert_eq!(read_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_READY), 0, "{case}");
        assert_ne!(status(&mut t) & NEEDS_RESET, 0, "{case}");
        assert!(t.failure().is_some(), "{case}");
        // A reset clears it.
        write_reg(&mut t, reg::VIRTIO_MMIO_STATUS, 0);
        assert_eq!(status(&mut t), 0);
        assert!(t.failure().is_none());
    }
}

#[test]
fn queue_registers_are_frozen_outside_queue_setup() {
    let (mut t, log, ram) = transport();
    // Before FEATURES_OK: ignored.
    write_reg(&mut t, reg::VIRTIO_MMIO_STATUS, ACKNOWLEDGE | DRIVER);
    let bad = t.bad_accesses();
    write_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_NUM, 8);
    write_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_READY, 1);
    assert_eq!(t.bad_accesses(), bad + 2);

    negotiate(&mut t, VERSION_1);
    let queue = FakeQueue::new(0x4000, 64);
    queue.configure(&mut t, &ram, 0);
    // Ready: its layout is frozen.
    let bad = t.bad_accesses();
    write_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_NUM, 8);
    write_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_DESC_LOW, 0x8000);
    assert_eq!(t.bad_accesses(), bad + 2);
    set_status_bits(&mut t, DRIVER_OK);
    // After DRIVER_OK: the other queue cannot be set up either.
    write_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_SEL, 1);
    write_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_NUM, 8);
    write_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_READY, 1);
    assert_eq!(read_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_READY), 0);
    let log = log.lock().unwrap();
    assert_eq!(log.activations[0].1[0], (true, 64, 0x4000, false));
}

#[test]
fn disabling_a_queue_of_a_running_device_stops_it() {
    let (mut t, log, ram) = transport();
    negotiate(&mut t, VERSION_1);
    FakeQueue::new(0x4000, 64).configure(&mut t, &ram, 0);
    set_status_bits(&mut t, DRIVER_OK);
    let resets = log.lock().unwrap().resets;
    write_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_SEL, 0);
    write_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_READY, 0);
    assert_eq!(log.lock().unwrap().resets, resets + 1);
    assert_eq!(read_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_READY), 0);
    assert_ne!(status(&mut t) & NEEDS_RESET, 0);
    // With a configuration change notification, since DRIVER_OK was set.
    assert_ne!(
        read_reg(&mut t, reg::VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG,
        0
    );
    assert!(matches!(t.failure(), Some(DeviceFailure::QueueDisabled(0))));
}

#[test]
fn reset_returns_to_the_power_on_state() {
    let (mut t, log, ram) = transport();
    negotiate(&mut t, VERSION_1 | EVENT_IDX);
    FakeQueue::new(0x4000, 64).configure(&mut t, &ram, 0);
    set_status_bits(&mut t, DRIVER_OK);
    t.interrupt.signal_used_buffer();
    write_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_SEL, 1);
    let resets = log.lock().unwrap().resets;

    write_reg(&mut t, reg::VIRTIO_MMIO_STATUS, 0);
    assert_eq!(log.lock().unwrap().resets, resets + 1, "device stopped");
    assert_eq!(status(&mut t), 0);
    assert_eq!(read_reg(&mut t, reg::VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    assert_eq!(
        read_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_SEL),
        0,
        "write-only"
    );
    write_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_SEL, 0);
    assert_eq!(read_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_READY), 0);
    // A second handshake with no queue: the device sees fresh state.
    negotiate(&mut t, VERSION_1);
    set_status_bits(&mut t, DRIVER_OK);
    let log = log.lock().unwrap();
    let (features, queues) = &log.activations[1];
    assert_eq!(*features, VERSION_1);
    assert!(queues.iter().all(|q| !q.0));
}

#[test]
fn interrupts_are_raised_through_the_event_and_acknowledged() {
    let (mut t, _, _) = transport();
    assert!(t.interrupt_event().read().is_err(), "nothing pending");
    t.interrupt.signal_used_buffer();
    assert_eq!(t.interrupt_event().read().unwrap(), 1);
    t.interrupt.signal_needs_reset();
    assert_eq!(
        read_reg(&mut t, reg::VIRTIO_MMIO_INTERRUPT_STATUS),
        VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG
    );
    write_reg(
        &mut t,
        reg::VIRTIO_MMIO_INTERRUPT_ACK,
        VIRTIO_MMIO_INT_VRING,
    );
    assert_eq!(
        read_reg(&mut t, reg::VIRTIO_MMIO_INTERRUPT_STATUS),
        VIRTIO_MMIO_INT_CONFIG
    );
    assert_ne!(status(&mut t) & NEEDS_RESET, 0);
}

#[test]
fn queue_notify_writes_signal_the_queue_event() {
    let (mut t, _, _) = transport();
    let events: Vec<(u32, EventFd)> = t
        .queue_notify_events()
        .map(|(index, event)| (index, event.try_clone().unwrap()))
        .collect();
    assert_eq!(events.iter().map(|e| e.0).collect::<Vec<_>>(), [0, 1]);
    write_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_NOTIFY, 1);
    write_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_NOTIFY, 1);
    assert!(events[0].1.read().is_err());
    assert_eq!(events[1].1.read().unwrap(), 2);
    write_reg(&mut t, reg::VIRTIO_MMIO_QUEUE_NOTIFY, 2);
    assert_eq!(t.bad_accesses(), 1);
}

#[test]
fn bad_widths_offsets_and_directions_are_ignored_and_counted() {
    let (mut t, _, _) = transport();
    let mut two = [0xaau8; 2];
    t.read(0, &mut two);
    assert_eq!(two, [0, 0], "a 16-bit read of MagicValue");
    let mut four = [0xaau8; 4];
    t.read(2, &mut four);
    assert_eq!(four, [0; 4], "misaligned");
    t.read(0x0fc + 0x1000, &mut four);
    t.read(reg::VIRTIO_MMIO_QUEUE_SEL.into(), &mut four);
    assert_eq!(four, [0; 4], "write-only register");
    t.write(reg::VIRTIO_MMIO_MAGIC_VALUE.into(), &[0; 4]);
    t.write(reg::VIRTIO_MMIO_STATUS.into(), &[1]);
    t.write(0x100, &[1, 2, 3, 4]);
    assert_eq!(t.bad_accesses(), 7);
    assert_eq!(status(&mut t), 0);
}

#[test]
fn a_stream_of_random_accesses_never_panics() {
    let (mut t, _, _) = transport();
    // xorshift64: reproducible.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut data = [0u8; 8];
    for _ in 0..200_000 {
        let r = next();
        // Mostly register offsets, sometimes anywhere.
        let offset = if r & 0xf == 0 {
            next()
        } else {
            (r >> 8) % 0x110
        };
        let len = [1, 2, 3, 4, 4, 4, 8][(r >> 4) as usize % 7];
        if r & 0x10_0000 == 0 {
            t.read(offset, &mut data[..len]);
        } else {
            // Small values (queue sizes, status bits) as often as large.
            let value = if r & 0x20_0000 == 0 {
                next() % 512
            } else {
                next()
            };
            data = value.to_le_bytes();
            t.write(offset, &data[..len]);
        }
    }
}
