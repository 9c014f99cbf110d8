//! What a dynamic program needs in the guest's file system, found on the
//! host as its loader would find it: the program itself, the shared
//! libraries of its `DT_NEEDED` closure, `/etc/ld.so.cache` and the few
//! files glibc reads at start when they exist. The VMM packs them into the
//! initial ramdisk (before what `--initrd` adds, which wins on a clash), so
//! `eremite run /usr/bin/X` needs nothing else.
//!
//! A library is looked for as glibc's `ld.so` looks for it (`ld.so(8)`):
//! a name with a slash is a path; otherwise the object's `DT_RPATH` (when
//! it has no `DT_RUNPATH`), its `DT_RUNPATH` (`$ORIGIN` is its directory),
//! then `/etc/ld.so.cache`, then the default directories. Each goes into
//! the guest under the path `ld.so` will open, with the contents of the
//! file it names on the host (symlinks followed).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};

use goblin::elf::Elf;

use super::program::ProgramError;
use crate::initrd::GuestFile;

/// glibc's cache of library paths, written by `ldconfig`.
const LD_SO_CACHE: &str = "/etc/ld.so.cache";

/// Directories `ld.so` searches after the cache (Debian's glibc, x86_64).
const DEFAULT_DIRS: [&str; 4] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib",
    "/usr/lib",
];

/// Files glibc reads at start or for common calls (user and host names,
/// the time zone), copied when the host has them.
const SYSTEM_FILES: [&str; 7] = [
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/localtime",
    LD_SO_CACHE,
];

/// The files the dynamic program at `path` (whose bytes are `program`)
/// needs: itself, every library of its closure, and the system files.
pub(crate) fn needed(path: &Path, program: &[u8]) -> Result<Vec<GuestFile>, ProgramError> {
    let cache = std::fs::read(LD_SO_CACHE)
        .map(|bytes| parse_cache(&bytes))
        .unwrap_or_default();
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut files = vec![GuestFile {
        guest: absolute.display().to_string(),
        host: absolute.clone(),
    }];
    let mut seen: HashSet<String> = HashSet::new();
    // Objects whose needs are still to read: their path and bytes.
    let mut queue: VecDeque<(PathBuf, Vec<u8>)> = VecDeque::new();
    queue.push_back((absolute, program.to_vec()));
    while let Some((object, bytes)) = queue.pop_front() {
        let elf = Elf::parse(&bytes)
            .map_err(|e| ProgramError::Malformed(format!("{}: {e}", object.display())))?;
        let origin = object.parent().unwrap_or(Path::new("/"));
        let search: Vec<PathBuf> = if elf.runpaths.is_empty() {
            elf.rpaths
                .iter()
                .flat_map(|p| split_path(p, origin))
                .collect()
        } else {
            elf.runpaths
                .iter()
                .flat_map(|p| split_path(p, origin))
                .collect()
        };
        for &name in &elf.libraries {
            if !seen.insert(name.to_owned()) {
                continue;
            }
            let found = find(name, &search, &cache).ok_or_else(|| ProgramError::Library {
                name: name.to_owned(),
                needed_by: object.display().to_string(),
            })?;
            let library = std::fs::read(&found).map_err(|source| ProgramError::Read {
                path: found.display().to_string(),
                source,
            })?;
            files.push(GuestFile {
                guest: found.display().to_string(),
                host: found.clone(),
            });
            queue.push_back((found, library));
        }
    }
    files.extend(
        SYSTEM_FILES
            .iter()
            .filter(|f| Path::new(f).is_file())
            .map(|f| GuestFile {
                guest: (*f).to_owned(),
                host: PathBuf::from(f),
            }),
    );
    Ok(files)
}

/// The directories of a `DT_RPATH` or `DT_RUNPATH` value (colon-separated,
/// `$ORIGIN` or `${ORIGIN}` standing for `origin`).
fn split_path(value: &str, origin: &Path) -> Vec<PathBuf> {
    let origin = origin.display().to_string();
    value
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d.replace("${ORIGIN}", &origin).replace("$ORIGIN", &origin)))
        .collect()
}

/// Where `ld.so` would find the library `name`.
fn find(name: &str, search: &[PathBuf], cache: &HashMap<String, String>) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    let in_dirs = |dirs: &mut dyn Iterator<Item = PathBuf>| {
        dirs.map(|dir| dir.join(name)).find(|p| p.is_file())
    };
    in_dirs(&mut search.iter().cloned())
        .or_else(|| cache.get(name).map(PathBuf::from).filter(|p| p.is_file()))
        .or_else(|| in_dirs(&mut DEFAULT_DIRS.iter().map(PathBuf::from)))
}

