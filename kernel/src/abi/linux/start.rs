//! Starting the program: its first stack as Linux builds it (System V
//! ABI for x86_64, 3.4.1: `argc`, `argv`, `envp`, the auxiliary vector,
//! the strings above them), and the jump to its entry point.

use alloc::vec::Vec;

use eremite_interface::BootInfo;
use eremite_interface::layout::PAGE_SIZE;

use super::{mem, ptr, sites, user};
use crate::arch::{self, SyscallFrame};
use crate::{bootinfo, mm, random, sched};

// Auxiliary vector keys (`include/uapi/linux/auxvec.h`).
const AT_NULL: u64 = 0;
const AT_PHDR: u64 = 3;
const AT_PHENT: u64 = 4;
const AT_PHNUM: u64 = 5;
const AT_PAGESZ: u64 = 6;
const AT_BASE: u64 = 7;
const AT_FLAGS: u64 = 8;
const AT_ENTRY: u64 = 9;
const AT_UID: u64 = 11;
const AT_EUID: u64 = 12;
const AT_GID: u64 = 13;
const AT_EGID: u64 = 14;
const AT_PLATFORM: u64 = 15;
const AT_HWCAP: u64 = 16;
const AT_CLKTCK: u64 = 17;
const AT_SECURE: u64 = 23;
const AT_RANDOM: u64 = 25;
const AT_HWCAP2: u64 = 26;
const AT_EXECFN: u64 = 31;
const AT_MINSIGSTKSZ: u64 = 51;

/// Largest main stack; smaller guests get an eighth of their RAM, as the
/// hermit main thread does.
const STACK_MAX_BYTES: u64 = 8 << 20;

/// Bytes being laid out downwards from the top of the stack.
struct Layout {
    top: u64,
    bytes: Vec<u8>,
}

impl Layout {
    /// Put `data` below what is there; its address.
    fn push(&mut self, data: &[u8]) -> u64 {
        let mut block = data.to_vec();
        block.extend_from_slice(&self.bytes);
        self.bytes = block;
        self.top - self.bytes.len() as u64
    }

    /// A NUL-terminated copy of `text`; its address.
    fn push_c_string(&mut self, text: &[u8]) -> u64 {
        let mut data = text.to_vec();
        data.push(0);
        self.push(&data)
    }
}

/// The program cannot start: say why and stop the VM.
fn fail(why: &str) -> ! {
    use core::fmt::Write as _;
    let _ = writeln!(
        crate::console::DirectWriter::new(eremite_interface::hypercall::Stream::Stderr),
        "eremite kernel: cannot start the program: {why}"
    );
    crate::hypervisor::exit(eremite_interface::hypercall::ExitKind::KernelPanic, 0)
}

/// Add the code `[start, end)` the VMM rewrote, with its bitmap of sites.
fn add_sites(start: u64, end: u64, bitmap: u64) {
    let len = end.saturating_sub(start).div_ceil(8);
    let bitmap = user::slice(ptr(bitmap), super::size(len)).unwrap_or(&[]);
    if !bitmap.is_empty() {
        sites::add(start, end, bitmap);
    }
}

/// ELF program header fields (`Elf64_Phdr`).
const PT_LOAD: u32 = 1;
const PHDR_LEN: usize = 56;
const PF_X: u32 = 1;
const PF_W: u32 = 2;
const PF_R: u32 = 4;

/// Record the `PT_LOAD` segments of the program headers at `phdr`
/// (`phnum` of them, addresses `bias` from the file's) as the program's
/// memory, so it may `mprotect` them.
fn add_segments(phdr: u64, phnum: u64, bias: u64) {
    let Ok(headers) = user::slice(ptr::<u8>(phdr), super::size(phnum).saturating_mul(PHDR_LEN))
    else {
        return;
    };
    for header in headers.as_chunks::<PHDR_LEN>().0 {
        let word = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap_or([0; 8]));
        let kind = u32::from_le_bytes(header[0..4].try_into().unwrap_or([0; 4]));
        let flags = u32::from_le_bytes(header[4..8].try_into().unwrap_or([0; 4]));
        if kind != PT_LOAD {
            continue;
        }
        let (vaddr, memsz) = (word(16), word(40));
        let start = vaddr.wrapping_add(bias);
        let bits = [(PF_R, 1), (PF_W, 2), (PF_X, 4)]
            .iter()
            .filter(|(flag, _)| flags & flag != 0)
            .fold(0, |bits, (_, prot)| bits | prot);
        let Ok(prot) = mm::Prot::from_bits(bits) else {
            continue;
        };
        let _ = mm::add_program_segment(start, start.saturating_add(memsz), prot);
    }
}

/// Record the interpreter's segments: its ELF header is at `base`.
fn add_interpreter_segments(base: u64) {
    let Ok(header) = user::slice(ptr::<u8>(base), 64) else {
        return;
    };
    let phoff = u64::from_le_bytes(header[32..40].try_into().unwrap_or([0; 8]));
    let phnum = u16::from_le_bytes(header[56..58].try_into().unwrap_or([0; 2]));
    add_segments(base.wrapping_add(phoff), u64::from(phnum), base);
}

