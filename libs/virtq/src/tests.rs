//! Host tests: the driver against the fake device of `fake.rs`, stepped
//! by hand in one thread.

use std::vec::Vec;

use crate::fake::{Access, DeviceRing, DeviceState, FAKE_MAC, FakeNet, FakeRegs, TestMemory};
use crate::mmio::{InitError, feature, status};
use crate::net::net_feature;
use crate::queue::{QueueError, QueueLayout, SplitQueue, Used};
use crate::{
    MAX_FRAME_BYTES, NetConfig, NetDriver, NetInitError, RX_BUFFER_BYTES, RX_QUEUE, Sizing,
    TX_QUEUE,
};

const MEM_BYTES: usize = 2 << 20;
/// Where the driver's region starts in the test memory.
const BASE: u64 = 0x1000;
/// Enough for 32 receive and 16 transmit buffers of a 9000-byte MTU.
const JUMBO_BUDGET: u64 = 48 * 9088;
const FALLBACK_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];

type Driver = NetDriver<FakeRegs, TestMemory>;
/// Something to get wrong in a device before the driver starts.
type Breakage = fn(&mut DeviceState);

fn new_device() -> (TestMemory, FakeNet) {
    let mem = TestMemory::new(MEM_BYTES);
    let device = FakeNet::new(&mem);
    (mem, device)
}

fn start(mem: &TestMemory, device: &FakeNet, max_queue_size: u16) -> Result<Driver, NetInitError> {
    let config = NetConfig {
        max_queue_size,
        fallback_mac: FALLBACK_MAC,
        jumbo_budget_bytes: JUMBO_BUDGET,
    };
    let mem = mem.clone();
    NetDriver::new(device.regs(), config, move |bytes| {
        assert!(
            BASE + bytes <= MEM_BYTES as u64,
            "region of {bytes} bytes too large"
        );
        Some((mem, BASE))
    })
}

fn started(max_queue_size: u16) -> (TestMemory, FakeNet, Driver) {
    let (mem, device) = new_device();
    let driver = start(&mem, &device, max_queue_size).unwrap();
    (mem, device, driver)
}

/// A recognisable frame of `len` bytes.
fn frame(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i * 7) % 251) as u8)
        .collect()
}

/// Receive one frame, as one round of polling (then flush).
fn receive_one(driver: &mut Driver) -> Option<Vec<u8>> {
    let frame = driver.receive().map(|(frame, _)| frame.bytes.to_vec());
    driver.flush();
    frame
}

/// Send one frame, as one round of polling (then flush).
fn send(driver: &mut Driver, bytes: &[u8]) -> bool {
    let is_sent = match driver.transmit() {
        Some(slot) => {
            slot.send(bytes.len(), |buf| buf.copy_from_slice(bytes));
            true
        }
        None => false,
    };
    driver.flush();
    is_sent
}

fn last_status(device: &FakeNet) -> u32 {
    *device.state().status_writes.last().unwrap()
}

// ---- transport: the handshake ----

#[test]
fn handshake_negotiates_features_and_goes_live() {
    let (mem, device, driver) = started(256);
    let d = device.state();
    use status::*;
    assert_eq!(
        d.status_writes,
        [
            0,
            ACKNOWLEDGE,
            ACKNOWLEDGE | DRIVER,
            ACKNOWLEDGE | DRIVER | FEATURES_OK,
            ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK
        ]
    );
    // STATUS is offered, but not wanted.
    assert_eq!(
        d.driver_features,
        feature::VERSION_1 | net_feature::MAC | feature::EVENT_IDX
    );
    assert_eq!(driver.mac(), FAKE_MAC);
    assert!(driver.has_device_mac());
    assert_eq!(driver.queue_sizes(), (256, 256));
    // The whole setup in register accesses (VM exits): identification 3,
    // reset 2, status 3, features 9, MAC 8 (6 bytes between two
    // generation reads), queues 2 x 3 + 2 x 9 - 1 (one QueueSel saved),
    // DRIVER_OK 1; plus one receive notification.
    assert_eq!(d.accesses, 3 + 2 + 3 + 9 + 8 + 6 + 17 + 1 + 1);
    assert_eq!(d.notifications, [u32::from(RX_QUEUE)]);
    // Both queues are valid, disjoint, and inside the region.
    let rx = d.rings[0].layout;
    let tx = d.rings[1].layout;
    assert!(rx.is_valid() && tx.is_valid());
    assert!(rx.desc_addr >= BASE && rx.desc_addr + QueueLayout::bytes(256) <= tx.desc_addr);
    // Every receive buffer is available to the device.
    assert_eq!(d.rings[0].avail_idx(&mem), 256);
    assert_eq!(d.rings[1].avail_idx(&mem), 0);
}

