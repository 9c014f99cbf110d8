//! A stopped vCPU's registers as GDB's description has them
//! ([`GdbRegisters`]: `gdbstub_arch`'s `X86_64CoreRegs`, the segment bases,
//! the AVX upper halves), from KVM's register sets or from an exception
//! stub's [`TrapFrame`], and back.
//!
//! GDB's order of the general registers is rax, rbx, rcx, rdx, rsi, rdi,
//! rbp, rsp, r8..r15 (gdb/features/i386/64bit-core.xml). KVM keeps the
//! x87 tag word abridged, one bit per register as `fxsave` does (SDM vol.
//! 1, 10.5.1.1); GDB wants the full word, two bits per register, so a
//! register is shown "valid" (00) or "empty" (11).

use eremite_interface::trap::TrapFrame;
use gdbstub_arch::x86::reg::X86_64CoreRegs;
use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs, kvm_xsave};

use super::gdb::GdbRegisters;

/// RFLAGS.TF: trap after the next instruction (SDM vol. 1, 3.4.3.3).
pub(crate) const RFLAGS_TF: u64 = 1 << 8;

/// The XSAVE area's header: which state components hold values
/// (`XSTATE_BV`, SDM vol. 1, 13.4.2).
const XSTATE_BV_OFFSET: usize = 512;
/// State component 2, the upper halves of the YMM registers, in the
/// standard (non-compacted) format KVM_GET_XSAVE returns (SDM vol. 1,
/// 13.5.3: offset 576).
const YMM_HI128_OFFSET: usize = 576;
const XSTATE_AVX: u64 = 1 << 2;

/// Everything GDB sees of a vCPU stopped in KVM (interrupted in the
/// guest).
pub(crate) fn gdb_from_kvm(
    regs: &kvm_regs,
    sregs: &kvm_sregs,
    fpu: &kvm_fpu,
    xsave: &kvm_xsave,
) -> GdbRegisters {
    with_extended(from_kvm(regs, sregs, fpu), sregs, xsave)
}

/// Everything GDB sees of a vCPU stopped in an exception stub.
pub(crate) fn gdb_from_frame(
    frame: &TrapFrame,
    sregs: &kvm_sregs,
    fpu: &kvm_fpu,
    xsave: &kvm_xsave,
) -> GdbRegisters {
    with_extended(from_frame(frame, sregs, fpu), sregs, xsave)
}

