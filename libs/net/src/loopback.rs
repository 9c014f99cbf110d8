//! The in-guest loopback device: IP packets sent to it come back out of it,
//! in order. Unlike smoltcp's `phy::Loopback` its queue is bounded (a full
//! queue pushes back on the sockets, as a full device ring does) and it
//! says whether anything is waiting, so the stack knows it must poll again.

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// Linux's `lo` MTU is 65536; an IPv4 packet is at most 65535 bytes.
const MTU_BYTES: usize = 65535;

/// Packets in flight at most (each at most [`MTU_BYTES`]).
const MAX_PACKETS: usize = 32;

#[derive(Default)]
pub(crate) struct LoopbackDevice {
    queue: VecDeque<Vec<u8>>,
}

impl LoopbackDevice {
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

impl phy::Device for LoopbackDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = MTU_BYTES;
        // Packets never leave memory: checksums would only cost time.
        caps.checksum = ChecksumCapabilities::ignored();
        caps
    }

    fn receive(&mut self, _now: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let packet = self.queue.pop_front()?;
        Some((
            RxToken { packet },
            TxToken {
                queue: &mut self.queue,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        (self.queue.len() < MAX_PACKETS).then_some(TxToken {
            queue: &mut self.queue,
        })
    }
}

pub(crate) struct RxToken {
    packet: Vec<u8>,
}

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.packet)
    }
}

pub(crate) struct TxToken<'a> {
    queue: &'a mut VecDeque<Vec<u8>>,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0; len];
        let result = f(&mut packet);
        self.queue.push_back(packet);
        result
    }
}
