//! The snapshot state parser on arbitrary state files (`eremite restore`
//! trusts no file it is given): it refuses or accepts, never panics, and
//! never accepts a state whose memory file is shorter than its RAM.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    eremite_vmm::fuzzing::snapshot_state(data);
});