#[test]
fn handshake_leaves_other_devices_alone() {
    let cases: [(Breakage, InitError); 4] = [
        (|d| d.magic = 0x1234, InitError::BadMagic(0x1234)),
        (|d| d.version = 1, InitError::UnsupportedVersion(1)),
        (|d| d.device_id = 0, InitError::NoDevice),
        (
            |d| d.device_id = 2,
            InitError::WrongDevice {
                expected: 1,
                found: 2,
            },
        ),
    ];
    for (break_it, expected) in cases {
        let (mem, device) = new_device();
        break_it(&mut device.state());
        let result = start(&mem, &device, 256);
        assert_eq!(result.err(), Some(NetInitError::Transport(expected)));
        assert!(
            device.state().status_writes.is_empty(),
            "{expected:?}: status written"
        );
    }
}

#[test]
fn a_device_without_version_1_is_failed() {
    let (mem, device) = new_device();
    device.state().offered &= !feature::VERSION_1;
    let result = start(&mem, &device, 256);
    assert_eq!(
        result.err(),
        Some(NetInitError::Transport(InitError::MissingFeatures(
            feature::VERSION_1
        )))
    );
    assert_ne!(last_status(&device) & status::FAILED, 0);
}

#[test]
fn features_refused_by_the_device_fail_the_handshake() {
    let (mem, device) = new_device();
    device.state().refuses_features = true;
    let result = start(&mem, &device, 256);
    assert_eq!(
        result.err(),
        Some(NetInitError::Transport(InitError::FeaturesRefused))
    );
    assert_ne!(last_status(&device) & status::FAILED, 0);
    assert_eq!(device.state().status & status::DRIVER_OK, 0);
}

#[test]
fn reset_is_awaited_but_not_forever() {
    let (mem, device) = new_device();
    device.state().reset_reads_needed = 3;
    assert!(start(&mem, &device, 256).is_ok());

    let (mem, device) = new_device();
    device.state().reset_reads_needed = u32::MAX;
    let result = start(&mem, &device, 256);
    assert_eq!(
        result.err(),
        Some(NetInitError::Transport(InitError::ResetTimeout))
    );
}

#[test]
fn queue_problems_fail_the_handshake() {
    let (mem, device) = new_device();
    device.state().preset_ready[0] = true;
    assert_eq!(
        start(&mem, &device, 256).err(),
        Some(NetInitError::Transport(InitError::QueueInUse(0)))
    );
    assert_ne!(last_status(&device) & status::FAILED, 0);

    let (mem, device) = new_device();
    device.state().queue_num_max[1] = 0;
    assert_eq!(
        start(&mem, &device, 256).err(),
        Some(NetInitError::Transport(InitError::QueueUnavailable(1)))
    );
    assert_ne!(last_status(&device) & status::FAILED, 0);
}

#[test]
fn queue_sizes_are_powers_of_two_within_both_limits() {
    let (mem, device) = new_device();
    device.state().queue_num_max = [100, 8];
    let driver = start(&mem, &device, 256).unwrap();
    assert_eq!(driver.queue_sizes(), (64, 8));
    drop(driver);

    let (_, _, driver) = started(48);
    assert_eq!(driver.queue_sizes(), (32, 32));
    let (_, _, driver) = started(0);
    assert_eq!(driver.queue_sizes(), (1, 1));
}

#[test]
fn mac_is_read_again_when_the_configuration_changes() {
    let (mem, device) = new_device();
    device.state().generation_changes = 1;
    let driver = start(&mem, &device, 256).unwrap();
    assert_eq!(driver.mac(), FAKE_MAC);

    let (mem, device) = new_device();
    device.state().generation_changes = u32::MAX;
    let result = start(&mem, &device, 256);
    assert_eq!(
        result.err(),
        Some(NetInitError::Transport(InitError::ConfigUnstable))
    );
    assert_ne!(last_status(&device) & status::FAILED, 0);
}

