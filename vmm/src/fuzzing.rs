//! What the fuzz targets in `fuzz/` drive: the hypercall decoder and
//! handlers on arbitrary guest memory, as a hostile guest would, and the
//! ELF loader on arbitrary image files.

use eremite_interface::hypercall::{self, Port};

use crate::hypercall::{Console, Request, Services, decode, handle};
use crate::memory::GuestRam;

/// Guest RAM of the fuzzed VM.
const RAM_BYTES: u64 = 1 << 20;

/// Put `memory` at the start of a 1 MiB guest RAM, then decode and serve a
/// hypercall on port `port_index` (modulo the number of ports) whose
/// `out` value is `value`. Console output is dropped, no host directory is
/// mounted, no CPU can be started. Panics only if the VMM's own checks
/// let something through: a decoded `Populate` outside RAM.
pub fn hypercall(port_index: u8, value: u32, memory: &[u8]) {
    let Ok(ram) = GuestRam::new(RAM_BYTES) else {
        return;
    };
    let len = memory.len().min(RAM_BYTES as usize);
    if ram.write(0, &memory[..len]).is_err() {
        return;
    }
    let port = Port::ALL[usize::from(port_index) % Port::ALL.len()];
    let Ok(call) = decode(port, &value.to_le_bytes(), &ram) else {
        return;
    };
    if let Ok(Request::Populate { addr, len }) = call.request {
        assert!(ram.check(addr, len).is_ok() && len <= hypercall::Populate::MAX_LEN);
    }
    let mut console = Console::new(Box::new(std::io::sink()), Box::new(std::io::sink()), false);
    let services = Services::new(&mut console, crate::sandbox::HostFs::new(Vec::new()));
    let _ = handle(call, &ram, &services);
}

/// Load `image` (any bytes) into a fresh 16 MiB guest RAM: it must load
/// or be refused with an error, never panic, and a loaded image must lie
/// inside RAM.
pub fn load_image(image: &[u8]) {
    let Ok(ram) = GuestRam::new(16 << 20) else {
        return;
    };
    if let Ok(loaded) = crate::loader::load(image, &ram) {
        assert!(
            loaded.start <= loaded.end
                && ram.check(loaded.start, loaded.end - loaded.start).is_ok()
        );
    }
}
