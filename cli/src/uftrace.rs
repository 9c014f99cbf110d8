//! `--trace`'s data in uftrace's format (file format 4, as Debian's
//! uftrace 0.13 reads it), so that `uftrace replay -d DIR`, `report`,
//! `graph` and `info` work on it: an `info` file (a 40-byte header, then
//! the executable's name, its exit status and the thread list),
//! `task.txt` (one session, one task per guest thread), the session's
//! map (`sid-….map`: the image as one mapping, and the `[stack]` line
//! uftrace takes the kernel's base from), the image's symbols (`NAME.sym`,
//! addresses relative to the mapping) and one `TID.dat` per thread of
//! 16-byte records (time in ns; type, magic 5, depth and address packed
//! in the second word).
//!
//! The number of `TID.dat` files is known only after the run, when the
//! confined VMM may create no file. So a child process, started before
//! the run, writes them: the CLI hands it the calls over a pipe, as text
//! lines ([`Writer::finish`]), and the child ([`write_dir`]) checks every
//! line and writes only the files above, in the directory it was given.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use eremite_vmm::FunctionTrace;

/// The hidden subcommand the child runs.
pub(crate) const SUBCOMMAND: &str = "write-uftrace";

/// The session id uftrace files are named by (any 16 characters).
const SESSION: &str = "eremite000000000";
/// Record times start here (ns), so that the session and tasks, at 0,
/// come before every record.
const T0_NS: u64 = 1_000_000_000;
/// uftrace's record magic (`RECORD_MAGIC_V4`).
const RECORD_MAGIC: u64 = 5;

/// The child that writes the files.
pub(crate) struct Writer {
    dir: PathBuf,
    child: Child,
}

impl Writer {
    /// Start the child for `dir` (made now, with its parents).
    pub(crate) fn spawn(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot write {}: {e}", dir.display()))?;
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find eremite's own executable: {e}"))?;
        let child = Command::new(exe)
            .arg(SUBCOMMAND)
            .arg(dir)
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the uftrace writer: {e}"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            child,
        })
    }

    /// Hand the child `trace` of `image` (which exited with
    /// `exit_status`) and wait for it to write.
    pub(crate) fn finish(
        mut self,
        trace: &FunctionTrace,
        image: &Path,
        exit_status: u8,
    ) -> Result<(), String> {
        let failed = |e: &dyn std::fmt::Display| {
            format!("cannot write uftrace data to {}: {e}", self.dir.display())
        };
        let stdin = self.child.stdin.take().expect("piped at spawn");
        let mut out = BufWriter::new(stdin);
        let mut text = format!("exe {}\nexit {exit_status}\n", image.display());
        for (start, name) in trace.starts.iter().zip(&trace.names) {
            let _ = writeln!(text, "fn {start:x} {name}");
        }
        out.write_all(text.as_bytes()).map_err(|e| failed(&e))?;
        for ((_, tid), edges) in crate::trace::nested(trace) {
            for edge in edges {
                writeln!(
                    out,
                    "ev {tid} {} {} {} {:x}",
                    u8::from(!edge.is_begin),
                    edge.call.depth,
                    edge.ns,
                    trace.starts[edge.call.name]
                )
                .map_err(|e| failed(&e))?;
            }
        }
        drop(out.into_inner().map_err(|e| failed(&e.into_error()))?);
        match self.child.wait() {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(failed(&status)),
            Err(e) => Err(failed(&e)),
        }
    }
}

/// One record of a thread: (time, is exit, depth, address).
type Record = (u64, bool, u16, u64);