#[test]
fn without_a_device_mac_the_fallback_is_used() {
    let (mem, device) = new_device();
    device.state().offered &= !net_feature::MAC;
    let driver = start(&mem, &device, 256).unwrap();
    assert_eq!(driver.mac(), FALLBACK_MAC);
    assert!(!driver.has_device_mac());
    assert_eq!(device.state().driver_features & net_feature::MAC, 0);
}

#[test]
fn memory_problems_fail_the_handshake() {
    let (mem, device) = new_device();
    let config = NetConfig {
        max_queue_size: 256,
        fallback_mac: FALLBACK_MAC,
        jumbo_budget_bytes: JUMBO_BUDGET,
    };
    let result = NetDriver::<_, TestMemory>::new(device.regs(), config, |_| None);
    assert!(matches!(result.err(), Some(NetInitError::NoMemory { .. })));
    assert_ne!(last_status(&device) & status::FAILED, 0);

    let device = FakeNet::new(&mem);
    let result = NetDriver::new(device.regs(), config, |_| Some((mem.clone(), BASE + 8)));
    assert_eq!(result.err(), Some(NetInitError::MisalignedMemory(BASE + 8)));
    assert_ne!(last_status(&device) & status::FAILED, 0);
}

#[test]
fn dropping_the_driver_resets_the_device() {
    let (_mem, device, driver) = started(16);
    drop(driver);
    assert_eq!(last_status(&device), 0);
}

// ---- frames ----

#[test]
fn frames_received_arrive_intact_and_buffers_go_back() {
    let (mem, device, mut driver) = started(256);
    let frames: Vec<_> = [14, 60, 1514, 1524]
        .iter()
        .enumerate()
        .map(|(i, &n)| frame(i, n))
        .collect();
    for f in &frames {
        assert!(device.deliver(f));
    }
    for f in &frames {
        assert_eq!(receive_one(&mut driver).as_ref(), Some(f));
    }
    assert_eq!(receive_one(&mut driver), None);
    let counters = driver.counters();
    assert_eq!(counters.rx_frames, 4);
    assert_eq!(counters.rx_bytes, 14 + 60 + 1514 + 1524);
    // Each buffer went straight back: 256 + 4 published.
    assert_eq!(device.ring(RX_QUEUE, |r, m| r.avail_idx(m)), 260);
    let _ = mem;
}

#[test]
fn frames_sent_reach_the_device_behind_a_zero_header() {
    let (_mem, device, mut driver) = started(256);
    let frames: Vec<_> = [14, 100, MAX_FRAME_BYTES]
        .iter()
        .enumerate()
        .map(|(i, &n)| frame(i, n))
        .collect();
    for f in &frames {
        assert!(send(&mut driver, f));
    }
    assert_eq!(device.collect_tx(), frames);
    let counters = driver.counters();
    assert_eq!(counters.tx_frames, 3);
    assert_eq!(counters.tx_bytes, (14 + 100 + MAX_FRAME_BYTES) as u64);
}

#[test]
fn a_reply_can_be_sent_while_receiving() {
    let (_mem, device, mut driver) = started(16);
    device.deliver(&frame(1, 60));
    let (request, slot) = driver.receive().unwrap();
    let request = request.bytes;
    let reply: Vec<u8> = request.iter().rev().copied().collect();
    slot.send(reply.len(), |buf| buf.copy_from_slice(&reply));
    assert_eq!(device.collect_tx(), [reply]);
}

#[test]
fn an_oversized_frame_is_written_and_dropped() {
    let (_mem, device, mut driver) = started(16);
    let slot = driver.transmit().unwrap();
    let seen = slot.send(MAX_FRAME_BYTES + 1, |buf| buf.len());
    assert_eq!(seen, MAX_FRAME_BYTES + 1);
    assert!(device.collect_tx().is_empty());
    assert_eq!(driver.counters().tx_dropped, 1);
}

#[test]
fn transmit_buffers_are_recycled_when_the_ring_is_full() {
    let (_mem, device, mut driver) = started(4);
    for i in 0..4 {
        assert!(send(&mut driver, &frame(i, 64)));
    }
    // Every buffer is with the device.
    assert!(driver.transmit().is_none());
    // A reply made while receiving is dropped, not queued.
    device.deliver(&frame(9, 64));
    let (_, slot) = driver.receive().unwrap();
    slot.send(64, |buf| buf.fill(1));
    assert_eq!(driver.counters().tx_dropped, 1);
    // Going to sleep with a full ring asks for a transmit interrupt.
    assert!(!driver.enable_interrupts());
    assert_eq!(device.collect_tx().len(), 4);
    assert_eq!(device.interrupts(TX_QUEUE), 1);
    // The buffers come back.
    for i in 0..4 {
        assert!(send(&mut driver, &frame(i, 64)));
    }
    assert_eq!(device.collect_tx().len(), 4);
    // Transmit interrupts are off again.
    assert_eq!(device.interrupts(TX_QUEUE), 1);
}