/// The program's path as it was started (`argv[0]`, `AT_EXECFN`).
static EXE: spin::Once<Vec<u8>> = spin::Once::new();

/// What `/proc/self/exe` links to: the path the program was started by.
pub(super) fn exe_path() -> &'static [u8] {
    EXE.get().map_or(&[], Vec::as_slice)
}

/// Start the program the boot info describes, on this (the main) thread,
/// whose system calls run on the stack whose top is `syscall_stack`.
pub(crate) fn start(info: &BootInfo, syscall_stack: u64) -> ! {
    let program = info.linux;
    if program.has_trampoline != 0 {
        sites::enable();
    }
    add_sites(program.text_start, program.text_end, program.sites_bitmap);
    let is_dynamic = program.interp_base != 0;
    if is_dynamic {
        add_sites(
            program.interp_text_start,
            program.interp_text_end,
            program.interp_sites_bitmap,
        );
    }
    add_segments(program.phdr, program.phnum, program.bias);
    if is_dynamic {
        add_interpreter_segments(program.interp_base);
    }
    mem::set_break(program.end);
    // The kernel's image is not the program's memory: a pointer into it
    // is EFAULT, as a pointer into Linux's kernel is.
    user::set_kernel(info.image_start, program.start);
    arch::set_kernel_text(info.image_start, program.start);
    // The program's faults go to its signal handlers, if it has them.
    crate::fault::set_exception_hook(super::signal::on_exception);
    // Signals the host forwards go to its handlers too.
    crate::process::set_host_signal_handler(super::signal::from_host);
    crate::events::set_interrupt_check(super::signal::is_interrupted);
    // What programs expect to find: a world-writable /tmp, and /dev (its
    // files are served by the descriptor layer).
    for (dir, mode) in [(&b"/tmp"[..], 0o1777), (b"/dev", 0o755)] {
        let _ = crate::fs::mkdir(dir, mode);
    }
    crate::console::klog!(
        "linux: {} system-call sites rewritten, {} left on the trap path",
        program.sites_rewritten,
        program.sites_left
    );
    sched::become_linux_thread(syscall_stack);

    let stack_bytes = (mm::ram_bytes() / 8).clamp(64 << 10, STACK_MAX_BYTES) & !(PAGE_SIZE - 1);
    let Some(stack) = mm::Stack::new(super::size(stack_bytes), sched::MAIN_TID) else {
        fail("out of memory for the program's stack");
    };
    let top = stack.top();
    // The main thread's stack lives as long as the program.
    core::mem::forget(stack);

    let mut layout = Layout {
        top,
        bytes: Vec::new(),
    };
    let args: Vec<&[u8]> = bootinfo::strings(&info.args).collect();
    EXE.call_once(|| args.first().map_or_else(Vec::new, |a| a.to_vec()));
    let env: Vec<&[u8]> = bootinfo::strings(&info.env).collect();
    let execfn = layout.push_c_string(args.first().copied().unwrap_or(b""));
    let platform = layout.push_c_string(b"x86_64");
    let mut seed = [0u8; 16];
    random::fill(&mut seed);
    let random_bytes = layout.push(&seed);
    let env_ptrs: Vec<u64> = env.iter().rev().map(|e| layout.push_c_string(e)).collect();
    let arg_ptrs: Vec<u64> = args.iter().rev().map(|a| layout.push_c_string(a)).collect();
    // Align what follows to 16 bytes.
    let pad = (layout.top - layout.bytes.len() as u64) % 16;
    layout.push(&alloc::vec![0u8; super::size(pad)]);

    let auxv = [
        (AT_PHDR, program.phdr),
        (AT_PHENT, program.phent),
        (AT_PHNUM, program.phnum),
        (AT_PAGESZ, PAGE_SIZE),
        (AT_BASE, program.interp_base),
        (AT_FLAGS, 0),
        (AT_ENTRY, program.entry),
        (AT_UID, 0),
        (AT_EUID, 0),
        (AT_GID, 0),
        (AT_EGID, 0),
        (AT_PLATFORM, platform),
        (AT_HWCAP, arch::hwcap()),
        (AT_CLKTCK, 100),
        (AT_SECURE, 0),
        (AT_RANDOM, random_bytes),
        (AT_HWCAP2, 0),
        (AT_EXECFN, execfn),
        (AT_MINSIGSTKSZ, 2048),
        (AT_NULL, 0),
    ];
    let mut words: Vec<u64> = Vec::new();
    words.push(args.len() as u64);
    words.extend(arg_ptrs.iter().rev());
    words.push(0);
    words.extend(env_ptrs.iter().rev());
    words.push(0);
    for (key, value) in auxv {
        words.extend([key, value]);
    }
    if !words.len().is_multiple_of(2) {
        // `argc` must sit on a 16-byte boundary.
        words.push(0);
    }
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let sp = layout.push(&bytes);
    let Ok(out) = user::slice_mut(ptr(sp), layout.bytes.len()) else {
        fail("the program's stack is not writable");
    };
    out.copy_from_slice(&layout.bytes);

    let frame = SyscallFrame {
        rip: if is_dynamic {
            program.interp_entry
        } else {
            program.entry
        },
        rsp: sp,
        ..SyscallFrame::default()
    };
    sched::enter_program(&frame, 0)
}