/// `core` with the segment bases and the AVX upper halves.
fn with_extended(core: X86_64CoreRegs, sregs: &kvm_sregs, xsave: &kvm_xsave) -> GdbRegisters {
    let bytes: Vec<u8> = xsave.region.iter().flat_map(|w| w.to_le_bytes()).collect();
    let mut ymmh = [0u128; 16];
    let xstate_bv = bytes
        .get(XSTATE_BV_OFFSET..XSTATE_BV_OFFSET + 8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
    // A component not in XSTATE_BV is in its initial state: zeros.
    if xstate_bv & XSTATE_AVX != 0
        && let Some(halves) = bytes.get(YMM_HI128_OFFSET..YMM_HI128_OFFSET + 256)
    {
        for (y, half) in ymmh.iter_mut().zip(halves.as_chunks::<16>().0) {
            *y = u128::from_le_bytes(*half);
        }
    }
    GdbRegisters {
        core,
        fs_base: sregs.fs.base,
        gs_base: sregs.gs.base,
        ymmh,
    }
}

/// The registers of a vCPU stopped in KVM (interrupted in the guest).
pub(crate) fn from_kvm(regs: &kvm_regs, sregs: &kvm_sregs, fpu: &kvm_fpu) -> X86_64CoreRegs {
    let mut core = X86_64CoreRegs {
        regs: [
            regs.rax, regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi, regs.rbp, regs.rsp,
            regs.r8, regs.r9, regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15,
        ],
        eflags: low32(regs.rflags),
        rip: regs.rip,
        ..X86_64CoreRegs::default()
    };
    segments_from(&mut core, sregs);
    fpu_from(&mut core, fpu);
    core
}

/// The registers saved in `frame` by an exception stub; what the stub
/// does not touch (segments but CS and SS, x87, SSE) from KVM.
pub(crate) fn from_frame(frame: &TrapFrame, sregs: &kvm_sregs, fpu: &kvm_fpu) -> X86_64CoreRegs {
    let f = frame;
    let mut core = X86_64CoreRegs {
        regs: [
            f.rax, f.rbx, f.rcx, f.rdx, f.rsi, f.rdi, f.rbp, f.rsp, f.r8, f.r9, f.r10, f.r11,
            f.r12, f.r13, f.r14, f.r15,
        ],
        eflags: low32(f.rflags),
        rip: f.rip,
        ..X86_64CoreRegs::default()
    };
    segments_from(&mut core, sregs);
    core.segments.cs = low32(f.cs);
    core.segments.ss = low32(f.ss);
    fpu_from(&mut core, fpu);
    core
}

/// Write `core`'s general registers, RIP and RFLAGS into `regs`; segment
/// selectors are not changed (a debugger that edits them gets no effect).
pub(crate) fn to_kvm(core: &X86_64CoreRegs, regs: &mut kvm_regs) {
    let r = &core.regs;
    [
        regs.rax, regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi, regs.rbp, regs.rsp, regs.r8,
        regs.r9, regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15,
    ] = *r;
    regs.rip = core.rip;
    regs.rflags = merge_flags(regs.rflags, core.eflags);
}

/// As [`to_kvm`], into an exception stub's frame.
pub(crate) fn to_frame(core: &X86_64CoreRegs, frame: &mut TrapFrame) {
    let f = frame;
    [
        f.rax, f.rbx, f.rcx, f.rdx, f.rsi, f.rdi, f.rbp, f.rsp, f.r8, f.r9, f.r10, f.r11, f.r12,
        f.r13, f.r14, f.r15,
    ] = core.regs;
    f.rip = core.rip;
    f.rflags = merge_flags(f.rflags, core.eflags);
}

/// `core`'s x87 and SSE state into `fpu`.
pub(crate) fn to_fpu(core: &X86_64CoreRegs, fpu: &mut kvm_fpu) {
    for (slot, st) in fpu.fpr.iter_mut().zip(&core.st) {
        slot[..10].copy_from_slice(st);
    }
    fpu.fcw = low16(core.fpu.fctrl);
    fpu.fsw = low16(core.fpu.fstat);
    fpu.ftwx = (0..8).fold(0u8, |bits, i| {
        let empty = (core.fpu.ftag >> (2 * i)) & 3 == 3;
        if empty { bits } else { bits | 1 << i }
    });
    fpu.last_opcode = low16(core.fpu.fop);
    fpu.last_ip = u64::from(core.fpu.fioff) | u64::from(core.fpu.fiseg) << 32;
    fpu.last_dp = u64::from(core.fpu.fooff) | u64::from(core.fpu.foseg) << 32;
    for (slot, xmm) in fpu.xmm.iter_mut().zip(&core.xmm) {
        *slot = xmm.to_le_bytes();
    }
    fpu.mxcsr = core.mxcsr;
}

fn segments_from(core: &mut X86_64CoreRegs, sregs: &kvm_sregs) {
    let s = &mut core.segments;
    s.cs = u32::from(sregs.cs.selector);
    s.ss = u32::from(sregs.ss.selector);
    s.ds = u32::from(sregs.ds.selector);
    s.es = u32::from(sregs.es.selector);
    s.fs = u32::from(sregs.fs.selector);
    s.gs = u32::from(sregs.gs.selector);
}

fn fpu_from(core: &mut X86_64CoreRegs, fpu: &kvm_fpu) {
    for (st, slot) in core.st.iter_mut().zip(&fpu.fpr) {
        st.copy_from_slice(&slot[..10]);
    }
    core.fpu.fctrl = u32::from(fpu.fcw);
    core.fpu.fstat = u32::from(fpu.fsw);
    core.fpu.ftag = (0..8).fold(0u32, |tag, i| {
        let is_valid = fpu.ftwx & (1 << i) != 0;
        if is_valid { tag } else { tag | 3 << (2 * i) }
    });
    core.fpu.fop = u32::from(fpu.last_opcode);
    core.fpu.fioff = low32(fpu.last_ip);
    core.fpu.fiseg = low32(fpu.last_ip >> 32);
    core.fpu.fooff = low32(fpu.last_dp);
    core.fpu.foseg = low32(fpu.last_dp >> 32);
    for (xmm, slot) in core.xmm.iter_mut().zip(&fpu.xmm) {
        *xmm = u128::from_le_bytes(*slot);
    }
    core.mxcsr = fpu.mxcsr;
}

/// RFLAGS with its low 32 bits from GDB's `eflags` (the upper half is
/// reserved and kept).
fn merge_flags(rflags: u64, eflags: u32) -> u64 {
    (rflags & !0xffff_ffff) | u64::from(eflags)
}

#[allow(clippy::cast_possible_truncation)]
fn low32(value: u64) -> u32 {
    value as u32
}

#[allow(clippy::cast_possible_truncation)]
fn low16(value: u32) -> u16 {
    value as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_goes_to_gdb_and_back_unchanged() {
        let frame = TrapFrame {
            rax: 1,
            rbx: 2,
            rcx: 3,
            rdx: 4,
            rsi: 5,
            rdi: 6,
            rbp: 7,
            rsp: 8,
            r8: 9,
            r15: 16,
            rip: 0x20_1000,
            rflags: 0x246,
            cs: 0x33,
            ss: 0x2b,
            ..TrapFrame::default()
        };
        let core = from_frame(&frame, &kvm_sregs::default(), &kvm_fpu::default());
        assert_eq!(core.regs[..9], [1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(core.regs[15], 16);
        assert_eq!(
            (core.rip, core.eflags, core.segments.cs),
            (0x20_1000, 0x246, 0x33)
        );
        let mut back = TrapFrame {
            cs: frame.cs,
            ss: frame.ss,
            ..TrapFrame::default()
        };
        to_frame(&core, &mut back);
        assert_eq!(back, frame);
    }

    #[test]
    fn x87_tags_and_sse_survive_the_trip() {
        let mut fpu = kvm_fpu {
            fcw: 0x37f,
            ftwx: 0b1000_0001,
            mxcsr: 0x1f80,
            ..kvm_fpu::default()
        };
        fpu.xmm[3] = 0x0123_4567_89ab_cdef_u128.to_le_bytes();
        fpu.fpr[7][..10].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        let core = from_kvm(&kvm_regs::default(), &kvm_sregs::default(), &fpu);
        assert_eq!(core.fpu.ftag, 0b0011_1111_1111_1100);
        assert_eq!(core.xmm[3], 0x0123_4567_89ab_cdef);
        let mut back = kvm_fpu::default();
        to_fpu(&core, &mut back);
        assert_eq!(
            (back.fcw, back.ftwx, back.mxcsr),
            (0x37f, 0b1000_0001, 0x1f80)
        );
        assert_eq!(back.xmm, fpu.xmm);
        assert_eq!(back.fpr[7], fpu.fpr[7]);
    }
}
