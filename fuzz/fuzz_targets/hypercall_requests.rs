//! The VMM's hypercall decoder and handlers on arbitrary guest memory and
//! sequences of port values (what a hostile guest controls), with a host
//! directory mounted: no panic, every range the VMM accepts lies inside
//! guest RAM, and nothing beside the mount changes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    eremite_vmm::fuzzing::hypercalls(data);
});