/// The child's side: read the lines [`Writer::finish`] sends from `input`
/// and write uftrace's files into `dir`. A line that does not parse is an
/// error (nothing is trusted: the sender served a guest).
pub(crate) fn write_dir(dir: &Path, input: impl BufRead) -> Result<(), String> {
    let mut exe = String::from("/image");
    let mut exit_status = 0u8;
    let mut functions: BTreeMap<u64, String> = BTreeMap::new();
    let mut threads: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
    for (number, line) in input.lines().enumerate() {
        let line = line.map_err(|e| format!("cannot read the trace: {e}"))?;
        let bad = || format!("bad trace line {}: {line:.80}", number + 1);
        let (kind, rest) = line.split_once(' ').ok_or_else(bad)?;
        match kind {
            "exe" => exe = rest.to_string(),
            "exit" => exit_status = rest.parse().map_err(|_| bad())?,
            "fn" => {
                let (start, name) = rest.split_once(' ').ok_or_else(bad)?;
                let start = u64::from_str_radix(start, 16).map_err(|_| bad())?;
                functions.entry(start).or_insert_with(|| name.to_string());
            }
            "ev" => {
                let fields: Vec<&str> = rest.split(' ').collect();
                let [tid, is_exit, depth, ns, addr] = fields[..] else {
                    return Err(bad());
                };
                let record = (
                    ns.parse::<u64>().map_err(|_| bad())?,
                    is_exit == "1",
                    depth.parse::<u16>().map_err(|_| bad())?,
                    u64::from_str_radix(addr, 16).map_err(|_| bad())?,
                );
                threads
                    .entry(tid.parse().map_err(|_| bad())?)
                    .or_default()
                    .push(record);
            }
            _ => return Err(bad()),
        }
    }
    if threads.is_empty() {
        return Ok(());
    }
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes)
            .map_err(|e| format!("cannot write {}: {e}", dir.join(name).display()))
    };
    // The image as one mapping from its first function's page to past its
    // last; uftrace names the `.sym` file after the mapping's path.
    let base = functions.keys().next().map_or(0x20_0000, |a| a & !0xfff);
    let end = functions.keys().next_back().map_or(base, |a| a + 0x1000) & !0xfff;
    let exe_name: String = Path::new(&exe)
        .file_name()
        .map_or("image".into(), |n| n.to_string_lossy().into_owned())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let exe_path = format!("/eremite/{exe_name}");
    let mut symbols = String::new();
    for (start, name) in &functions {
        let _ = writeln!(symbols, "{:016x} T {name}", start - base);
    }
    let _ = writeln!(symbols, "{:016x} ? __sym_end", end - base);
    write(&format!("{exe_name}.sym"), symbols.as_bytes())?;
    write(
        &format!("sid-{SESSION}.map"),
        format!(
            "{base:012x}-{end:012x} r-xp 00000000 00:00 0 {exe_path}\n\
             7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]\n"
        )
        .as_bytes(),
    )?;
    let leader = threads.keys().next().copied().unwrap_or(1);
    let mut tasks =
        format!("SESS timestamp=0.000000000 pid={leader} sid={SESSION} exename=\"{exe_path}\"\n");
    for tid in threads.keys() {
        let _ = writeln!(tasks, "TASK timestamp=0.000000000 tid={tid} pid={leader}");
    }
    write("task.txt", tasks.as_bytes())?;
    for (tid, records) in &threads {
        let mut bytes = Vec::with_capacity(records.len() * 16);
        for &(ns, is_exit, depth, addr) in records {
            let word = u64::from(is_exit)
                | RECORD_MAGIC << 3
                | u64::from(depth.min(1023)) << 6
                | (addr & ((1 << 48) - 1)) << 16;
            bytes.extend_from_slice(&(T0_NS + ns).to_le_bytes());
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        write(&format!("{tid}.dat"), &bytes)?;
    }
    let tids: Vec<String> = threads.keys().map(u32::to_string).collect();
    write("info", &info(&exe_path, exit_status, &tids))
}

/// The `info` file: header, then the sections of `EXE_NAME`,
/// `EXIT_STATUS` and `TASKINFO`, in bit order.
fn info(exe: &str, exit_status: u8, tids: &[String]) -> Vec<u8> {
    const TASK_SESSION: u64 = 1 << 1;
    const EXE_NAME: u64 = 1 << 0;
    const EXIT_STATUS: u64 = 1 << 2;
    const TASKINFO: u64 = 1 << 7;
    let mut bytes = Vec::with_capacity(256);
    bytes.extend_from_slice(b"Ftrace!\0");
    bytes.extend_from_slice(&4u32.to_le_bytes()); // file format version
    bytes.extend_from_slice(&40u16.to_le_bytes()); // header size
    bytes.push(1); // little-endian
    bytes.push(2); // ELFCLASS64
    bytes.extend_from_slice(&TASK_SESSION.to_le_bytes());
    bytes.extend_from_slice(&(EXE_NAME | EXIT_STATUS | TASKINFO).to_le_bytes());
    bytes.extend_from_slice(&[0; 8]); // max stack, unused
    bytes.extend_from_slice(
        format!(
            "exename:{exe}\nexit_status:{exit_status}\ntaskinfo:lines=2\ntaskinfo:nr_tid={}\ntaskinfo:tids={}\n",
            tids.len(),
            tids.join(",")
        )
        .as_bytes(),
    );
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_info_header_has_uftrace_layout() {
        let info = info("/eremite/app", 3, &["1".into(), "4".into()]);
        assert_eq!(&info[..8], b"Ftrace!\0");
        assert_eq!(info[14..16], [1, 2]);
        assert_eq!(u64::from_le_bytes(info[24..32].try_into().unwrap()), 0x85);
        let text = std::str::from_utf8(&info[40..]).unwrap();
        assert!(
            text.ends_with("taskinfo:nr_tid=2\ntaskinfo:tids=1,4\n"),
            "{text}"
        );
    }

    #[test]
    fn bad_lines_are_refused() {
        let dir = std::env::temp_dir().join(format!("eremite-uftrace-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for bad in ["ev 1 0 0 10", "fn zz main", "ev x 0 0 1 10", "rm -rf /"] {
            let error = write_dir(&dir, bad.as_bytes()).unwrap_err();
            assert!(error.starts_with("bad trace line 1: "), "{error}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
