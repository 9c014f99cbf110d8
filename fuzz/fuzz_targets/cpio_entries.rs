//! The initrd parser on arbitrary bytes: it must never panic, and every
//! entry it yields must have a normalised name and a kind that matches
//! its data.
#![no_main]

use eremite_cpio::{EntryKind, entries};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for entry in entries(data) {
        let Ok(entry) = entry else { break };
        assert!(!entry.name.is_empty());
        assert!(!entry.name.starts_with(b"/"));
        if !entry.is_root() {
            assert!(
                entry
                    .name
                    .split(|&b| b == b'/')
                    .all(|c| !c.is_empty() && c != b"." && c != b"..")
            );
        }
        match entry.kind() {
            EntryKind::Directory => assert!(entry.data.is_empty()),
            EntryKind::Symlink => assert!(!entry.data.is_empty() && !entry.data.contains(&0)),
            EntryKind::File | EntryKind::Other => {}
        }
    }
});