#[test]
fn a_full_ring_with_completions_pending_asks_to_poll() {
    let (_mem, device, mut driver) = started(2);
    assert!(send(&mut driver, &frame(0, 64)));
    assert!(send(&mut driver, &frame(1, 64)));
    device.collect_tx();
    // Completions are there: the caller can transmit again at once.
    assert!(driver.enable_interrupts());
    assert!(send(&mut driver, &frame(2, 64)));
}

#[test]
fn indices_wrap_around_in_both_directions() {
    let (_mem, device, mut driver) = started(4);
    for i in 0..70_000 {
        let f = frame(i, 14 + i % 1500);
        assert!(device.deliver(&f));
        assert_eq!(receive_one(&mut driver), Some(f.clone()));
        assert!(send(&mut driver, &f));
        if i % 3 == 2 {
            assert_eq!(device.collect_tx().len(), 3);
        }
    }
    let counters = driver.counters();
    assert_eq!((counters.rx_frames, counters.tx_frames), (70_000, 70_000));
    assert_eq!(
        counters.rx_errors + counters.tx_dropped + counters.bad_used_entries,
        0
    );
    // The device never asked for more than its first notification per
    // queue, bar one when the stale avail_event comes round again after
    // 65536 entries.
    assert!(device.notifications(RX_QUEUE) <= 2);
    assert!(device.notifications(TX_QUEUE) <= 2);
}

// ---- notification and interrupt suppression ----

#[test]
fn the_device_is_notified_only_when_it_waits() {
    let (_mem, device, mut driver) = started(8);
    assert_eq!(device.notifications(RX_QUEUE), 1);
    // Busy device (its avail_event stays behind): no notification.
    for i in 0..5 {
        assert!(send(&mut driver, &frame(i, 64)));
    }
    assert_eq!(
        device.notifications(TX_QUEUE),
        1,
        "only the first frame notifies"
    );
    device.collect_tx();
    // The device drained the queue and asks to be told about more.
    device.ring(TX_QUEUE, |r, m| r.want_notifications(m));
    assert!(send(&mut driver, &frame(5, 64)));
    assert!(send(&mut driver, &frame(6, 64)));
    assert_eq!(device.notifications(TX_QUEUE), 2);

    // Receive: buffers returned while the device has plenty are not
    // announced; once it ran dry and waits, the next one is.
    device.deliver(&frame(0, 64));
    receive_one(&mut driver).unwrap();
    assert_eq!(device.notifications(RX_QUEUE), 1);
    for i in 0..7 {
        assert!(device.deliver(&frame(i, 64)));
    }
    assert!(device.deliver(&frame(7, 64)));
    assert!(!device.deliver(&frame(8, 64)), "out of buffers");
    device.ring(RX_QUEUE, |r, m| r.want_notifications(m));
    receive_one(&mut driver).unwrap();
    assert_eq!(device.notifications(RX_QUEUE), 2);
    assert_eq!(driver.counters().rx_notifications, 2);
}

#[test]
fn a_round_of_frames_costs_one_notification() {
    let (_mem, device, mut driver) = started(64);
    device.ring(TX_QUEUE, |r, m| r.want_notifications(m));
    for i in 0..10 {
        let slot = driver.transmit().unwrap();
        let f = frame(i, 64);
        slot.send(f.len(), |buf| buf.copy_from_slice(&f));
    }
    assert_eq!(device.notifications(TX_QUEUE), 0, "not before the flush");
    driver.flush();
    assert_eq!(device.notifications(TX_QUEUE), 1);
    assert_eq!(device.collect_tx().len(), 10);
}

