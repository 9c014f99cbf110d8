//! The boot info page and the boot data it points to: what the kernel
//! learns from the VMM at entry (see `docs/boot-protocol.md`).
//!
//! Arguments, environment, command line and mount paths are packed into
//! the boot data area as NUL-terminated strings, one [`StringList`] each.

use eremite_interface::layout::{BOOT_DATA_ADDR, BOOT_DATA_END, BOOT_INFO_ADDR};
use eremite_interface::{
    BootInfo, INTERFACE_VERSION, LinuxProgram, MAGIC, MAX_RAM_RANGES, MemRange, StringList,
    boot_flags,
};
use zerocopy::FromZeros;

use crate::loader::LoadedImage;
use crate::memory::{GuestRam, OutOfRange};

/// The strings do not fit or cannot be C strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootDataError {
    /// A string has an interior NUL byte.
    #[error("{0:?} contains a NUL byte")]
    Nul(String),
    /// Everything together is larger than the boot data area.
    #[error(
        "arguments, environment, command line and mount paths take {0} bytes, more than the {1} the guest has room for"
    )]
    TooLarge(u64, u64),
}

/// Everything the boot info records besides the image.
pub(crate) struct BootParams<'a> {
    pub(crate) args: &'a [String],
    pub(crate) env: &'a [String],
    /// Command-line tokens, one string each.
    pub(crate) cmdline: &'a [String],
    pub(crate) cpu_count: u32,
    pub(crate) tsc_khz: u64,
    pub(crate) boot_tsc: u64,
    pub(crate) boot_wall_ns: u64,
    pub(crate) is_verbose: bool,
    /// The device threads share the vCPUs' host CPUs
    /// ([`boot_flags::HALT_WHEN_IDLE`]).
    pub(crate) is_device_cpu_shared: bool,
    /// Where the initial ramdisk was copied (zero when there is none).
    pub(crate) initrd: crate::initrd::Placed,
    /// Guest paths of the mounts, in `HostFs::mount` index order.
    pub(crate) mounts: &'a [String],
    /// Bit `i` set: mount `i` is read-only.
    pub(crate) read_only_mounts: u64,
    /// End of the page tables the VMM built.
    pub(crate) page_tables_end: u64,
    /// The Linux program loaded beside the kernel, if any.
    pub(crate) linux: Option<LinuxProgram>,
}

/// The boot data bytes (to go at [`BOOT_DATA_ADDR`]) and the lists that
/// describe them.
pub(crate) fn pack_strings<const N: usize>(
    lists: [&[String]; N],
) -> Result<(Vec<u8>, [StringList; N]), BootDataError> {
    let mut data = Vec::new();
    let mut out = [StringList::default(); N];
    for (list, strings) in out.iter_mut().zip(lists) {
        let start = data.len() as u64;
        for s in strings {
            if s.as_bytes().contains(&0) {
                return Err(BootDataError::Nul(s.clone()));
            }
            data.extend_from_slice(s.as_bytes());
            data.push(0);
        }
        *list = StringList {
            addr: BOOT_DATA_ADDR + start,
            len: data.len() as u64 - start,
            count: strings.len() as u64,
        };
    }
    let room = BOOT_DATA_END - BOOT_DATA_ADDR;
    if data.len() as u64 > room {
        return Err(BootDataError::TooLarge(data.len() as u64, room));
    }
    Ok((data, out))
}

/// Write the boot data and the boot info page.
pub(crate) fn write(
    ram: &GuestRam,
    image: &LoadedImage,
    params: &BootParams<'_>,
) -> Result<(), BootError> {
    let (data, [args, env, cmdline, mounts]) =
        pack_strings([params.args, params.env, params.cmdline, params.mounts])?;
    ram.write(BOOT_DATA_ADDR, &data)?;
    let mut info = BootInfo::new_zeroed();
    info.magic = MAGIC;
    info.version = INTERFACE_VERSION;
    info.cpu_count = params.cpu_count;
    info.mem_size = ram.low_end();
    for (slot, range) in info.ram.iter_mut().zip(ram.layout().ranges()) {
        *slot = MemRange {
            addr: range.start,
            len: range.end - range.start,
        };
        info.ram_count += 1;
    }
    debug_assert!(ram.layout().ranges().count() <= MAX_RAM_RANGES);
    info.page_tables_end = params.page_tables_end;
    info.image_start = image.start;
    info.image_end = image.end;
    info.free_start = image.end;
    info.tls = image.tls;
    info.tsc_khz = params.tsc_khz;
    info.boot_wall_ns = params.boot_wall_ns;
    info.boot_tsc = params.boot_tsc;
    info.args = args;
    info.env = env;
    info.cmdline = cmdline;
    info.initrd_addr = params.initrd.addr;
    info.initrd_len = params.initrd.len;
    info.mounts = mounts;
    info.read_only_mounts = params.read_only_mounts;
    info.flags = if params.is_verbose {
        boot_flags::VERBOSE
    } else {
        0
    };
    if params.is_device_cpu_shared {
        info.flags |= boot_flags::HALT_WHEN_IDLE;
    }
    if let Some(program) = params.linux {
        info.linux = program;
        info.flags |= boot_flags::LINUX;
    }
    ram.write_obj(BOOT_INFO_ADDR, &info)?;
    Ok(())
}

