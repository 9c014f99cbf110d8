//! In-process VMM tests: a few bytes of 64-bit machine code, wrapped into
//! an image by [`TestImage`], booted in a real KVM VM through [`run`].
//! They need `/dev/kvm` and fail, saying so, where it is missing.
//!
//! The machine code is written out byte by byte with its assembly beside
//! it; request structs follow the code (the segment is RWX) and are found
//! with RIP-relative `lea`.

use std::sync::atomic::{AtomicU32, Ordering};

use eremite_interface::hypercall::Port;
use eremite_interface::layout::IMAGE_BASE;

use crate::hypercall::Capture;
use crate::loader::test_image::TestImage;
use crate::{Console, Outcome, Report, VmConfig, run};

/// Boot `code` (placed at the image's entry) and return the report and
/// what the guest wrote to stdout.
fn boot(code: &[u8]) -> (Report, Vec<u8>) {
    assert!(
        std::path::Path::new("/dev/kvm").exists(),
        "this test boots a VM and needs /dev/kvm, which this machine does not have"
    );
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "eremite-tiny-guest-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, TestImage::new(code).bytes()).unwrap();
    let out = Capture::default();
    let mut console = Console::new(Box::new(out.clone()), Box::new(Capture::default()), false);
    let mut config = VmConfig::new(&path);
    config.memory_bytes = 8 << 20;
    let report = run(&config, &mut console);
    std::fs::remove_file(&path).unwrap();
    let report = report.unwrap_or_else(|e| panic!("VM did not start: {e}"));
    let stdout = out.0.lock().unwrap().clone();
    (report, stdout)
}

const ENTRY: u64 = IMAGE_BASE + TestImage::CODE_OFFSET;

fn u64s(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn guest_exit_code_reaches_the_host() {
    let mut code = vec![
        0x66, 0xba, 0x01, 0x05, // mov dx, 0x501 (Exit)
        0x48, 0x8d, 0x05, 5, 0, 0, 0,    // lea rax, [rip + 5]  (the request at +16)
        0xef, // out dx, eax
        0xeb, 0xfe, // jmp $
        0, 0, // pad to 16
    ];
    code.extend(u64s(&[42])); // Exit { code: 42, kind: Exit }
    let (report, _) = boot(&code);
    assert_eq!(report.outcome, Outcome::Exited(42));
    assert_eq!(report.exits.hypercalls[1], 1);
    assert_eq!(report.exits.total(), 1, "one exit for the whole run");
}

#[test]
fn console_write_prints_guest_text() {
    let text = b"hi from a tiny guest\n";
    let mut code = vec![
        0x66, 0xba, 0x00, 0x05, // mov dx, 0x500 (ConsoleWrite)
        0x48, 0x8d, 0x05, 21, 0, 0, 0,    // lea rax, [rip + 21]  (request at +32)
        0xef, // out dx, eax
        0x66, 0xba, 0x01, 0x05, // mov dx, 0x501 (Exit)
        0x48, 0x8d, 0x05, 41, 0, 0, 0,    // lea rax, [rip + 41]  (request at +64)
        0xef, // out dx, eax
        0xeb, 0xfe, // jmp $
    ];
    code.resize(32, 0);
    // ConsoleWrite { stream: Stdout, buf: text at +72, len, result }
    code.extend(u64s(&[1, ENTRY + 72, text.len() as u64, 0]));
    code.extend(u64s(&[7])); // Exit { code: 7 }
    code.extend_from_slice(text);
    let (report, stdout) = boot(&code);
    assert_eq!(report.outcome, Outcome::Exited(7));
    assert_eq!(stdout, text);
}

#[test]
fn wild_request_addresses_are_counted_and_ignored() {
    let mut code = vec![
        0x66, 0xba, 0x01, 0x05, // mov dx, 0x501 (Exit)
        0xb8, 0xf8, 0xff, 0xff, 0xff, // mov eax, 0xfffffff8  (outside RAM)
        0xef, // out dx, eax
        0xb8, 0x04, 0x10, 0x00, 0x00, // mov eax, 0x1004  (misaligned)
        0xef, // out dx, eax
        0x48, 0x8d, 0x05, 9, 0, 0, 0,    // lea rax, [rip + 9]  (request at +32)
        0xef, // out dx, eax
        0xeb, 0xfe, // jmp $
    ];
    code.resize(32, 0);
    code.extend(u64s(&[3]));
    let (report, _) = boot(&code);
    assert_eq!(report.outcome, Outcome::Exited(3));
    assert_eq!(report.exits.bad_hypercalls, 2);
}

#[test]
fn ports_outside_the_hypercall_range_are_denied_at_cpl3() {
    // The TSS I/O bitmap allows only the hypercall ports: `out` to port
    // 0x80 raises #GP, which with an empty IDT ends in a triple fault. The
    // VMM never sees the write.
    let code = [
        0x66, 0xba, 0x80, 0x00, // mov dx, 0x80
        0xee, // out dx, al
        0xeb, 0xfe, // jmp $
    ];
    let (report, _) = boot(&code);
    assert!(
        matches!(report.outcome, Outcome::TripleFault(_)),
        "{:?}",
        report.outcome
    );
    assert_eq!(report.exits.other_io, 0);
    assert!(Port::from_port(0x80).is_none());
}

#[test]
fn the_guest_starts_at_cpl3() {
    // A fault with no handler: the VMM reports where it happened.
    let code = [0x0f, 0x0b]; // ud2
    let (report, _) = boot(&code);
    let Outcome::TripleFault(state) = report.outcome else {
        panic!("expected a triple fault, got {:?}", report.outcome);
    };
    assert_eq!(report.outcome.exit_code(), 126);
    assert!(report.outcome.failure_message().unwrap().contains("triple"));
    let _ = state;
}