#[test]
fn one_interrupt_per_sleep() {
    let (_mem, device, mut driver) = started(64);
    assert!(!driver.enable_interrupts());
    for i in 0..5 {
        device.deliver(&frame(i, 64));
    }
    assert_eq!(device.interrupts(RX_QUEUE), 1);
    // Polling after the interrupt: more frames raise none.
    receive_one(&mut driver).unwrap();
    for i in 0..5 {
        device.deliver(&frame(i, 64));
    }
    assert_eq!(device.interrupts(RX_QUEUE), 1);
    while receive_one(&mut driver).is_some() {}
    // Asleep again: the next frame interrupts.
    assert!(!driver.enable_interrupts());
    device.deliver(&frame(0, 64));
    assert_eq!(device.interrupts(RX_QUEUE), 2);
    // A frame that arrives before the caller sleeps is reported instead.
    receive_one(&mut driver).unwrap();
    device.deliver(&frame(1, 64));
    assert!(driver.enable_interrupts());
    // Transmit completions never interrupt while buffers are free.
    for i in 0..10 {
        assert!(send(&mut driver, &frame(i, 64)));
        device.collect_tx();
    }
    assert_eq!(device.interrupts(TX_QUEUE), 0);
}

#[test]
fn a_watcher_sees_frames_without_interrupts() {
    let (_mem, device, mut driver) = started(64);
    assert!(!driver.enable_interrupts());
    assert!(!driver.has_frames());
    // An idle CPU watches the ring instead of waiting for the interrupt.
    driver.disable_receive_interrupts();
    device.deliver(&frame(0, 64));
    device.deliver(&frame(1, 64));
    assert_eq!(device.interrupts(RX_QUEUE), 0);
    assert!(driver.has_frames(), "seen, not taken");
    assert!(driver.has_frames());
    assert_eq!(receive_one(&mut driver), Some(frame(0, 64)));
    assert_eq!(receive_one(&mut driver), Some(frame(1, 64)));
    assert!(!driver.has_frames());
    // The watch ends: the next frame interrupts again.
    assert!(!driver.enable_interrupts());
    device.deliver(&frame(2, 64));
    assert_eq!(device.interrupts(RX_QUEUE), 1);
    assert!(driver.has_frames());
}

#[test]
fn frames_are_sized_by_the_devices_mtu_and_the_budget() {
    let sizing = |mtu, budget| Sizing::new(mtu, 256, 256, 256, budget);
    let standard = Sizing {
        max_frame_bytes: 1514,
        buffer_bytes: RX_BUFFER_BYTES,
        rx_size: 256,
        tx_size: 256,
    };
    assert_eq!(sizing(None, 1 << 30), standard);
    assert_eq!(sizing(Some(1500), 1 << 30), standard);
    // Smaller links are followed, down to IPv4's 576.
    assert_eq!(sizing(Some(1400), 0).max_frame_bytes, 1414);
    assert_eq!(sizing(Some(100), 0).max_frame_bytes, 590);
    // A 64 KiB MTU: 16 transmit buffers, receive buffers as the budget
    // allows (a power of two), each rounded to 64 bytes.
    let jumbo = sizing(Some(65521), 8 << 20);
    assert_eq!(jumbo.max_frame_bytes, 65535);
    assert_eq!(jumbo.buffer_bytes, 65600);
    assert_eq!((jumbo.rx_size, jumbo.tx_size), (64, 16));
    assert_eq!(sizing(Some(65521), 16 << 20).rx_size, 128);
    // Too little memory for 32 receive buffers: the standard MTU.
    assert_eq!(sizing(Some(65521), 3 << 20), standard);
    // The device's queue limits still hold.
    let small = Sizing::new(Some(9000), 32, 8, 256, 1 << 30);
    assert_eq!(
        (small.rx_size, small.tx_size, small.max_frame_bytes),
        (32, 8, 9014)
    );
    assert_eq!(
        Sizing::new(Some(9000), 16, 8, 256, 1 << 30),
        Sizing {
            rx_size: 16,
            tx_size: 8,
            ..standard
        }
    );
}

#[test]
fn the_devices_word_on_checksums_counts_only_with_guest_csum() {
    let validated = |offered: bool| {
        let (mem, device) = new_device();
        if offered {
            device.offer_guest_csum();
        }
        let mut driver = start(&mem, &device, 8).unwrap();
        assert_eq!(driver.has_checksum_offload(), offered);
        assert!(device.deliver_with_flags(&frame(0, 64), 2));
        assert!(device.deliver_with_flags(&frame(1, 64), 0));
        // A partial checksum of a packet made on the host (QEMU's tap).
        assert!(device.deliver_with_flags(&frame(2, 64), 1));
        let mut seen = Vec::new();
        while let Some((frame, _)) = driver.receive() {
            seen.push((frame.bytes.len(), frame.is_checksum_valid));
        }
        seen
    };
    assert_eq!(validated(true), [(64, true), (64, false), (64, true)]);
    assert_eq!(
        validated(false),
        [(64, false), (64, false), (64, false)],
        "a flag without the feature"
    );
}

