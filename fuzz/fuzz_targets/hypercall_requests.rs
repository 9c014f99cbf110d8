//! The VMM's hypercall decoder and handlers on arbitrary guest memory and
//! port values (what a hostile guest controls): no panic, and every
//! range the VMM accepts lies inside guest RAM.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [port, a, b, c, d, memory @ ..] = data else {
        return;
    };
    eremite_vmm::fuzzing::hypercall(*port, u32::from_le_bytes([*a, *b, *c, *d]), memory);
});