/// Boot info could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Bad strings.
    #[error(transparent)]
    Data(#[from] BootDataError),
    /// Out of guest memory (cannot happen with the minimum memory size).
    #[error(transparent)]
    Memory(#[from] OutOfRange),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn strings_are_packed_nul_terminated_and_listed() {
        let args = strings(&["/img", "alpha", ""]);
        let env = strings(&["A=1"]);
        let (data, [a, e, c]) = pack_strings([&args, &env, &[]]).unwrap();
        assert_eq!(data, b"/img\0alpha\0\0A=1\0");
        assert_eq!((a.addr, a.len, a.count), (BOOT_DATA_ADDR, 12, 3));
        assert_eq!((e.addr, e.len, e.count), (BOOT_DATA_ADDR + 12, 4, 1));
        assert_eq!((c.len, c.count), (0, 0));
    }

    #[test]
    fn nul_bytes_and_oversized_data_are_refused() {
        let bad = strings(&["a\0b"]);
        assert!(matches!(
            pack_strings([&bad, &[], &[]]),
            Err(BootDataError::Nul(_))
        ));
        let huge = vec!["x".repeat(1 << 20)];
        assert!(matches!(
            pack_strings([&huge, &[], &[]]),
            Err(BootDataError::TooLarge(..))
        ));
    }

    #[test]
    fn mount_paths_and_read_only_bits_reach_the_boot_info() {
        let ram = GuestRam::new(eremite_interface::layout::MIN_MEMORY).unwrap();
        let image = LoadedImage {
            entry: 0,
            start: 0,
            end: 0,
            tls: Default::default(),
            pages: Vec::new(),
            page_zero: Default::default(),
        };
        let (args, mounts) = (strings(&["/img"]), strings(&["/data", "/etc/conf"]));
        let params = BootParams {
            args: &args,
            env: &[],
            cmdline: &[],
            cpu_count: 1,
            tsc_khz: 1,
            boot_tsc: 0,
            boot_wall_ns: 0,
            is_verbose: false,
            is_device_cpu_shared: false,
            initrd: Default::default(),
            mounts: &mounts,
            read_only_mounts: 0b10,
            page_tables_end: 0x8_5000,
            linux: None,
        };
        write(&ram, &image, &params).unwrap();
        let info: BootInfo = ram.read_obj(BOOT_INFO_ADDR).unwrap();
        assert_eq!(info.read_only_mounts, 0b10);
        assert_eq!((info.mounts.count, info.mounts.len), (2, 16));
        let mut bytes = vec![0; 16];
        ram.read(info.mounts.addr, &mut bytes).unwrap();
        assert_eq!(bytes, b"/data\0/etc/conf\0");
        assert_eq!(info.page_tables_end, 0x8_5000);
        assert_eq!(info.mem_size, 8 << 20);
        assert_eq!(info.ram_count, 1);
        assert_eq!(
            info.ram[0],
            MemRange {
                addr: 0,
                len: 8 << 20
            }
        );
    }

    #[test]
    fn ram_above_3_gib_is_a_second_range_and_mem_size_stays_below_the_hole() {
        let ram = GuestRam::new(5 << 30).unwrap();
        let image = LoadedImage {
            entry: 0,
            start: 0,
            end: 0,
            tls: Default::default(),
            pages: Vec::new(),
            page_zero: Default::default(),
        };
        let args = strings(&["/img"]);
        let params = BootParams {
            args: &args,
            env: &[],
            cmdline: &[],
            cpu_count: 1,
            tsc_khz: 1,
            boot_tsc: 0,
            boot_wall_ns: 0,
            is_verbose: false,
            is_device_cpu_shared: false,
            initrd: Default::default(),
            mounts: &[],
            read_only_mounts: 0,
            page_tables_end: 0x8_5000,
            linux: None,
        };
        write(&ram, &image, &params).unwrap();
        let info: BootInfo = ram.read_obj(BOOT_INFO_ADDR).unwrap();
        assert_eq!(info.mem_size, 3 << 30);
        assert_eq!(info.ram_count, 2);
        assert_eq!(
            info.ram[0],
            MemRange {
                addr: 0,
                len: 3 << 30
            }
        );
        assert_eq!(
            info.ram[1],
            MemRange {
                addr: 4 << 30,
                len: 2 << 30
            }
        );
        assert_eq!(info.ram[2], MemRange::default());
    }
}