/// The x86_64 libraries `/etc/ld.so.cache` lists, by name: glibc's
/// format "glibc-ld.so.cache1.1" (a 48-byte header, entries of 24 bytes,
/// then strings; offsets count from the header). Entries for a CPU level
/// (`glibc-hwcaps`) lose to the plain one. An unknown format gives an
/// empty map: the default directories remain.
fn parse_cache(bytes: &[u8]) -> HashMap<String, String> {
    const MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
    const HEADER_LEN: usize = 48;
    const ENTRY_LEN: usize = 24;
    /// `FLAG_ELF_LIBC6 | FLAG_X8664_LIB64`.
    const X86_64_LIBC6: u32 = 0x0303;
    let mut map = HashMap::new();
    if !bytes.starts_with(MAGIC) {
        return map;
    }
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    let string_at = |at: u32| -> Option<String> {
        let tail = bytes.get(usize::try_from(at).ok()?..)?;
        let end = tail.iter().position(|&b| b == 0)?;
        String::from_utf8(tail[..end].to_vec()).ok()
    };
    let Some(count) = u32_at(20) else {
        return map;
    };
    let mut is_plain: HashMap<String, bool> = HashMap::new();
    for i in 0..count as usize {
        let at = HEADER_LEN + i * ENTRY_LEN;
        let (Some(flags), Some(key), Some(value), Some(hwcap)) =
            (u32_at(at), u32_at(at + 4), u32_at(at + 8), u64_at(at + 16))
        else {
            break;
        };
        if flags != X86_64_LIBC6 {
            continue;
        }
        let (Some(name), Some(path)) = (string_at(key), string_at(value)) else {
            continue;
        };
        let plain = hwcap == 0;
        if is_plain.get(&name).is_none_or(|&had| plain && !had) {
            is_plain.insert(name.clone(), plain);
            map.insert(name, path);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache of three entries: an i386 library, then an x86_64 one for
    /// a CPU level, then the plain one of the same name.
    fn cache() -> Vec<u8> {
        let strings = b"libc.so.6\0/lib32/libc.so.6\0/usr/lib/glibc-hwcaps/x86-64-v3/libc.so.6\0/lib/x86_64-linux-gnu/libc.so.6\0";
        let base = 48 + 3 * 24;
        let offset = |s: &[u8]| {
            let needle = strings.windows(s.len()).position(|w| w == s).unwrap();
            u32::try_from(base + needle).unwrap()
        };
        let mut bytes = b"glibc-ld.so.cache1.1".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(u32::try_from(strings.len()).unwrap().to_le_bytes());
        bytes.resize(48, 0);
        for (flags, value, hwcap) in [
            (0x0003u32, &b"/lib32/"[..], 0u64),
            (0x0303, b"/usr/lib/glibc-hwcaps", 1 << 62),
            (0x0303, b"/lib/x86_64-linux-gnu/libc", 0),
        ] {
            bytes.extend(flags.to_le_bytes());
            bytes.extend(offset(b"libc.so.6\0").to_le_bytes());
            bytes.extend(offset(value).to_le_bytes());
            bytes.extend(0u32.to_le_bytes());
            bytes.extend(hwcap.to_le_bytes());
        }
        bytes.extend_from_slice(strings);
        bytes
    }

    #[test]
    fn the_cache_gives_the_plain_x86_64_path() {
        let map = parse_cache(&cache());
        assert_eq!(
            map.get("libc.so.6").map(String::as_str),
            Some("/lib/x86_64-linux-gnu/libc.so.6")
        );
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn a_cache_cut_short_or_of_another_format_gives_what_it_can() {
        let whole = cache();
        for len in 0..whole.len() {
            let _ = parse_cache(&whole[..len]);
        }
        assert!(parse_cache(b"ld.so-1.7.0\0\0\0\0").is_empty());
    }

    #[test]
    fn origin_expands_in_search_paths() {
        let dirs = split_path("$ORIGIN/../lib:/opt/x:${ORIGIN}", Path::new("/app/bin"));
        assert_eq!(
            dirs,
            [
                PathBuf::from("/app/bin/../lib"),
                PathBuf::from("/opt/x"),
                PathBuf::from("/app/bin")
            ]
        );
    }

    #[test]
    fn a_host_program_closure_has_libc_and_the_cache() {
        let Ok(bytes) = std::fs::read("/bin/ls") else {
            return;
        };
        let Ok(elf) = Elf::parse(&bytes) else { return };
        if elf.interpreter.is_none() {
            return;
        }
        let files = needed(Path::new("/bin/ls"), &bytes).unwrap();
        assert_eq!(files[0].guest, "/bin/ls");
        assert!(files.iter().any(|f| f.guest.ends_with("/libc.so.6")));
        assert!(files.iter().any(|f| f.guest == LD_SO_CACHE) == Path::new(LD_SO_CACHE).is_file());
    }
}
