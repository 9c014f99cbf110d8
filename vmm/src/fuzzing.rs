//! What the fuzz targets in `fuzz/` drive: the hypercall decoder and
//! handlers on arbitrary guest memory, as a hostile guest would, with a
//! real host directory mounted, the ELF loader on arbitrary image files,
//! and the snapshot state parser on arbitrary state files.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use eremite_interface::hypercall::{self, Port};

use crate::hypercall::{Console, Request, Services, decode, handle};
use crate::memory::GuestRam;
use crate::sandbox::{HostFs, Mount, MountSpec};

/// Guest RAM of the fuzzed VM.
const RAM_BYTES: u64 = 1 << 20;

/// Most hypercalls one input makes.
const MAX_CALLS: usize = 8;

/// Bytes that name one call: the port index and the 32-bit port value.
const CALL_BYTES: usize = 5;

/// The mounted directory is emptied and filled again after this many
/// inputs, so that what earlier inputs made does not pile up.
const RESET_EVERY: u64 = 4096;

/// What the mounted directory's neighbour `secret` holds; it must never
/// change.
const SECRET: &[u8] = b"outside the mount";

/// `outer/secret` beside `outer/mnt/`, the directory mounted as mount 0
/// (read-write) and mount 1 (read-only), in the system's temporary
/// directory for the life of the fuzzing process.
struct Fixture {
    outer: PathBuf,
    /// Inputs served since the process started.
    inputs: u64,
}

impl Fixture {
    fn get() -> &'static Mutex<Fixture> {
        static FIXTURE: OnceLock<Mutex<Fixture>> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let outer =
                std::env::temp_dir().join(format!("eremite-fuzz-mount-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&outer);
            std::fs::create_dir_all(&outer).expect("temporary directory for the fuzzed mount");
            std::fs::write(outer.join("secret"), SECRET).expect("the secret beside the mount");
            let fixture = Fixture { outer, inputs: 0 };
            fixture.fill();
            Mutex::new(fixture)
        })
    }

    fn mnt(&self) -> PathBuf {
        self.outer.join("mnt")
    }

    /// Make `mnt/` afresh: a file, a directory, a FIFO and links that stay
    /// inside or try to leave.
    fn fill(&self) {
        let mnt = self.mnt();
        // The guest may have made parts unwritable; root the fuzzer is
        // not, so put permissions back before removing.
        let _ = std::process::Command::new("chmod")
            .args(["-R", "u+rwx"])
            .arg(&mnt)
            .status();
        let _ = std::fs::remove_dir_all(&mnt);
        let made = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(mnt.join("dir"))?;
            std::fs::write(mnt.join("file"), b"hello, fuzzer\n")?;
            std::fs::write(mnt.join("dir/inner"), b"inner")?;
            std::os::unix::fs::symlink("file", mnt.join("link"))?;
            std::os::unix::fs::symlink("../secret", mnt.join("escape"))?;
            std::os::unix::fs::symlink("/etc/passwd", mnt.join("absolute"))?;
            Ok(())
        })();
        made.expect("the fuzzed mount's files");
        let _ = std::process::Command::new("mkfifo")
            .arg(mnt.join("fifo"))
            .status();
    }

    fn host_fs(&self) -> HostFs {
        let spec = |is_read_only| MountSpec {
            host_dir: self.mnt(),
            guest_path: "/data".into(),
            is_read_only,
        };
        let mounts = [false, true].map(|ro| Mount::open(&spec(ro)).expect("open the mount"));
        HostFs::new(mounts.into())
    }

    /// Panic if anything beside the mount changed.
    fn check_outside(&self) {
        assert_eq!(
            std::fs::read(self.outer.join("secret")).ok().as_deref(),
            Some(SECRET),
            "the file beside the mount changed"
        );
        let mut names: Vec<_> = std::fs::read_dir(&self.outer)
            .expect("list the directory around the mount")
            .map(|e| e.expect("an entry").file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["mnt", "secret"],
            "something was made beside the mount"
        );
    }
}

/// Serve up to [`MAX_CALLS`] hypercalls on one VM: `data` is a call count
/// byte, then per call a port index (modulo the number of ports) and a
/// little-endian 32-bit port value, then the first bytes of a 1 MiB guest
/// RAM. Host directory `mnt/` is mounted as mounts 0 and 1 (read-only)
/// and handles stay open from one call to the next, so a sequence can
/// open, read, write and list. Console output is dropped; no CPU can be
/// started. Panics only if the VMM's own checks let something through: a
/// decoded `Populate` outside RAM, or a change beside the mount.
pub fn hypercalls(data: &[u8]) {
    let _ = serve(data);
}

/// [`hypercalls`], returning each call's `result` as the guest would read
/// it (0 for a call that could not be decoded).
fn serve(data: &[u8]) -> Vec<i64> {
    let Some((&count, rest)) = data.split_first() else {
        return Vec::new();
    };
    let count = (usize::from(count) % MAX_CALLS + 1).min(rest.len() / CALL_BYTES);
    let (calls, memory) = rest.split_at(count * CALL_BYTES);
    let Ok(ram) = GuestRam::new(RAM_BYTES) else {
        return Vec::new();
    };
    let len = memory.len().min(RAM_BYTES as usize);
    if ram.write(0, &memory[..len]).is_err() {
        return Vec::new();
    }
    let mut fixture = Fixture::get().lock().unwrap_or_else(|e| e.into_inner());
    fixture.inputs += 1;
    if fixture.inputs.is_multiple_of(RESET_EVERY) {
        fixture.fill();
    }
    let mut console = Console::new(Box::new(std::io::sink()), Box::new(std::io::sink()), false);
    let services = Services::new(&mut console, fixture.host_fs());
    let mut results = Vec::with_capacity(count);
    for &[port, ref value @ ..] in calls.as_chunks::<CALL_BYTES>().0 {
        let port = Port::ALL[usize::from(port) % Port::ALL.len()];
        let Ok(decoded) = decode(port, value, &ram) else {
            results.push(0);
            continue;
        };
        if let Ok(Request::Populate { addr, len }) = decoded.request {
            assert!(ram.check(addr, len).is_ok() && len <= hypercall::Populate::MAX_LEN);
        }
        let result_at = decoded.addr + result_offset(port);
        let _ = handle(decoded, &ram, &services);
        results.push(ram.read_obj(result_at).unwrap_or(0));
        fixture.check_outside();
    }
    results
}

