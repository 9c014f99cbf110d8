//! In-process VMM tests: a few bytes of 64-bit machine code, wrapped into
//! an image by [`TestImage`], booted in a real KVM VM through [`run`].
//! They need `/dev/kvm` and fail, saying so, where it is missing.
//!
//! The machine code is written out byte by byte with its assembly beside
//! it; request structs follow the code (the segment is read-only and
//! executable: only the VMM writes their results) and are found with
//! RIP-relative `lea`, then shifted right by three, as a hypercall's port
//! value is the request's address divided by 8.
//!
//! The network card tests make a tap inside a network namespace of their
//! own (root and iproute2's `ip`; they fail, never skip, without them).

use std::sync::atomic::{AtomicU32, Ordering};

use eremite_interface::hypercall::Port;
use eremite_interface::layout::{GDT_ADDR, HIGH_RAM_START, IDT_ADDR, IMAGE_BASE, LOW_RAM_END, gdt};

use crate::devices::testing::NetNs;
use crate::hypercall::Capture;
use crate::loader::test_image::TestImage;
use crate::{Console, Error, Outcome, Report, VmConfig, parse_net_spec, run};

/// Boot `code` (placed at the image's entry) and return the report and
/// what the guest wrote to stdout.
fn boot(code: &[u8]) -> (Report, Vec<u8>) {
    let (report, stdout) = boot_with(code, |_| {});
    let report = report.unwrap_or_else(|e| panic!("VM did not start: {e}"));
    (report, stdout)
}

/// Boot `code` with the configuration `configure` makes.
fn boot_with(
    code: &[u8],
    configure: impl FnOnce(&mut VmConfig),
) -> (Result<Report, Error>, Vec<u8>) {
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
    // The test process goes on after the run: no Landlock for it.
    config.is_confined = false;
    configure(&mut config);
    let report = run(&config, &mut console);
    std::fs::remove_file(&path).unwrap();
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
        0x48, 0x8d, 0x05, 13, 0, 0, 0, // lea rax, [rip + 13]  (the request at +24)
        0x48, 0xc1, 0xe8, 0x03, // shr rax, 3
        0xef, // out dx, eax
        0xeb, 0xfe, // jmp $
    ];
    code.resize(24, 0);
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
        0x48, 0x8d, 0x05, 29, 0, 0, 0, // lea rax, [rip + 29]  (request at +40)
        0x48, 0xc1, 0xe8, 0x03, // shr rax, 3
        0xef, // out dx, eax
        0x66, 0xba, 0x01, 0x05, // mov dx, 0x501 (Exit)
        0x48, 0x8d, 0x05, 45, 0, 0, 0, // lea rax, [rip + 45]  (request at +72)
        0x48, 0xc1, 0xe8, 0x03, // shr rax, 3
        0xef, // out dx, eax
        0xeb, 0xfe, // jmp $
    ];
    code.resize(40, 0);
    // ConsoleWrite { stream: Stdout, buf: text at +80, len, result }
    code.extend(u64s(&[1, ENTRY + 80, text.len() as u64, 0]));
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
        0xb8, 0xff, 0xff, 0xff, 0xff, // mov eax, 0xffffffff  (32 GiB - 8: outside RAM)
        0xef, // out dx, eax
        0xb8, 0x00, 0x00, 0x20, 0x00, // mov eax, 0x200000  (16 MiB: outside the 8 MiB)
        0xef, // out dx, eax
        0x48, 0x8d, 0x05, 9, 0, 0, 0, // lea rax, [rip + 9]  (request at +32)
        0x48, 0xc1, 0xe8, 0x03, // shr rax, 3
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

#[test]
fn the_image_code_is_not_writable() {
    // `mov byte [rip - 7], 0x90` writes to its own (read-only, executable)
    // page: a page fault, which with an empty IDT ends in a triple fault.
    // Reaching the Exit would mean the write went through.
    let mut code = Code(Vec::new());
    code.bytes(&[0xc6, 0x05, 0xf9, 0xff, 0xff, 0xff, 0x90])
        .exit(0x40)
        .at(0x40)
        .bytes(&u64s(&[5]));
    let (report, _) = boot(&code.0);
    assert!(
        matches!(report.outcome, Outcome::TripleFault(_)),
        "{:?}",
        report.outcome
    );
}

