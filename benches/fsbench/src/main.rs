//! The `fs` group: file operations in cycles, and a Postmark-style
//! transaction benchmark in transactions per second.
//!
//! `fsbench --dir PATH [--quick]` works in PATH, which must not exist yet:
//! it creates the directory and removes everything in it, and the
//! directory itself, at the end. The harness runs it natively on tmpfs, in
//! eremite on the RAM file system (`--dir /bench`) and in eremite below a
//! host mount (`--dir /mnt/bench`). Only `std::fs` is used, so the same
//! source measures every file system.
//!
//! Rows, in cycles per operation:
//! - `fs_open_close`: open an existing file read-only and close it.
//! - `fs_stat`: `metadata` of an existing file by path.
//! - `fs_write_4k`: write 4 KiB at the current position of an open file;
//!   every 16th write first seeks back to 0, so the file stays at 64 KiB.
//! - `fs_read_4k`: seek to 0 and read 4 KiB from a 64 KiB file.
//! - `fs_create_unlink`: create an empty file, close it, remove it.
//!
//! And `postmark_tps` in transactions per second, after Postmark (J.
//! Katcher, "PostMark: A New File System Benchmark", NetApp TR3022, 1997),
//! written here from the published algorithm:
//! 1. Create a pool of [`Postmark::files`] files with sizes uniformly
//!    random in [`Postmark::min_bytes`, `Postmark::max_bytes`], spread over
//!    [`Postmark::subdirs`] subdirectories.
//! 2. Run the transactions; each is a create of a new file (random size
//!    and subdirectory) or a delete of a random file, 50/50, followed by a
//!    read of a whole random file or an append of 1 to
//!    [`Postmark::max_append_bytes`] bytes (uniform) to a random file,
//!    50/50. Appends have no size cap.
//! 3. Delete every file and subdirectory.
//!
//! Data moves in blocks of at most 4 KiB per `read`/`write` call (as
//! Postmark with a 4 KiB stdio buffer). Only phase 2 is timed, in rounds:
//! each round of [`Postmark::transactions_per_round`] transactions gives
//! one sample. The random choices come from a fixed-seed xorshift64*, so
//! every system runs the identical sequence of operations. Reads check
//! that a file holds exactly the bytes the pool says it does.

#[cfg(target_os = "hermit")]
use eremite as _;

use std::fs::{self, File, OpenOptions};
use std::hint::black_box;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use benchkit::{per_op, rdtsc, report, report_tsc};

/// The largest amount of data one `read` or `write` call moves.
const BLOCK_BYTES: usize = 4096;
/// `fs_write_4k` seeks back to the start after this many writes.
const WRITES_PER_REWIND: u32 = 16;
/// Size of the file `fs_read_4k` reads from.
const READ_FILE_BYTES: usize = 64 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(dir) = args
        .iter()
        .position(|a| a == "--dir")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
    else {
        eprintln!("usage: fsbench --dir PATH [--quick] (PATH must not exist yet)");
        std::process::exit(2);
    };
    let is_quick = benchkit::is_quick();
    let tsc_khz = report_tsc();
    fs::create_dir(&dir).unwrap_or_else(|e| fail(&format!("create {}", dir.display()), e));

    let (rounds, batch) = if is_quick { (20, 5) } else { (1000, 10) };
    micro_rows(&dir, rounds, batch);

    let config = if is_quick {
        Postmark {
            files: 50,
            rounds: 4,
            transactions_per_round: 50,
            ..Postmark::default()
        }
    } else {
        Postmark::default()
    };
    let mut tps = postmark(&dir, &config, tsc_khz);
    report("postmark_tps", "tx/s", &mut tps);

    fs::remove_dir(&dir).unwrap_or_else(|e| fail(&format!("remove {}", dir.display()), e));
}

/// Exit non-zero with what failed: a broken run never becomes a number.
fn fail(what: &str, error: std::io::Error) -> ! {
    eprintln!("fsbench: {what}: {error}");
    std::process::exit(1);
}