/// Where a port's request keeps the result the VMM writes back.
fn result_offset(port: Port) -> u64 {
    match port {
        Port::HostFs => hypercall::HostFs::RESULT_OFFSET,
        // The other requests' results are not looked at.
        _ => 0,
    }
}

/// Load `image` (any bytes) into a fresh 16 MiB guest RAM: it must load
/// or be refused with an error, never panic, and a loaded image must lie
/// inside RAM.
pub fn load_image(image: &[u8]) {
    let Ok(ram) = GuestRam::new(16 << 20) else {
        return;
    };
    if let Ok(loaded) = crate::loader::load(image, &ram) {
        assert!(
            loaded.start <= loaded.end
                && ram.check(loaded.start, loaded.end - loaded.start).is_ok()
        );
    }
}

/// Parse `bytes` as a snapshot's state file (an attacker may hand
/// `eremite restore` any): it is refused or accepted, never panics, and
/// what it accepts maps a memory file as long as it says.
pub fn snapshot_state(bytes: &[u8]) {
    // As given (the header's checks), and as the JSON of a state file
    // whose hash matches, as an attacker who hashes again would write it
    // (the checks behind the hash).
    check_state(bytes);
    check_state(&crate::snapshot::with_header(bytes));
}

fn check_state(bytes: &[u8]) {
    if let Ok(mut state) = crate::snapshot::State::parse(bytes) {
        let cpus = state.take_cpus();
        assert!(!cpus.is_empty());
        let layout = crate::memory::RamLayout::new(state.memory_bytes);
        assert_eq!(
            layout.ranges().map(|r| r.end).max(),
            Some(state.memory_file_bytes)
        );
    }
}

#[cfg(test)]
mod tests {
    use eremite_interface::errno;
    use eremite_interface::hypercall::{HostFs as Request, HostFsOp};
    use zerocopy::IntoBytes;

    use std::path::Path;

    use super::*;

    /// The checked-in seed inputs of the `hypercall_requests` target.
    fn seeds() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/hypercall_requests")
    }

    const PATH: u64 = 0x1000;
    const ESCAPE: u64 = 0x1100;
    const BUF: u64 = 0x2000;

    fn request(op: HostFsOp, handle: u64, path: u64, path_len: u64) -> Request {
        Request {
            op: op as u32,
            handle,
            path,
            path_len,
            buf: BUF,
            buf_len: 256,
            ..Request::default()
        }
    }

    /// Open `file`, read it, try to open `escape` (`../secret`): the seed
    /// checked in as `open-read-escape`.
    fn open_read_escape() -> Vec<u8> {
        let calls = [
            request(HostFsOp::Open, 0, PATH, 4),
            request(HostFsOp::Read, 1, 0, 0),
            request(HostFsOp::Open, 0, ESCAPE, 6),
        ];
        let mut memory = vec![0; BUF as usize + 256];
        let mut data = vec![(calls.len() - 1) as u8];
        for (i, call) in calls.iter().enumerate() {
            let at = i * size_of::<Request>();
            memory[at..at + size_of::<Request>()].copy_from_slice(call.as_bytes());
            let value = hypercall::encode_request_addr(at as u64).unwrap();
            let port = Port::ALL.iter().position(|p| *p == Port::HostFs).unwrap();
            data.push(port as u8);
            data.extend_from_slice(&value.to_le_bytes());
        }
        memory[PATH as usize..][..4].copy_from_slice(b"file");
        memory[ESCAPE as usize..][..6].copy_from_slice(b"escape");
        data.extend_from_slice(&memory);
        data
    }

    #[test]
    fn the_seed_opens_and_reads_a_file_in_the_mount_and_cannot_leave_it() {
        let path = seeds().join("open-read-escape");
        if std::env::var_os("EREMITE_WRITE_SEEDS").is_some() {
            std::fs::create_dir_all(seeds()).unwrap();
            std::fs::write(&path, open_read_escape()).unwrap();
        }
        let seed = std::fs::read(&path).unwrap();
        assert_eq!(
            seed,
            open_read_escape(),
            "the checked-in seed is stale: run this test with EREMITE_WRITE_SEEDS=1"
        );
        let results = serve(&seed);
        assert_eq!(results.len(), 3);
        assert_eq!(results[0], 1, "the first handle");
        assert_eq!(results[1], b"hello, fuzzer\n".len() as i64);
        assert_eq!(results[2], -i64::from(errno::EXDEV.0));
    }

    #[test]
    fn short_and_garbage_inputs_are_served_without_panic() {
        assert!(serve(&[]).is_empty());
        assert!(serve(&[7, 3]).is_empty(), "not one whole call");
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        hypercalls(&garbage);
    }
}