#[test]
fn a_jumbo_mtu_from_the_device_carries_big_frames_both_ways() {
    let (mem, device) = new_device();
    device.offer_mtu(9000);
    let mut driver = start(&mem, &device, 256).unwrap();
    assert_ne!(device.state().driver_features & net_feature::MTU, 0);
    assert_eq!(driver.max_frame_bytes(), 9014);
    assert_eq!(driver.queue_sizes(), (32, 16));
    let big = frame(1, 9014);
    assert!(device.deliver(&big));
    assert_eq!(receive_one(&mut driver), Some(big.clone()));
    assert!(send(&mut driver, &big));
    assert_eq!(device.collect_tx(), [big]);
    // One byte more is dropped, not truncated.
    assert!(send(&mut driver, &frame(2, 9015)));
    assert!(device.collect_tx().is_empty());
    assert_eq!(driver.counters().tx_dropped, 1);
}

#[test]
fn a_jumbo_mtu_without_the_memory_for_it_stays_at_1500() {
    let (mem, device) = new_device();
    device.offer_mtu(65521);
    let mut driver = start(&mem, &device, 256).unwrap();
    assert_eq!(driver.max_frame_bytes(), MAX_FRAME_BYTES);
    assert_eq!(driver.queue_sizes(), (256, 256));
    let f = frame(3, MAX_FRAME_BYTES);
    assert!(device.deliver(&f));
    assert_eq!(receive_one(&mut driver), Some(f));
}

#[test]
fn without_event_idx_the_flags_suppress() {
    let (mem, device) = new_device();
    device.state().offered &= !feature::EVENT_IDX;
    let mut driver = start(&mem, &device, 8).unwrap();
    assert_eq!(device.state().driver_features & feature::EVENT_IDX, 0);
    // Notifications: the device's NO_NOTIFY flag decides.
    device.ring(TX_QUEUE, |r, m| r.refuse_notifications(m));
    assert!(send(&mut driver, &frame(0, 64)));
    assert_eq!(device.notifications(TX_QUEUE), 0);
    device.ring(TX_QUEUE, |r, m| r.want_notifications(m));
    assert!(send(&mut driver, &frame(1, 64)));
    assert_eq!(device.notifications(TX_QUEUE), 1);
    // Interrupts: off while polling, on when asked for.
    assert!(!driver.enable_interrupts());
    device.deliver(&frame(0, 64));
    assert_eq!(device.interrupts(RX_QUEUE), 1);
    receive_one(&mut driver).unwrap();
    device.deliver(&frame(1, 64));
    assert_eq!(device.interrupts(RX_QUEUE), 1);
    assert!(driver.enable_interrupts(), "a frame is pending");
    receive_one(&mut driver).unwrap();
    assert!(!driver.enable_interrupts());
    device.deliver(&frame(2, 64));
    assert_eq!(device.interrupts(RX_QUEUE), 2);
    // Transmit completions do not interrupt.
    device.collect_tx();
    assert_eq!(device.interrupts(TX_QUEUE), 0);
}

// ---- a hostile device ----

/// Take the next receive chain and return it with `(id, len)` as given.
fn return_rx(device: &FakeNet, id: Option<u32>, len: u32) {
    device.ring(RX_QUEUE, |r, m| {
        let chain = r.pop(m).unwrap();
        r.push(m, id.unwrap_or(u32::from(chain.head)), len);
    });
}

#[test]
fn impossible_receive_lengths_are_dropped_and_the_buffer_reused() {
    let (_mem, device, mut driver) = started(8);
    return_rx(&device, None, 1537); // more than the buffer
    return_rx(&device, None, 25); // less than both headers
    return_rx(&device, None, 0);
    let good = frame(3, 100);
    device.deliver(&good);
    assert_eq!(receive_one(&mut driver), Some(good));
    assert_eq!(driver.counters().rx_errors, 3);
    // All 8 buffers are still with the device (4 taken, 4 back).
    assert_eq!(
        device.ring(RX_QUEUE, |r, m| r.avail_idx(m).wrapping_sub(r.next_avail)),
        8
    );
    assert!(!driver.is_broken());
}

