//! The kernel's parser of command-line parameters on arbitrary tokens:
//! no panic, and whatever parses prints back as a token that parses to
//! the same value.
#![no_main]

use eremite_interface::cmdline::parse_param;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(Ok(param)) = parse_param(token) {
        let printed = param.to_string();
        assert_eq!(parse_param(&printed), Some(Ok(param)), "{printed}");
    }
});
