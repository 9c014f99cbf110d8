//! The registers eremite's GDB server (`crate::gdb`) describes: gdbstub_arch's x86-64
//! core and SSE registers, plus `fs_base`/`gs_base` (so GDB can find
//! thread-local variables) and the upper halves of the AVX registers
//! (`$ymm0`..`$ymm15`). GDB learns the layout from [`TARGET_XML`]: its
//! feature and register names are the ones GDB's amd64 support looks for
//! (the GDB manual, "i386 Features"); the `g` packet holds the registers
//! in `regnum` order.

use std::fmt::Write as _;
use std::sync::OnceLock;

use gdbstub::arch::Arch;
use gdbstub_arch::x86::reg::X86_64CoreRegs;
use gdbstub_arch::x86::reg::id::X86_64CoreRegId;

/// x86-64 with SSE, the segment bases and AVX.
pub(crate) enum Amd64 {}

impl Arch for Amd64 {
    type Usize = u64;
    type Registers = GdbRegisters;
    // Single-register access (`p`/`P`) is not offered; GDB reads them all.
    type RegId = X86_64CoreRegId;
    type BreakpointKind = usize;

    fn target_description_xml() -> Option<&'static str> {
        static XML: OnceLock<String> = OnceLock::new();
        Some(XML.get_or_init(target_xml))
    }
}

/// A thread's registers as GDB sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct GdbRegisters {
    pub(crate) core: X86_64CoreRegs,
    pub(crate) fs_base: u64,
    pub(crate) gs_base: u64,
    /// Bits 128..256 of `ymm0`..`ymm15`.
    pub(crate) ymmh: [u128; 16],
}

/// Bytes of gdbstub_arch's core and SSE registers in the `g` packet.
const CORE_BYTES: usize = 0x218;

impl gdbstub::arch::Registers for GdbRegisters {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        self.core.rip
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        self.core.gdb_serialize(&mut write_byte);
        let words = [self.fs_base, self.gs_base];
        for byte in words.iter().flat_map(|w| w.to_le_bytes()) {
            write_byte(Some(byte));
        }
        for byte in self.ymmh.iter().flat_map(|y| y.to_le_bytes()) {
            write_byte(Some(byte));
        }
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        let (core, rest) = bytes.split_at_checked(CORE_BYTES).ok_or(())?;
        self.core.gdb_deserialize(core)?;
        let (bases, rest) = rest.split_first_chunk::<16>().ok_or(())?;
        let (fs_base, gs_base) = bases.split_at(8);
        self.fs_base = u64::from_le_bytes(fs_base.try_into().map_err(|_| ())?);
        self.gs_base = u64::from_le_bytes(gs_base.try_into().map_err(|_| ())?);
        let (halves, _) = rest.as_chunks::<16>();
        if halves.len() < self.ymmh.len() {
            return Err(());
        }
        for (y, half) in self.ymmh.iter_mut().zip(halves) {
            *y = u128::from_le_bytes(*half);
        }
        Ok(())
    }
}

/// The target description: the registers in the order of
/// [`GdbRegisters::gdb_serialize`].
fn target_xml() -> String {
    let mut xml = String::from(
        r#"<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd"><target version="1.0"><architecture>i386:x86-64</architecture>"#,
    );
    let mut regnum = 0;
    let mut reg = |xml: &mut String, name: &str, bits: u32, kind: &str| {
        let _ = write!(
            xml,
            r#"<reg name="{name}" bitsize="{bits}" type="{kind}" regnum="{regnum}"/>"#
        );
        regnum += 1;
    };
    xml.push_str(r#"<feature name="org.gnu.gdb.i386.core">"#);
    xml.push_str(
        r#"<flags id="i386_eflags" size="4"><field name="CF" start="0" end="0"/><field name="PF" start="2" end="2"/><field name="AF" start="4" end="4"/><field name="ZF" start="6" end="6"/><field name="SF" start="7" end="7"/><field name="TF" start="8" end="8"/><field name="IF" start="9" end="9"/><field name="DF" start="10" end="10"/><field name="OF" start="11" end="11"/><field name="AC" start="18" end="18"/><field name="ID" start="21" end="21"/></flags>"#,
    );
    for name in [
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15",
    ] {
        let kind = match name {
            "rbp" | "rsp" => "data_ptr",
            _ => "int64",
        };
        reg(&mut xml, name, 64, kind);
    }
    reg(&mut xml, "rip", 64, "code_ptr");
    reg(&mut xml, "eflags", 32, "i386_eflags");
    for name in ["cs", "ss", "ds", "es", "fs", "gs"] {
        reg(&mut xml, name, 32, "int32");
    }
    for i in 0..8 {
        reg(&mut xml, &format!("st{i}"), 80, "i387_ext");
    }
    for name in [
        "fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop",
    ] {
        reg(&mut xml, name, 32, "int");
    }
    xml.push_str(r#"</feature><feature name="org.gnu.gdb.i386.sse">"#);
    xml.push_str(
        r#"<vector id="v4f" type="ieee_single" count="4"/><vector id="v2d" type="ieee_double" count="2"/><vector id="v16i8" type="int8" count="16"/><vector id="v8i16" type="int16" count="8"/><vector id="v4i32" type="int32" count="4"/><vector id="v2i64" type="int64" count="2"/><union id="vec128"><field name="v4_float" type="v4f"/><field name="v2_double" type="v2d"/><field name="v16_int8" type="v16i8"/><field name="v8_int16" type="v8i16"/><field name="v4_int32" type="v4i32"/><field name="v2_int64" type="v2i64"/><field name="uint128" type="uint128"/></union>"#,
    );
    for i in 0..16 {
        reg(&mut xml, &format!("xmm{i}"), 128, "vec128");
    }
    reg(&mut xml, "mxcsr", 32, "int");
    xml.push_str(r#"</feature><feature name="org.gnu.gdb.i386.segments">"#);
    reg(&mut xml, "fs_base", 64, "int");
    reg(&mut xml, "gs_base", 64, "int");
    xml.push_str(r#"</feature><feature name="org.gnu.gdb.i386.avx">"#);
    for i in 0..16 {
        reg(&mut xml, &format!("ymm{i}h"), 128, "uint128");
    }
    xml.push_str("</feature></target>");
    xml
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use gdbstub::arch::Registers as _;

    use super::*;

    #[test]
    fn registers_go_to_gdb_and_back_in_the_described_order() {
        let mut regs = GdbRegisters {
            fs_base: 0x7000_1000,
            gs_base: 0x9000,
            ..GdbRegisters::default()
        };
        regs.core.rip = 0x20_1000;
        regs.core.xmm[15] = 7;
        regs.ymmh[3] = u128::MAX - 1;
        let mut bytes = Vec::new();
        regs.gdb_serialize(|b| bytes.push(b.unwrap()));
        // Core and SSE, two bases, sixteen halves.
        assert_eq!(bytes.len(), CORE_BYTES + 16 + 256);
        let mut back = GdbRegisters::default();
        back.gdb_deserialize(&bytes).unwrap();
        assert_eq!(back, regs);
        assert!(back.gdb_deserialize(&bytes[..CORE_BYTES + 8]).is_err());
        // 57 core and SSE registers, then fs_base, gs_base, ymm0h..ymm15h.
        let xml = Amd64::target_description_xml().unwrap();
        assert!(
            xml.contains(r#"name="mxcsr" bitsize="32" type="int" regnum="56""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"name="fs_base" bitsize="64" type="int" regnum="57""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"name="ymm15h" bitsize="128" type="uint128" regnum="74""#),
            "{xml}"
        );
    }
}