#[test]
fn unknown_ids_are_skipped() {
    let (_mem, device, mut driver) = started(8);
    return_rx(&device, Some(999), 100);
    return_rx(&device, Some(u32::MAX), 100);
    let good = frame(4, 80);
    device.deliver(&good);
    assert_eq!(receive_one(&mut driver), Some(good));
    assert_eq!(driver.counters().bad_used_entries, 2);
    assert!(!driver.is_broken());
}

#[test]
fn a_used_index_running_ahead_breaks_the_queue_for_good() {
    let (_mem, device, mut driver) = started(8);
    device.ring(RX_QUEUE, |r, m| r.set_used_idx(m, 9));
    assert_eq!(receive_one(&mut driver), None);
    assert!(driver.is_broken());
    assert!(!driver.enable_interrupts());
    device.ring(RX_QUEUE, |r, m| r.set_used_idx(m, 0));
    assert_eq!(receive_one(&mut driver), None);

    let (_mem, device, mut driver) = started(2);
    assert!(send(&mut driver, &frame(0, 64)));
    assert!(send(&mut driver, &frame(1, 64)));
    device.ring(TX_QUEUE, |r, m| r.set_used_idx(m, 3));
    assert!(driver.transmit().is_none());
    assert!(driver.is_broken());
}

// ---- the split queue itself ----

fn queue(size: u16, has_event_idx: bool) -> (TestMemory, SplitQueue, DeviceRing) {
    let mem = TestMemory::new(0x10000);
    let layout = QueueLayout::at(0x1000, size);
    let queue = SplitQueue::new(&mem, layout, has_event_idx).unwrap();
    (mem, queue, DeviceRing::new(layout, has_event_idx))
}

#[test]
fn chains_are_laid_out_and_their_descriptors_recycled() {
    let (mem, mut q, mut dev) = queue(4, true);
    let head = q
        .add(
            &mem,
            &[(0x8000, 10), (0x8100, 20)],
            &[(0x9000, 30), (0x9100, 40)],
        )
        .unwrap();
    assert_eq!(q.free_descriptors(), 0);
    assert_eq!(q.add(&mem, &[(0x8000, 1)], &[]), Err(QueueError::Full));
    assert_eq!(q.add(&mem, &[], &[]), Err(QueueError::EmptyChain));
    q.publish(&mem);
    let chain = dev.pop(&mem).unwrap();
    assert_eq!(chain.head, head);
    assert_eq!(
        chain.buffers,
        [
            (0x8000, 10, false),
            (0x8100, 20, false),
            (0x9000, 30, true),
            (0x9100, 40, true)
        ]
    );
    // 70 bytes writable: exactly that is fine, one more is not.
    dev.push(&mem, u32::from(head), 70);
    assert_eq!(
        q.pop_used(&mem),
        Ok(Some(Used {
            head,
            len: Some(70)
        }))
    );
    assert_eq!(q.free_descriptors(), 4);
    let head = q.add(&mem, &[], &[(0x9000, 30), (0x9100, 40)]).unwrap();
    q.publish(&mem);
    dev.pop(&mem).unwrap();
    dev.push(&mem, u32::from(head), 71);
    assert_eq!(q.pop_used(&mem), Ok(Some(Used { head, len: None })));
    assert_eq!(q.pop_used(&mem), Ok(None));
    // Four one-descriptor chains fit again.
    for i in 0..4 {
        q.add(&mem, &[(0x8000 + i * 0x100, 8)], &[]).unwrap();
    }
    assert_eq!(q.free_descriptors(), 0);
}

#[test]
fn invalid_layouts_are_refused() {
    let mem = TestMemory::new(0x10000);
    for layout in [
        QueueLayout::at(0x1000, 3),
        QueueLayout::at(0x1008, 4),
        QueueLayout {
            avail_addr: 0x2001,
            ..QueueLayout::at(0x1000, 4)
        },
        QueueLayout {
            used_addr: 0x3002,
            ..QueueLayout::at(0x1000, 4)
        },
    ] {
        assert!(matches!(
            SplitQueue::new(&mem, layout, true),
            Err(QueueError::BadLayout)
        ));
    }
}