/// The five single-operation rows, on files directly in `dir`.
fn micro_rows(dir: &Path, rounds: usize, batch: usize) {
    let data = [0x5a_u8; BLOCK_BYTES];
    let path = dir.join("micro");
    let mut file = File::create(&path).unwrap_or_else(|e| fail("create micro", e));
    for _ in 0..READ_FILE_BYTES / BLOCK_BYTES {
        file.write_all(&data)
            .unwrap_or_else(|e| fail("fill micro", e));
    }
    drop(file);

    report(
        "fs_open_close",
        "cycles",
        &mut per_op(rounds, batch, || {
            drop(black_box(
                File::open(&path).unwrap_or_else(|e| fail("open", e)),
            ));
        }),
    );
    report(
        "fs_stat",
        "cycles",
        &mut per_op(rounds, batch, || {
            black_box(fs::metadata(&path).unwrap_or_else(|e| fail("stat", e)));
        }),
    );

    let written = dir.join("written");
    let mut file = File::create(&written).unwrap_or_else(|e| fail("create written", e));
    let mut writes = 0_u32;
    report(
        "fs_write_4k",
        "cycles",
        &mut per_op(rounds, batch, || {
            if writes.is_multiple_of(WRITES_PER_REWIND) {
                file.seek(SeekFrom::Start(0))
                    .unwrap_or_else(|e| fail("seek", e));
            }
            writes += 1;
            file.write_all(&data).unwrap_or_else(|e| fail("write", e));
        }),
    );
    drop(file);
    fs::remove_file(&written).unwrap_or_else(|e| fail("remove written", e));

    let mut file = File::open(&path).unwrap_or_else(|e| fail("open micro", e));
    let mut buf = [0_u8; BLOCK_BYTES];
    report(
        "fs_read_4k",
        "cycles",
        &mut per_op(rounds, batch, || {
            file.seek(SeekFrom::Start(0))
                .unwrap_or_else(|e| fail("seek", e));
            file.read_exact(black_box(&mut buf))
                .unwrap_or_else(|e| fail("read", e));
        }),
    );
    drop(file);
    fs::remove_file(&path).unwrap_or_else(|e| fail("remove micro", e));

    let created = dir.join("created");
    report(
        "fs_create_unlink",
        "cycles",
        &mut per_op(rounds, batch, || {
            drop(File::create(&created).unwrap_or_else(|e| fail("create", e)));
            fs::remove_file(&created).unwrap_or_else(|e| fail("unlink", e));
        }),
    );
}

/// Postmark's parameters.
struct Postmark {
    /// Files in the pool before the transactions.
    files: usize,
    /// Timed rounds; each gives one transactions-per-second sample.
    rounds: usize,
    transactions_per_round: usize,
    /// Sizes of created files, uniformly random in this range (inclusive).
    min_bytes: usize,
    max_bytes: usize,
    /// Files go into this many subdirectories of the working directory.
    subdirs: usize,
    /// An append adds 1 to this many bytes (uniform).
    max_append_bytes: usize,
}

impl Default for Postmark {
    fn default() -> Self {
        Self {
            files: 500,
            rounds: 10,
            transactions_per_round: 500,
            min_bytes: 512,
            max_bytes: 16 * 1024,
            subdirs: 10,
            max_append_bytes: 4096,
        }
    }
}

/// Run Postmark in `dir`; one transactions-per-second sample per round.
fn postmark(dir: &Path, config: &Postmark, tsc_khz: u64) -> Vec<f64> {
    let subdirs: Vec<PathBuf> = (0..config.subdirs)
        .map(|i| dir.join(format!("s{i}")))
        .collect();
    for subdir in &subdirs {
        fs::create_dir(subdir).unwrap_or_else(|e| fail("create a subdirectory", e));
    }
    let mut pool = Pool {
        config,
        subdirs: &subdirs,
        files: Vec::with_capacity(config.files * 2),
        next_name: 0,
        rng: XorShift64Star(0x9e37_79b9_7f4a_7c15),
        data: [0x5a; BLOCK_BYTES],
        buf: [0; BLOCK_BYTES],
    };
    for _ in 0..config.files {
        pool.create();
    }
    let tps = (0..config.rounds)
        .map(|_| {
            let start = rdtsc();
            for _ in 0..config.transactions_per_round {
                pool.transaction();
            }
            let seconds = (rdtsc() - start) as f64 / (tsc_khz as f64 * 1000.0);
            config.transactions_per_round as f64 / seconds
        })
        .collect();
    for (path, _) in pool.files.drain(..) {
        fs::remove_file(&path).unwrap_or_else(|e| fail("delete a pool file", e));
    }
    for subdir in &subdirs {
        fs::remove_dir(subdir).unwrap_or_else(|e| fail("remove a subdirectory", e));
    }
    tps
}

