//! Device drivers. Only virtio over the MMIO transport so far
//! ([`virtio`]); the protocol logic lives in `libs/virtq`, host-tested,
//! and this module supplies what it cannot: register and memory access.

pub(crate) mod virtio;