#[test]
fn barriers_sit_where_the_ring_protocol_needs_them() {
    let (mem, mut q, mut dev) = queue(4, true);
    let layout = *q.layout();
    let avail_idx = layout.avail_addr + 2;
    let used_idx = layout.used_addr + 2;
    let used_event = layout.avail_addr + 4 + 2 * 4;
    let avail_event = layout.used_addr + 4 + 8 * 4;

    // Publishing: ring entry and descriptor, write barrier, index; then a
    // full barrier before the device's avail_event is read.
    mem.start_log();
    let head = q.add(&mem, &[(0x8000, 64)], &[]).unwrap();
    q.publish(&mem);
    assert!(q.should_notify(&mem));
    let log = mem.take_log();
    let fence = log.iter().position(|a| *a == Access::PublishFence).unwrap();
    assert!(
        log[..fence]
            .iter()
            .all(|a| matches!(a, Access::Write { .. }))
    );
    assert!(log[..fence].contains(&Access::Write {
        addr: layout.avail_addr + 4,
        len: 2
    }));
    assert_eq!(
        log[fence..],
        [
            Access::PublishFence,
            Access::Write {
                addr: avail_idx,
                len: 2
            },
            Access::FullFence,
            Access::Read {
                addr: avail_event,
                len: 2
            }
        ]
    );

    // Consuming: the used index, a read barrier, then the entry.
    dev.pop(&mem).unwrap();
    dev.push(&mem, u32::from(head), 0);
    mem.start_log();
    q.pop_used(&mem).unwrap().unwrap();
    let log = mem.take_log();
    assert_eq!(
        log[..2],
        [
            Access::Read {
                addr: used_idx,
                len: 2
            },
            Access::ConsumeFence
        ]
    );
    assert_eq!(
        log[2],
        Access::Read {
            addr: layout.used_addr + 4,
            len: 4
        }
    );

    // Enabling interrupts: used_event, a full barrier, the used index.
    mem.start_log();
    assert!(!q.enable_interrupts(&mem));
    assert_eq!(
        mem.take_log(),
        [
            Access::Write {
                addr: used_event,
                len: 2
            },
            Access::FullFence,
            Access::Read {
                addr: used_idx,
                len: 2
            }
        ]
    );
}

#[test]
fn used_event_goes_far_ahead_while_interrupts_are_off() {
    let (mem, mut q, mut dev) = queue(4, true);
    q.disable_interrupts(&mem);
    for round in 0..10u32 {
        for _ in 0..4 {
            q.add(&mem, &[(0x8000, 8)], &[]).unwrap();
        }
        q.publish(&mem);
        while let Some(chain) = dev.pop(&mem) {
            dev.push(&mem, u32::from(chain.head), 0);
        }
        while q.pop_used(&mem).unwrap().is_some() {}
        assert_eq!(dev.interrupts, 0, "round {round}");
    }
    assert!(!q.has_used(&mem));
}

#[test]
fn a_chain_returned_twice_is_taken_back_once() {
    let (mem, mut q, mut dev) = queue(4, true);
    let first = q.add(&mem, &[], &[(0x8000, 64)]).unwrap();
    let second = q.add(&mem, &[], &[(0x8100, 64)]).unwrap();
    q.add(&mem, &[], &[(0x8200, 64)]).unwrap();
    q.publish(&mem);
    dev.pop(&mem).unwrap();
    dev.pop(&mem).unwrap();
    dev.push(&mem, u32::from(first), 10);
    dev.push(&mem, u32::from(first), 10);
    dev.push(&mem, u32::from(second), 20);
    assert_eq!(
        q.pop_used(&mem),
        Ok(Some(Used {
            head: first,
            len: Some(10)
        }))
    );
    assert_eq!(
        q.pop_used(&mem),
        Ok(Some(Used {
            head: second,
            len: Some(20)
        }))
    );
    assert_eq!(q.pop_used(&mem), Ok(None));
    assert_eq!(q.bad_used_entries(), 1);
    // The third chain is still in flight.
    assert_eq!(q.free_descriptors(), 3);
    // More used entries than chains outstanding: broken for good.
    dev.push(&mem, u32::from(second), 20);
    dev.push(&mem, u32::from(second), 20);
    assert_eq!(q.pop_used(&mem), Err(QueueError::Broken));
    assert!(q.is_broken());
    assert_eq!(q.add(&mem, &[(0x8000, 1)], &[]), Err(QueueError::Broken));
}