/// Postmark's file pool: every file the benchmark has and its size.
struct Pool<'a> {
    config: &'a Postmark,
    subdirs: &'a [PathBuf],
    files: Vec<(PathBuf, usize)>,
    next_name: u64,
    rng: XorShift64Star,
    data: [u8; BLOCK_BYTES],
    buf: [u8; BLOCK_BYTES],
}

impl Pool<'_> {
    fn transaction(&mut self) {
        if self.rng.below(2) == 0 {
            self.create();
        } else {
            self.delete();
        }
        if self.rng.below(2) == 0 {
            self.read();
        } else {
            self.append();
        }
    }

    /// A new file of random size in a random subdirectory.
    fn create(&mut self) {
        let subdir = &self.subdirs[self.rng.below(self.subdirs.len())];
        let path = subdir.join(format!("f{}", self.next_name));
        self.next_name += 1;
        let size = self
            .rng
            .between(self.config.min_bytes, self.config.max_bytes);
        let mut file = File::create_new(&path).unwrap_or_else(|e| fail("create", e));
        write_bytes(&mut file, &self.data, size);
        self.files.push((path, size));
    }

    fn delete(&mut self) {
        if self.files.is_empty() {
            return;
        }
        let (path, _) = self.files.swap_remove(self.rng.below(self.files.len()));
        fs::remove_file(&path).unwrap_or_else(|e| fail("delete", e));
    }

    /// Read a whole random file and check its length.
    fn read(&mut self) {
        if self.files.is_empty() {
            return;
        }
        let (path, size) = &self.files[self.rng.below(self.files.len())];
        let mut file = File::open(path).unwrap_or_else(|e| fail("open for reading", e));
        let mut total = 0;
        loop {
            match file.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) => fail("read", e),
            }
        }
        if total != *size {
            eprintln!(
                "fsbench: {} holds {total} bytes, expected {size}",
                path.display()
            );
            std::process::exit(1);
        }
    }

    /// Append a random amount of data to a random file.
    fn append(&mut self) {
        if self.files.is_empty() {
            return;
        }
        let i = self.rng.below(self.files.len());
        let amount = self.rng.between(1, self.config.max_append_bytes);
        let (path, size) = &mut self.files[i];
        let mut file = OpenOptions::new()
            .append(true)
            .open(path)
            .unwrap_or_else(|e| fail("open for appending", e));
        write_bytes(&mut file, &self.data, amount);
        *size += amount;
    }
}

/// Write `len` bytes in calls of at most [`BLOCK_BYTES`].
fn write_bytes(file: &mut File, data: &[u8; BLOCK_BYTES], len: usize) {
    let mut left = len;
    while left > 0 {
        let n = left.min(BLOCK_BYTES);
        file.write_all(&data[..n])
            .unwrap_or_else(|e| fail("write", e));
        left -= n;
    }
}

/// xorshift64* (S. Vigna, "An experimental exploration of Marsaglia's
/// xorshift generators, scrambled", ACM TOMS 42(4), 2016): small, fast,
/// and the same sequence on every system.
struct XorShift64Star(u64);

impl XorShift64Star {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (multiply-shift; `n` > 0).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }

    /// Uniform in `low..=high`.
    fn between(&mut self, low: usize, high: usize) -> usize {
        low + self.below(high - low + 1)
    }
}