#[test]
fn cpl3_cannot_read_the_gdt() {
    // `mov rax, [GDT_ADDR]`: the GDT's page is CPL0-only.
    let mut code = Code(Vec::new());
    code.bytes(&[0x48, 0x8b, 0x04, 0x25])
        .bytes(&u32::try_from(GDT_ADDR).unwrap().to_le_bytes())
        .exit(0x40)
        .at(0x40)
        .bytes(&u64s(&[5]));
    let (report, _) = boot(&code.0);
    assert!(
        matches!(report.outcome, Outcome::TripleFault(_)),
        "{:?}",
        report.outcome
    );
}

#[test]
fn ram_above_4_gib_is_mapped_and_serves_hypercalls() {
    // Write an Exit request at the last 8 bytes of RAM (above 4 GiB), then
    // name it in the hypercall: `mov rax, top; mov qword [rax], 9;
    // shr rax, 3; mov dx, 0x501; out dx, eax; jmp $`.
    let memory = 4u64 << 30;
    let top = HIGH_RAM_START + memory - LOW_RAM_END - 8;
    let mut code = Code(Vec::new());
    code.bytes(&[0x48, 0xb8])
        .bytes(&top.to_le_bytes())
        .bytes(&[0x48, 0xc7, 0x00, 9, 0, 0, 0])
        .bytes(&[0x48, 0xc1, 0xe8, 0x03])
        .bytes(&[0x66, 0xba, 0x01, 0x05, 0xef, 0xeb, 0xfe]);
    let (report, _) = boot_with(&code.0, |config| config.memory_bytes = memory);
    let report = report.unwrap_or_else(|e| panic!("VM did not start: {e}"));
    assert_eq!(report.outcome, Outcome::Exited(9));
}

/// Machine code with labels resolved by hand: each piece is placed at a
/// known offset from the entry.
struct Code(Vec<u8>);

impl Code {
    fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// Pad with `int3` up to `offset`.
    fn at(&mut self, offset: usize) -> &mut Self {
        assert!(self.0.len() <= offset, "code overlaps {offset:#x}");
        self.0.resize(offset, 0xcc);
        self
    }

    /// The 32-bit displacement from the end of the instruction being
    /// written (`tail` bytes after the displacement) to `target`.
    fn rel32(&self, tail: usize, target: usize) -> [u8; 4] {
        let end = self.0.len() + 4 + tail;
        i32::try_from(target as i64 - end as i64)
            .unwrap()
            .to_le_bytes()
    }

    /// `jcc rel32` (`0f cc`), e.g. 0x85 for `jne`.
    fn jcc(&mut self, cc: u8, target: usize) -> &mut Self {
        self.bytes(&[0x0f, cc]);
        let rel = self.rel32(0, target);
        self.bytes(&rel)
    }

    /// `mov dx, 0x501; lea rax, [rip + request]; shr rax, 3; out dx, eax;
    /// jmp $`: the Exit hypercall with the request at `request`.
    fn exit(&mut self, request: usize) -> &mut Self {
        self.bytes(&[0x66, 0xba, 0x01, 0x05, 0x48, 0x8d, 0x05]);
        let rel = self.rel32(0, request);
        self.bytes(&rel)
            .bytes(&[0x48, 0xc1, 0xe8, 0x03, 0xef, 0xeb, 0xfe])
    }
}

/// A 64-bit interrupt gate (Intel SDM vol. 3A, 6.14.1) to `handler` in
/// the CPL0 code segment: present, DPL 0, no IST.
fn interrupt_gate(handler: u64) -> [u8; 16] {
    let mut gate = [0u8; 16];
    gate[0..2].copy_from_slice(&handler.to_le_bytes()[0..2]);
    gate[2..4].copy_from_slice(&gdt::KERNEL_CODE.to_le_bytes());
    gate[5] = 0x8e;
    gate[6..12].copy_from_slice(&handler.to_le_bytes()[2..8]);
    gate
}

