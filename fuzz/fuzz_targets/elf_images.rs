//! The VMM's ELF loader on arbitrary image files (the image is not
//! trusted): it loads or refuses, never panics, and what it loads lies
//! inside guest RAM.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    eremite_vmm::fuzzing::load_image(data);
});