/// A tap named `name` in a new network namespace.
fn namespace_with_tap(name: &str) -> NetNs {
    let ns = NetNs::new();
    ns.ip(&["tuntap", "add", "dev", name, "mode", "tap"]);
    ns
}

#[test]
fn a_net_card_answers_its_registers_and_its_interrupt_reaches_the_guest() {
    // The guest reads the card's magic, lets the local APIC accept
    // interrupts but holds those of priority class 2 in its IRR (TPR), then
    // sets DRIVER_OK without enabling a queue. The card refuses to start,
    // sets DEVICE_NEEDS_RESET and raises its configuration-change
    // interrupt: an eventfd write that KVM routes as an MSI with vector
    // 0x22 (irqfd). The guest waits for bit 0x22 in the IRR, installs a
    // CPL0 handler for the vector in the IDT and lowers the TPR: the
    // interrupt is delivered and the handler exits with 34. Other exit
    // codes: 1, the interrupt never reached the IRR; 2, the magic was
    // wrong; 3, the interrupt stayed in the IRR.
    const PENDING: usize = 0x100;
    const TIMEOUT: usize = 0x150;
    const BAD_MAGIC: usize = 0x170;
    const HANDLER: usize = 0x190;
    const REQUESTS: usize = 0x1b0;
    const GATE: usize = 0x1d0;
    const IDT_SLOT: u64 = IDT_ADDR + 0x22 * 16;
    let mut code = Code(Vec::new());
    code.bytes(&[0xbb, 0x00, 0x00, 0x00, 0xd0]) // mov ebx, 0xd0000000 (the card)
        .bytes(&[0xbe, 0x00, 0x00, 0xe0, 0xfe]) // mov esi, 0xfee00000 (local APIC)
        .bytes(&[0x8b, 0x03]) // mov eax, [rbx] (MagicValue)
        .bytes(&[0x3d, 0x76, 0x69, 0x72, 0x74]) // cmp eax, "virt"
        .jcc(0x85, BAD_MAGIC) // jne BAD_MAGIC
        .bytes(&[0xc7, 0x86, 0xf0, 0, 0, 0, 0xff, 0x01, 0, 0]) // mov dword [rsi + 0xf0], 0x1ff (SVR: enable)
        .bytes(&[0xc7, 0x86, 0x80, 0, 0, 0, 0x20, 0, 0, 0]) // mov dword [rsi + 0x80], 0x20 (TPR)
        .bytes(&[0xc7, 0x43, 0x70, 1, 0, 0, 0]) // mov dword [rbx + 0x70], 1 (Status: ACKNOWLEDGE)
        .bytes(&[0xc7, 0x43, 0x70, 3, 0, 0, 0]) // mov dword [rbx + 0x70], 3 (| DRIVER)
        .bytes(&[0xc7, 0x43, 0x24, 1, 0, 0, 0]) // mov dword [rbx + 0x24], 1 (DriverFeaturesSel)
        .bytes(&[0xc7, 0x43, 0x20, 1, 0, 0, 0]) // mov dword [rbx + 0x20], 1 (VERSION_1)
        .bytes(&[0xc7, 0x43, 0x70, 0xb, 0, 0, 0]) // mov dword [rbx + 0x70], 0xb (| FEATURES_OK)
        .bytes(&[0xc7, 0x43, 0x50, 0, 0, 0, 0]) // mov dword [rbx + 0x50], 0 (QueueNotify 0: ioeventfd, no exit)
        .bytes(&[0xc7, 0x43, 0x50, 5, 0, 0, 0]) // mov dword [rbx + 0x50], 5 (no such queue: exits)
        .bytes(&[0xc7, 0x43, 0x70, 0xf, 0, 0, 0]) // mov dword [rbx + 0x70], 0xf (| DRIVER_OK)
        .bytes(&[0xb9, 0x80, 0x84, 0x1e, 0x00]); // mov ecx, 2_000_000
    let poll = code.0.len();
    code.bytes(&[0x8b, 0x86, 0x10, 0x02, 0, 0]) // poll: mov eax, [rsi + 0x210] (IRR 32..63)
        .bytes(&[0xa8, 0x04]) // test al, 1 << (0x22 - 32)
        .jcc(0x85, PENDING) // jnz PENDING
        .bytes(&[0xff, 0xc9]) // dec ecx
        .jcc(0x85, poll) // jnz poll
        .bytes(&[0xe9]); // jmp TIMEOUT
    let rel = code.rel32(0, TIMEOUT);
    code.bytes(&rel).at(PENDING).bytes(&[0x48, 0x8b, 0x05]); // PENDING: mov rax, [rip + GATE]
    let rel = code.rel32(0, GATE);
    code.bytes(&rel)
        .bytes(&[0x48, 0x89, 0x04, 0x25]) // mov [IDT_SLOT], rax
        .bytes(&u32::try_from(IDT_SLOT).unwrap().to_le_bytes())
        .bytes(&[0x48, 0x8b, 0x05]); // mov rax, [rip + GATE + 8]
    let rel = code.rel32(0, GATE + 8);
    code.bytes(&rel)
        .bytes(&[0x48, 0x89, 0x04, 0x25]) // mov [IDT_SLOT + 8], rax
        .bytes(&u32::try_from(IDT_SLOT + 8).unwrap().to_le_bytes())
        .bytes(&[0xc7, 0x86, 0x80, 0, 0, 0, 0, 0, 0, 0]) // mov dword [rsi + 0x80], 0 (TPR: let it in)
        .bytes(&[0xb9, 0x10, 0x27, 0, 0]) // mov ecx, 10_000
        .bytes(&[0xff, 0xc9, 0x75, 0xfc]) // dec ecx; jnz (back to dec)
        .exit(REQUESTS + 24) // still here: exit 3
        .at(TIMEOUT)
        .exit(REQUESTS + 8)
        .at(BAD_MAGIC)
        .exit(REQUESTS + 16)
        .at(HANDLER) // at CPL0, on the RSP0 stack
        .exit(REQUESTS)
        .at(REQUESTS)
        .bytes(&u64s(&[34, 1, 2, 3])) // Exit { code, kind: Exit } × 4
        .at(GATE)
        .bytes(&interrupt_gate(ENTRY + HANDLER as u64));

    let ns = namespace_with_tap("etap0");
    let (report, _) = ns.enter(|| {
        boot_with(&code.0, |config| {
            config.net = Some(parse_net_spec("tap:etap0,mac=02:00:00:00:00:07").unwrap());
        })
    });
    let report = report.unwrap_or_else(|e| panic!("VM did not start: {e}"));
    assert_eq!(report.outcome, Outcome::Exited(34), "{report:#?}");
    // One read and seven writes exited; QueueNotify 0 did not.
    assert_eq!(report.exits.device_mmio, 8, "{report:#?}");
    assert_eq!(report.exits.mmio, 0, "the local APIC is served in KVM");
    let net = report.net.expect("a network card report");
    assert_eq!(net.link, "tap etap0");
    assert_eq!(net.mac.to_string(), "02:00:00:00:00:07");
    assert_eq!(net.interrupts, 1);
    assert_eq!(net.bad_register_accesses, 1, "QueueNotify 5");
    let failure = net.failure.expect("DEVICE_NEEDS_RESET");
    assert!(failure.contains("did not enable queue 0"), "{failure}");
}

#[test]
fn a_missing_tap_is_a_clear_error_before_the_guest_runs() {
    let ns = NetNs::new();
    let (report, _) = ns.enter(|| {
        boot_with(&[0xeb, 0xfe], |config| {
            config.net = Some(parse_net_spec("tap:etap-none").unwrap());
        })
    });
    let error = report.expect_err("no such tap");
    assert!(matches!(error, Error::Tap(_)), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("cannot open tap device etap-none: no such interface"),
        "{error}"
    );
}
