//! `./x bench [GROUP...] [--quick]`: benchmarks are programs, not tests.
//!
//! Every benchmark program in `benches/` is built twice from the same
//! source, for `x86_64-unknown-hermit` (booted with `eremite run`) and for
//! `x86_64-unknown-linux-gnu` (run natively); both run in the same
//! invocation, pinned to the same host core. The harness prints one table
//! (median, ratio, 99th percentile), writes `bench-results/<date>.json`
//! and one SVG chart per group. A program that exits non-zero or does not
//! print every expected row fails the whole run: a broken benchmark never
//! becomes a number.
//!
//! Groups: `syscalls`, `noise` and `fs` (programs in `benches/`, measured
//! in TSC cycles inside the program; `fs` also in transactions per second),
//! `boot` (wall time of `eremite run hello` against a native hello process,
//! from the outside; also `eremite run --hypervisor qemu-kvm` and
//! `qemu-tcg`, rows `hello_wall_time_qemu_kvm` and `_qemu_tcg`, against the
//! same native runs), `syscalls_qemu` (the `syscalls` program booted on
//! QEMU + KVM, rows with the suffix `_qemu`, against its own native run).
//! `fs` runs three times: natively on tmpfs, in eremite
//! on the RAM file system, and in eremite below a `--mount` of a tmpfs
//! directory; the rows of the last get the suffix `_mount` and are
//! compared with the same native numbers. `snapshot` times a cold boot
//! and a restore of the same program (`bench/snapshots.rs`). `servers` runs Debian's
//! redis, memcached and nginx in eremite and natively under their own
//! load tools (`bench/servers.rs`).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::{HERMIT_TARGET, Result, build_cli, build_image, cargo, root, run_command};

mod chart;
mod sandboxes;
mod servers;
mod snapshots;

const HOST_TARGET: &str = "x86_64-unknown-linux-gnu";
/// Both sides run pinned to this host core.
const BENCH_CORE: &str = "1";
const GROUPS: [&str; 11] = [
    "syscalls",
    "syscalls_qemu",
    "noise",
    "fs",
    "boot",
    "smp",
    "net",
    "linux",
    "servers",
    "scenarios",
    "snapshot",
];
/// Guest memory for the `fs` runs: room for Postmark's file pool.
const FS_MEMORY: &str = "256M";

/// One row of the table: one quantity measured on both systems.
pub(crate) struct Row {
    pub(crate) group: &'static str,
    pub(crate) name: String,
    pub(crate) unit: String,
    pub(crate) eremite: Stat,
    pub(crate) linux: Stat,
}

impl Row {
    /// A rate (a unit per second, such as `tx/s`) or a speed-up (`x`):
    /// higher is better.
    pub(crate) fn is_rate(&self) -> bool {
        self.unit.ends_with("/s") || self.unit == "x"
    }

    /// The bad tail of `stat`: the 99th percentile, or for a rate the
    /// slowest sample (its minimum).
    pub(crate) fn tail(&self, stat: &Stat) -> f64 {
        if self.is_rate() { stat.min } else { stat.p99 }
    }
}

/// A summary as a benchmark program prints it.
#[derive(Clone, Copy)]
pub(crate) struct Stat {
    pub(crate) median: f64,
    pub(crate) p99: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) n: u64,
}

impl Stat {
    fn of(samples: &[f64]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        Self {
            median: at(0.5),
            p99: at(0.99),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            n: sorted.len() as u64,
        }
    }
}

/// What a benchmark program printed: its rows, the TSC frequency, and any
/// histogram lines.
struct ProgramOutput {
    tsc_khz: u64,
    rows: Vec<(String, String, Stat)>,
    histogram: Vec<(u64, u64)>,
}

pub(crate) fn bench(args: &[String]) -> Result {
    let is_quick = args.iter().any(|a| a == "--quick");
    let mut groups: Vec<&str> = Vec::new();
    for arg in args.iter().filter(|a| *a != "--quick") {
        let Some(group) = GROUPS.iter().find(|g| **g == arg.as_str()) else {
            return Err(format!(
                "unknown benchmark group `{arg}` (groups: {})",
                GROUPS.join(", ")
            ));
        };
        groups.push(group);
    }
    if groups.is_empty() {
        groups = GROUPS.to_vec();
    }

    if groups.contains(&"net") || groups.contains(&"servers") {
        crate::install_host_tools()?;
    }
    let cli = build_cli()?;
    let needs_programs = groups
        .iter()
        .any(|g| !matches!(*g, "boot" | "smp" | "scenarios" | "snapshot"));
    if needs_programs {
        build_benches(&[])?;
        build_benches(&["--target", HOST_TARGET, "--config", "unstable.build-std=[]"])?;
    }
    let mut rows = Vec::new();
    let mut extra = Vec::new();
    let mut tsc_khz = 0;
    for group in &groups {
        match *group {
            "syscalls" => {
                let args: &[&str] = if is_quick { &["--quick"] } else { &[] };
                let (e, l) = run_both(&cli, "syscalls", args)?;
                tsc_khz = e.tsc_khz;
                rows.extend(pair("syscalls", &e, &l, &SYSCALL_ROWS, "")?);
            }
            "syscalls_qemu" => {
                // The same program on QEMU + KVM (PVH boot), against its own
                // native run in the same invocation.
                let args: &[&str] = if is_quick { &["--quick"] } else { &[] };
                let e = run_eremite(&cli, "syscalls", &["--hypervisor", "qemu-kvm"], args)?;
                let l = run_native("syscalls", args)?;
                rows.extend(pair("syscalls_qemu", &e, &l, &SYSCALL_ROWS, "_qemu")?);
            }
            "noise" => {
                let args: &[&str] = if is_quick {
                    &["--quick"]
                } else {
                    &["--seconds", "10"]
                };
                let (e, l) = run_both(&cli, "noise", args)?;
                tsc_khz = e.tsc_khz;
                rows.extend(pair("noise", &e, &l, &NOISE_ROWS, "")?);
                // Again with a second vCPU that idles (halted in the gate)
                // while the loop runs, against the same native run.
                let two = run_eremite(&cli, "noise", &["--cpus", "2"], args)?;
                rows.extend(pair("noise", &two, &l, &NOISE_ROWS, "_2cpus")?);
                extra.push(format!(
                    "\"hourglass_histogram\": {{ \"eremite\": {}, \"linux\": {} }}",
                    histogram_json(&e.histogram),
                    histogram_json(&l.histogram)
                ));
            }
            "fs" => {
                let (fs_rows, fs_extra, khz) = fs(&cli, is_quick)?;
                tsc_khz = khz;
                rows.extend(fs_rows);
                extra.push(fs_extra);
            }
            "boot" => {
                let (boot_rows, boot_extra) = boot(&cli, if is_quick { 5 } else { 30 })?;
                rows.extend(boot_rows);
                extra.extend(boot_extra);
            }
            "net" => rows.extend(net(is_quick)?),
            "servers" => {
                let (server_rows, server_extra) = servers::servers(is_quick)?;
                rows.extend(server_rows);
                extra.push(server_extra);
            }
            "linux" => {
                let (linux_rows, khz) = linux(&cli, is_quick)?;
                tsc_khz = khz;
                rows.extend(linux_rows);
            }
            "scenarios" => scenarios(&cli, is_quick)?,
            "snapshot" => {
                let (snapshot_rows, snapshot_extra) = snapshots::snapshots(&cli, is_quick)?;
                rows.extend(snapshot_rows);
                extra.extend(snapshot_extra);
            }
            "smp" => {
                rows.push(smp(&cli, if is_quick { 1 } else { 5 })?);
                rows.extend(cross_core_pingpong(&cli, is_quick)?);
            }
            _ => unreachable!("checked above"),
        }
    }

    print_table(&rows, tsc_khz);
    // Quick runs (as in `./x test`) check that the programs work; their
    // numbers go elsewhere so they never pass for a real measurement.
    let dir = if is_quick {
        "bench-results/quick"
    } else {
        "bench-results"
    };
    write_results(&root().join(dir), &rows, &extra, tsc_khz, &groups)
}

/// `scenarios/kv-placement.toml`, the Genode talk's experiment, through
/// `eremite experiment run`: its table, CSV and chart go to
/// `bench-results/scenarios/` (no rows: it compares placements, not
/// eremite with Linux). Quick: one second a run, one repeat.
fn scenarios(cli: &Path, is_quick: bool) -> Result {
    crate::build_image("kvbench")?;
    let out = if is_quick {
        "bench-results/quick/scenarios"
    } else {
        "bench-results/scenarios"
    };
    let mut command = Command::new(cli);
    command
        .args([
            "experiment",
            "run",
            "scenarios/kv-placement.toml",
            "--out",
            out,
        ])
        .current_dir(root());
    if is_quick {
        command.args(["--set", "seconds=1", "--repeat", "1"]);
    }
    run_command(&mut command)
}

const SYSCALL_ROWS: [&str; 16] = [
    "getpid",
    "sched_yield",
    "write_1_byte",
    "file_write_1_byte",
    "file_open_close",
    "file_stat",
    "malloc_free_64",
    "malloc_free_4096",
    "first_touch_page",
    "page_first_write",
    "mmap_munmap_1mib",
    "mmap_touch_munmap_1mib",
    "mprotect_page",
    "clock_gettime",
    "thread_spawn_join",
    "thread_pingpong",
];
const NOISE_ROWS: [&str; 2] = ["hourglass_avg_gap", "hourglass_max_gap"];
const FS_ROWS: [&str; 6] = [
    "fs_open_close",
    "fs_stat",
    "fs_write_4k",
    "fs_read_4k",
    "fs_create_unlink",
    "postmark_tps",
];

pub(crate) fn build_benches(extra: &[&str]) -> Result {
    run_command(
        cargo()
            .current_dir(root().join("benches"))
            .args(["build", "--release"])
            .args(extra),
    )
}

fn bench_binary(target: &str, name: &str) -> PathBuf {
    root()
        .join("benches/target")
        .join(target)
        .join("release")
        .join(name)
}

/// Run a benchmark program in eremite and natively, one after the other,
/// each pinned to [`BENCH_CORE`].
fn run_both(cli: &Path, name: &str, args: &[&str]) -> Result<(ProgramOutput, ProgramOutput)> {
    Ok((run_eremite(cli, name, &[], args)?, run_native(name, args)?))
}

/// Run a benchmark program with `eremite run OPTIONS IMAGE -- ARGS`,
/// pinned to [`BENCH_CORE`].
fn run_eremite<S: AsRef<OsStr>>(
    cli: &Path,
    name: &str,
    options: &[S],
    args: &[S],
) -> Result<ProgramOutput> {
    let mut unikernel = Command::new("taskset");
    unikernel
        .args(["-c", BENCH_CORE])
        .arg(cli)
        .arg("run")
        .args(options)
        .arg(bench_binary(HERMIT_TARGET, name))
        .arg("--")
        .args(args);
    run_program(&mut unikernel)
}

/// Run the native build of a benchmark program, pinned to [`BENCH_CORE`].
fn run_native<S: AsRef<OsStr>>(name: &str, args: &[S]) -> Result<ProgramOutput> {
    let mut native = Command::new("taskset");
    native
        .args(["-c", BENCH_CORE])
        .arg(bench_binary(HOST_TARGET, name))
        .args(args);
    run_program(&mut native)
}

/// The `linux` group: the `syscalls` program built with stable Rust for
/// `x86_64-unknown-linux-musl`, run unmodified in eremite (through the
/// Linux ABI: rewritten `syscall` sites) and natively, pinned to the same
/// core (rows with the suffix `_linux`); `fsbench` likewise, on the RAM
/// file system and natively in tmpfs; the trap path's cost (`getpid` from
/// a `syscall` site left in place, `examples/c/redzone.c`); and boot to
/// exit of the musl C
/// hello in eremite against the same binary natively, next to the hermit
/// hello's (interleaved runs).
fn linux(cli: &Path, is_quick: bool) -> Result<(Vec<Row>, u64)> {
    crate::linux::build_benches(&["syscalls", "fsbench"])?;
    crate::linux::build()?;
    let program = crate::linux::bench_path("syscalls");
    let args: &[&str] = if is_quick { &["--quick"] } else { &[] };
    let mut unikernel = Command::new("taskset");
    unikernel
        .args(["-c", BENCH_CORE])
        .arg(cli)
        .arg("run")
        .arg(&program)
        .arg("--")
        .args(args);
    let e = run_program(&mut unikernel)?;
    let mut native = Command::new("taskset");
    native.args(["-c", BENCH_CORE]).arg(&program).args(args);
    let l = run_program(&mut native)?;
    let mut rows = pair("linux", &e, &l, &SYSCALL_ROWS, "_linux")?;

    // fsbench for musl: in eremite on the RAM file system, natively in a
    // fresh tmpfs directory (as the `fs` group runs its hermit build).
    let fsbench = crate::linux::bench_path("fsbench");
    let (base, _) = scratch_base();
    let scratch =
        ScratchDir::new(base.join(format!("eremite-bench-linux-{}", std::process::id())))?;
    let native_dir = scratch.0.join("native");
    let mut native_fs = Command::new("taskset");
    native_fs
        .args(["-c", BENCH_CORE])
        .arg(&fsbench)
        .arg("--dir")
        .arg(&native_dir)
        .args(args);
    let l_fs = run_program(&mut native_fs)?;
    let mut eremite_fs = Command::new("taskset");
    eremite_fs
        .args(["-c", BENCH_CORE])
        .arg(cli)
        .args(["run", "--memory", FS_MEMORY])
        .arg(&fsbench)
        .args(["--", "--dir", "/bench"])
        .args(args);
    let e_fs = run_program(&mut eremite_fs)?;
    rows.extend(pair("linux", &e_fs, &l_fs, &FS_ROWS, "_linux")?);
    drop(scratch);

    // The trap path: `getpid` from a `syscall` site left in place (its
    // function keeps data in the red zone), natively the same `syscall`.
    let redzone = crate::linux::c_dir().join("redzone");
    let mut trapped = Command::new("taskset");
    trapped
        .args(["-c", BENCH_CORE])
        .arg(cli)
        .arg("run")
        .arg(&redzone)
        .args(["--", "bench"]);
    let e_trap = run_program(&mut trapped)?;
    let mut native_trap = Command::new("taskset");
    native_trap
        .args(["-c", BENCH_CORE])
        .arg(&redzone)
        .arg("bench");
    let l_trap = run_program(&mut native_trap)?;
    rows.extend(pair("linux", &e_trap, &l_trap, &["getpid_trap"], "_linux")?);

    let c_hello = crate::linux::c_dir().join("hello");
    let hermit_hello = build_image("hello")?;
    let mut musl = Command::new(cli);
    musl.arg("run").arg(&c_hello);
    let mut hermit = Command::new(cli);
    hermit.arg("run").arg(&hermit_hello);
    let mut native_hello = Command::new(&c_hello);
    let runs = if is_quick { 5 } else { 30 };
    let [musl_ms, hermit_ms, native_ms] =
        time_interleaved([&mut musl, &mut hermit, &mut native_hello], runs)?;
    for (name, samples) in [
        ("musl_hello_wall_time", &musl_ms),
        ("hermit_hello_wall_time", &hermit_ms),
    ] {
        rows.push(Row {
            group: "linux",
            name: name.to_owned(),
            unit: "ms".to_owned(),
            eremite: Stat::of(samples),
            linux: Stat::of(&native_ms),
        });
    }
    println!(
        "linux: the syscalls and fsbench programs (stable Rust, musl) in eremite through the Linux ABI vs natively (fsbench natively in tmpfs); musl C hello and hermit hello vs native musl hello, {runs} interleaved runs"
    );
    Ok((rows, e.tsc_khz))
}

/// The `fs` group: `fsbench` natively in a fresh tmpfs directory, in
/// eremite on the RAM file system, and in eremite below a `--mount` of
/// another fresh tmpfs directory, so the host side of the mount does the
/// same work as the native run. Returns the rows (the mount run's with the
/// suffix `_mount`), a JSON note on where the native run worked, and the
/// TSC frequency.
fn fs(cli: &Path, is_quick: bool) -> Result<(Vec<Row>, String, u64)> {
    let (base, is_tmpfs) = scratch_base();
    let scratch = ScratchDir::new(base.join(format!("eremite-bench-fs-{}", std::process::id())))?;
    let host_mount = scratch.0.join("mount");
    std::fs::create_dir(&host_mount)
        .map_err(|e| format!("cannot create {}: {e}", host_mount.display()))?;
    let where_native = if is_tmpfs {
        format!("{} (tmpfs)", base.display())
    } else {
        format!("{} (not a tmpfs)", base.display())
    };
    println!("fs: native and mount runs work in {where_native}");

    let quick: &[&OsStr] = if is_quick { &["--quick".as_ref()] } else { &[] };
    let native_dir = scratch.0.join("native");
    let mut args: Vec<&OsStr> = vec!["--dir".as_ref(), native_dir.as_os_str()];
    args.extend(quick);
    let linux = run_native("fsbench", &args)?;

    let memory: [&OsStr; 2] = ["--memory".as_ref(), FS_MEMORY.as_ref()];
    let mut args: Vec<&OsStr> = vec!["--dir".as_ref(), "/bench".as_ref()];
    args.extend(quick);
    let ram = run_eremite(cli, "fsbench", &memory[..], &args)?;

    let mut mount = host_mount.into_os_string();
    mount.push(":/mnt");
    let mut options = memory.to_vec();
    options.extend(["--mount".as_ref(), mount.as_os_str()]);
    let mut args: Vec<&OsStr> = vec!["--dir".as_ref(), "/mnt/bench".as_ref()];
    args.extend(quick);
    let mounted = run_eremite(cli, "fsbench", &options, &args)?;

    let mut rows = pair("fs", &ram, &linux, &FS_ROWS, "")?;
    rows.extend(pair("fs", &mounted, &linux, &FS_ROWS, "_mount")?);
    let extra = format!("\"fs_native_dir\": \"{}\"", where_native.replace('"', "'"));
    Ok((rows, extra, ram.tsc_khz))
}

/// Where the `fs` group makes its directories: `/dev/shm` if it is a
/// tmpfs (from `/proc/mounts`), else the temporary directory. Returns the
/// directory and whether it is a tmpfs.
fn scratch_base() -> (PathBuf, bool) {
    let shm = Path::new("/dev/shm");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    // Fields: device, mount point, type, ... (proc(5)); the last entry for
    // a mount point is the one on top.
    let shm_type = mounts
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace().skip(1);
            Some((fields.next()?, fields.next()?))
        })
        .filter(|(point, _)| *point == "/dev/shm")
        .map(|(_, kind)| kind)
        .next_back();
    if shm.is_dir() && shm_type == Some("tmpfs") {
        return (shm.to_owned(), true);
    }
    let tmp = std::env::temp_dir();
    println!(
        "fs: /dev/shm is missing or not a tmpfs; the native and mount runs use {} instead",
        tmp.display()
    );
    (tmp, false)
}

/// A directory that is removed with everything in it when dropped, also
/// when a benchmark fails.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(path: PathBuf) -> Result<Self> {
        // A leftover from an interrupted run with the same process id.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("cannot remove {}: {e}", self.0.display());
        }
    }
}

fn run_program(command: &mut Command) -> Result<ProgramOutput> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        // The write benchmark fills stderr with dots; show the rest.
        let stderr: String = String::from_utf8_lossy(&output.stderr).replace('.', "");
        return Err(format!(
            "benchmark {command:?} failed ({})\n{stdout}{}",
            output.status,
            stderr.trim()
        ));
    }
    parse_output(&stdout).map_err(|e| format!("benchmark {command:?}: {e}\n{stdout}"))
}

fn parse_output(stdout: &str) -> Result<ProgramOutput> {
    let mut out = ProgramOutput {
        tsc_khz: 0,
        rows: Vec::new(),
        histogram: Vec::new(),
    };
    for line in stdout.lines() {
        let mut words = line.split_whitespace();
        let kind = words.next().unwrap_or_default();
        let fields: Vec<(&str, &str)> = words.filter_map(|w| w.split_once('=')).collect();
        let get = |key: &str| fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let number = |key: &str| -> Result<f64> {
            get(key)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("malformed `{key}` in `{line}`"))
        };
        match kind {
            "TSC" => out.tsc_khz = number("khz")? as u64,
            "BENCH" => {
                let name = get("name").ok_or_else(|| format!("no name in `{line}`"))?;
                let unit = get("unit").ok_or_else(|| format!("no unit in `{line}`"))?;
                let stat = Stat {
                    median: number("median")?,
                    p99: number("p99")?,
                    min: number("min")?,
                    max: number("max")?,
                    n: number("n")? as u64,
                };
                out.rows.push((name.to_owned(), unit.to_owned(), stat));
            }
            "HIST" => out
                .histogram
                .push((number("gap_ge")? as u64, number("count")? as u64)),
            _ => {}
        }
    }
    if out.tsc_khz == 0 {
        return Err("no TSC line".to_owned());
    }
    Ok(out)
}

/// Match the rows of both runs; every expected row must be on both sides.
/// The table names the rows with `suffix` appended (to tell several
/// eremite runs of one program apart).
fn pair(
    group: &'static str,
    unikernel: &ProgramOutput,
    native: &ProgramOutput,
    expected: &[&str],
    suffix: &str,
) -> Result<Vec<Row>> {
    expected
        .iter()
        .map(|name| {
            let find = |o: &ProgramOutput, side: &str| {
                o.rows
                    .iter()
                    .find(|(n, _, _)| n == name)
                    .cloned()
                    .ok_or_else(|| {
                        format!("the {side} run printed no result for `{name}` ({group}{suffix})")
                    })
            };
            let (_, unit, eremite) = find(unikernel, "eremite")?;
            let (_, _, linux) = find(native, "Linux")?;
            Ok(Row {
                group,
                name: format!("{name}{suffix}"),
                unit,
                eremite,
                linux,
            })
        })
        .collect()
}

/// Wall time of `eremite run hello` from process start to exit, against a
/// native Linux build of the same program, interleaved run by run so both
/// see the same machine noise; the same for `eremite run --hypervisor
/// qemu-kvm` and `qemu-tcg` (QEMU `-M microvm`, PVH boot) against the same
/// native runs; then the stripped image size and the smallest `--memory`
/// that boots hello.
fn boot(cli: &Path, runs: usize) -> Result<(Vec<Row>, Vec<String>)> {
    let image = build_image("hello")?;
    crate::build_native_examples(&["hello"])?;
    let native = root()
        .join("examples/target")
        .join(HOST_TARGET)
        .join("release/hello");
    let on = |hypervisor: &str| {
        let mut command = Command::new(cli);
        command
            .args(["run", "--hypervisor", hypervisor])
            .arg(&image);
        command
    };
    let mut unikernels = [
        ("hello_wall_time", on("eremite")),
        ("hello_wall_time_qemu_kvm", on("qemu-kvm")),
        ("hello_wall_time_qemu_tcg", on("qemu-tcg")),
    ];
    let mut linux = Command::new(&native);
    // Warm the page cache for every binary.
    for (_, unikernel) in &mut unikernels {
        time_once(unikernel)?;
    }
    time_once(&mut linux)?;
    let mut eremite_ms = vec![Vec::with_capacity(runs); unikernels.len()];
    let mut native_ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        for ((_, unikernel), samples) in unikernels.iter_mut().zip(&mut eremite_ms) {
            samples.push(time_once(unikernel)?);
        }
        native_ms.push(time_once(&mut linux)?);
    }
    let rows = unikernels
        .iter()
        .zip(&eremite_ms)
        .map(|((name, _), samples)| Row {
            group: "boot",
            name: (*name).to_owned(),
            unit: "ms".to_owned(),
            eremite: Stat::of(samples),
            linux: Stat::of(&native_ms),
        })
        .collect();
    let stripped = stripped_size(&image)?;
    let native_stripped = stripped_size(&native)?;
    let breakdown = verbose_breakdown(cli, &image)?;
    let smallest = smallest_memory(cli, &image)?;
    println!(
        "boot: `eremite run hello` (our VMM, QEMU + KVM, QEMU TCG) vs native `hello`, {runs} interleaved runs"
    );
    println!(
        "  hello stripped: eremite image {stripped} bytes, native Linux binary {native_stripped} bytes"
    );
    println!("  smallest --memory that boots hello: {smallest}");
    println!("  one verbose run: {breakdown}");
    let extra = vec![
        format!("\"hello_image_stripped_bytes\": {stripped}"),
        format!("\"hello_native_stripped_bytes\": {native_stripped}"),
        format!("\"smallest_memory\": \"{smallest}\""),
        format!("\"boot_breakdown\": \"{}\"", breakdown.replace('"', "'")),
    ];
    Ok((rows, extra))
}

/// CPU-bound scaling from one core to two: `examples/rayon speedup` times
/// the same parallel map on a one-thread and a two-thread pool and prints
/// the ratio, in a 2-vCPU VM and natively on two host cores (the machine
/// has two, so both sides get the whole machine; runs interleave).
fn smp(cli: &Path, runs: usize) -> Result<Row> {
    let image = build_image("rayon")?;
    crate::build_native_examples(&["rayon"])?;
    let native = root()
        .join("examples/target")
        .join(HOST_TARGET)
        .join("release/rayon");
    let speedup = |command: &mut Command| -> Result<f64> {
        let output = run_command_output(command)?;
        output
            .split_whitespace()
            .skip_while(|word| *word != "speedup")
            .nth(1)
            .and_then(|ratio| ratio.parse().ok())
            .ok_or_else(|| format!("no speedup in the rayon output: {output:?}"))
    };
    let mut unikernel = Command::new(cli);
    unikernel
        .args(["run", "--cpus", "2", "--memory", "256M"])
        .arg(&image)
        .args(["--", "speedup"]);
    let mut linux = Command::new(&native);
    linux.env("RAYON_NUM_THREADS", "2").arg("speedup");
    let mut eremite_x = Vec::with_capacity(runs);
    let mut native_x = Vec::with_capacity(runs);
    for _ in 0..runs {
        eremite_x.push(speedup(&mut unikernel)?);
        native_x.push(speedup(&mut linux)?);
    }
    Ok(Row {
        group: "smp",
        name: "rayon_speedup_1_to_2_cpus".to_owned(),
        unit: "x".to_owned(),
        eremite: Stat::of(&eremite_x),
        linux: Stat::of(&native_x),
    })
}

/// The futex round trip between two threads on two cores: eremite with
/// two vCPUs, Linux on the machine's first two cores (each thread pinned).
fn cross_core_pingpong(cli: &Path, is_quick: bool) -> Result<Vec<Row>> {
    let args: &[&str] = if is_quick {
        &["cross-core", "--quick"]
    } else {
        &["cross-core"]
    };
    let unikernel = run_program(
        Command::new("taskset")
            .args(["-c", "0,1"])
            .arg(cli)
            .args(["run", "--cpus", "2"])
            .arg(bench_binary(HERMIT_TARGET, "syscalls"))
            .arg("--")
            .args(args),
    )?;
    let native = run_program(
        Command::new("taskset")
            .args(["-c", "0,1"])
            .arg(bench_binary(HOST_TARGET, "syscalls"))
            .args(args),
    )?;
    pair(
        "smp",
        &unikernel,
        &native,
        &["thread_pingpong", "malloc_free_64_2threads"],
        "_2cpus",
    )
}

const NET_ROWS: [&str; 3] = ["tcp_upload", "tcp_download", "tcp_rtt_1_byte"];
const HTTP_ROWS: [&str; 1] = ["http_requests"];
const WRK_ROWS: [&str; 2] = ["wrk_requests", "wrk_latency"];

/// `wrk` with 8 keep-alive connections on one thread, pinned to core 0,
/// against `url` (inside the namespace): requests per second (one
/// sample) and the latency distribution (median and 99th percentile).
fn wrk(ns: &BenchNetNs, url: &str, is_quick: bool) -> Result<ProgramOutput> {
    wrk_from(ns.command("0", Path::new("wrk")), url, is_quick)
}

/// [`wrk`] from the host's own namespace (against a published port).
fn wrk_on_host(url: &str, is_quick: bool) -> Result<ProgramOutput> {
    wrk_from(pinned("0", Path::new("wrk")), url, is_quick)
}

/// `wrk` started by `command` (the program and where it runs).
fn wrk_from(mut command: Command, url: &str, is_quick: bool) -> Result<ProgramOutput> {
    let duration = if is_quick { "2s" } else { "10s" };
    let stdout =
        run_command_output(command.args(["-t1", "-c8", "-d", duration, "--latency", url]))?;
    parse_wrk(&stdout).map_err(|e| format!("wrk against {url}: {e}\n{stdout}"))
}

/// The rows of `wrk --latency`'s report.
fn parse_wrk(stdout: &str) -> Result<ProgramOutput> {
    let field = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(str::trim)
            .ok_or_else(|| format!("no `{prefix}` line"))
    };
    let rate: f64 = field("Requests/sec:")?
        .parse()
        .map_err(|_| "a malformed Requests/sec".to_owned())?;
    // "50%  123.45us" (or ms, s).
    let micros = |text: &str| -> Result<f64> {
        let (number, scale) = if let Some(n) = text.strip_suffix("us") {
            (n, 1.0)
        } else if let Some(n) = text.strip_suffix("ms") {
            (n, 1e3)
        } else if let Some(n) = text.strip_suffix('s') {
            (n, 1e6)
        } else {
            return Err(format!("a latency without unit: `{text}`"));
        };
        number
            .parse::<f64>()
            .map(|n| n * scale)
            .map_err(|_| format!("a malformed latency `{text}`"))
    };
    let (median, p99) = (micros(field("50%")?)?, micros(field("99%")?)?);
    let (p75, p90) = (micros(field("75%")?)?, micros(field("90%")?)?);
    let one = |v: f64| Stat {
        median: v,
        p99: v,
        min: v,
        max: v,
        n: 1,
    };
    Ok(ProgramOutput {
        // Unused: no row is in cycles.
        tsc_khz: 1,
        rows: vec![
            ("wrk_requests".to_owned(), "req/s".to_owned(), one(rate)),
            (
                "wrk_latency".to_owned(),
                "us".to_owned(),
                Stat {
                    median,
                    p99,
                    min: median.min(p75).min(p90),
                    max: p99,
                    n: 4,
                },
            ),
        ],
        histogram: Vec::new(),
    })
}

/// A network namespace for the `net` group, deleted on drop.
struct BenchNetNs(String);

impl BenchNetNs {
    /// A namespace with `lo` up and the tap `ebtap0` (10.0.0.1/24, MTU
    /// 65521) up.
    fn new() -> Result<Self> {
        let ns = Self(format!("eremite-bench-{}", std::process::id()));
        let ip = |args: &[&str]| run_command(Command::new("ip").args(args));
        ip(&["netns", "add", &ns.0])?;
        ip(&["-n", &ns.0, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns.0, "tuntap", "add", "dev", "ebtap0", "mode", "tap"])?;
        ip(&["-n", &ns.0, "addr", "add", "10.0.0.1/24", "dev", "ebtap0"])?;
        // A host-only link: the largest MTU a tap takes, as loopback's
        // 64 KiB (the guest learns it through VIRTIO_NET_F_MTU).
        ip(&["-n", &ns.0, "link", "set", "ebtap0", "mtu", "65521"])?;
        ip(&["-n", &ns.0, "link", "set", "ebtap0", "up"])?;
        Ok(ns)
    }

    fn name(&self) -> &str {
        &self.0
    }

    /// Forget the tap's neighbours: the next VM on it has another MAC
    /// address, and a cached one would keep its traffic going to the last
    /// VM's for up to a minute.
    fn forget_neighbours(&self) -> Result {
        run_command(Command::new("ip").args(["-n", &self.0, "neigh", "flush", "dev", "ebtap0"]))
    }

    /// `command ARGS` inside the namespace, pinned to `core`.
    fn command(&self, core: &str, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.0, "taskset", "-c", core])
            .arg(program);
        command
    }

    /// `eremite run` inside the namespace with the card on the tap, its
    /// vCPU pinned to [`BENCH_CORE`] as the native server is; the card's
    /// thread runs on the other cores, as the host kernel's network work
    /// for the native server does.
    fn eremite(&self, cli: &Path) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.0])
            .arg(cli)
            .args(["run", "--pin-vcpus", BENCH_CORE, "--memory", "256M"])
            .args(["--net", "tap:ebtap0", "--ip", "10.0.0.2/24"]);
        command
    }
}

impl Drop for BenchNetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

/// Start `command` (a `netbench serve`) and wait for its `listening`
/// line; the running server.
fn start_server(command: &mut Command) -> Result<std::process::Child> {
    use std::io::BufRead;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let mut lines = std::io::BufReader::new(stdout).lines();
    match lines.next() {
        Some(Ok(line)) if line.starts_with("listening on") => Ok(child),
        other => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("{command:?} did not start listening: {other:?}"))
        }
    }
}

/// The `net` group: the same native `netbench client` against
/// `netbench serve` in eremite (behind its tap, in a namespace made for
/// the run) and natively on the namespace's loopback. Server on core 1
/// (eremite's vCPU; its card's thread may use the other cores), client
/// on core 0.
fn net(is_quick: bool) -> Result<Vec<Row>> {
    let cli = build_cli()?;
    let ns = BenchNetNs::new()?;
    let native = bench_binary(HOST_TARGET, "netbench");
    let quick: &[&str] = if is_quick { &["--quick"] } else { &[] };
    let mut guest = start_server(
        ns.eremite(&cli)
            .arg(bench_binary(HERMIT_TARGET, "netbench"))
            .args(["--", "serve", "0.0.0.0:7100"]),
    )?;
    let unikernel = run_program(
        ns.command("0", &native)
            .args(["client", "10.0.0.2:7100"])
            .args(quick),
    );
    let _ = guest.kill();
    let _ = guest.wait();
    let mut server = start_server(
        ns.command(BENCH_CORE, &native)
            .args(["serve", "127.0.0.1:7101"]),
    )?;
    let linux = run_program(
        ns.command("0", &native)
            .args(["client", "127.0.0.1:7101"])
            .args(quick),
    );
    let _ = server.kill();
    let _ = server.wait();
    let linux = linux?;
    let mut rows = pair("net", &unikernel?, &linux, &NET_ROWS, "")?;
    // The same through user-mode networking: a published port on the
    // host's loopback, passt in between (unpinned, like the card's thread).
    let mut guest = start_server(
        user_net_eremite(&cli, "127.0.0.1:7102:7100")
            .arg(bench_binary(HERMIT_TARGET, "netbench"))
            .args(["--", "serve", "0.0.0.0:7100"]),
    )?;
    let user = run_program(
        pinned("0", &native)
            .args(["client", "127.0.0.1:7102"])
            .args(quick),
    );
    let _ = guest.kill();
    let _ = guest.wait();
    rows.extend(pair("net", &user?, &linux, &NET_ROWS, "_user")?);
    // VM to VM through a switch (--net switch:NAME): the server in one
    // VM on the bench core, the same client in another VM on core 0.
    let switch = format!("switch:bench-{}", std::process::id());
    let mut guest = start_server(
        switch_eremite(&cli, &switch, BENCH_CORE, "10.0.4.1/24")
            .arg(bench_binary(HERMIT_TARGET, "netbench"))
            .args(["--", "serve", "0.0.0.0:7100"]),
    )?;
    let vm_to_vm = run_program(
        switch_eremite(&cli, &switch, "0", "10.0.4.2/24")
            .arg(bench_binary(HERMIT_TARGET, "netbench"))
            .args(["--", "client", "10.0.4.1:7100"])
            .args(quick),
    );
    let _ = guest.kill();
    let _ = guest.wait();
    rows.extend(pair("net", &vm_to_vm?, &linux, &NET_ROWS, "_switch")?);

    // HTTP requests per second against examples/httpd.
    let image = build_image("httpd")?;
    crate::build_native_examples(&["httpd"])?;
    let native_httpd = root()
        .join("examples/target")
        .join(HOST_TARGET)
        .join("release/httpd");
    let mut guest = start_server(ns.eremite(&cli).arg(&image).args(["--", "0.0.0.0:8080"]))?;
    let unikernel = run_program(
        ns.command("0", &native)
            .args(["http", "10.0.0.2:8080"])
            .args(quick),
    );
    let unikernel_wrk = wrk(&ns, "http://10.0.0.2:8080/", is_quick);
    let _ = guest.kill();
    let _ = guest.wait();
    let mut server = start_server(ns.command(BENCH_CORE, &native_httpd).arg("127.0.0.1:8081"))?;
    let linux = run_program(
        ns.command("0", &native)
            .args(["http", "127.0.0.1:8081"])
            .args(quick),
    );
    let linux_wrk = wrk(&ns, "http://127.0.0.1:8081/", is_quick);
    let _ = server.kill();
    let _ = server.wait();
    let mut guest = start_server(
        user_net_eremite(&cli, "127.0.0.1:8082:8080")
            .arg(&image)
            .args(["--", "0.0.0.0:8080"]),
    )?;
    let user_wrk = wrk_on_host("http://127.0.0.1:8082/", is_quick);
    let _ = guest.kill();
    let _ = guest.wait();
    let linux_wrk = linux_wrk?;
    rows.extend(pair("net", &unikernel?, &linux?, &HTTP_ROWS, "")?);
    rows.extend(pair("net", &unikernel_wrk?, &linux_wrk, &WRK_ROWS, "")?);
    rows.extend(pair("net", &user_wrk?, &linux_wrk, &WRK_ROWS, "_user")?);
    Ok(rows)
}

/// `eremite run` with user-mode networking publishing `publish`, its vCPU
/// pinned to [`BENCH_CORE`] as in the namespace's runs.
fn user_net_eremite(cli: &Path, publish: &str) -> Command {
    let mut command = pinned_eremite(cli, BENCH_CORE);
    command.args(["-p", publish]);
    command
}

/// `eremite run` with 256 MiB and its vCPU pinned to `core`, as every
/// run of the `net` group.
fn pinned_eremite(cli: &Path, core: &str) -> Command {
    let mut command = Command::new(cli);
    command.args(["run", "--pin-vcpus", core, "--memory", "256M"]);
    command
}

/// `eremite run` on switch `switch` (`switch:NAME`) with address
/// `ip`, its vCPU pinned to `core`.
fn switch_eremite(cli: &Path, switch: &str, core: &str, ip: &str) -> Command {
    let mut command = pinned_eremite(cli, core);
    command.args(["--net", switch, "--ip", ip]);
    command
}

/// `program` pinned to `core`, in the host's own network namespace.
fn pinned(core: &str, program: &Path) -> Command {
    let mut command = Command::new("taskset");
    command.args(["-c", core]).arg(program);
    command
}

/// Run `command` to success and return its standard output.
fn run_command_output(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Wall times of `runs` rounds of `commands`, one after the other in each
/// round so that all see the same machine noise (after one warm-up run
/// each, for the page cache).
pub(crate) fn time_interleaved<const N: usize>(
    mut commands: [&mut Command; N],
    runs: usize,
) -> Result<[Vec<f64>; N]> {
    for command in &mut commands {
        time_once(command)?;
    }
    let mut samples: [Vec<f64>; N] = std::array::from_fn(|_| Vec::with_capacity(runs));
    for _ in 0..runs {
        for (command, times) in commands.iter_mut().zip(&mut samples) {
            times.push(time_once(command)?);
        }
    }
    Ok(samples)
}

fn time_once(command: &mut Command) -> Result<f64> {
    command.stdout(Stdio::null()).stderr(Stdio::null());
    let start = Instant::now();
    let status = command
        .status()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    let elapsed = start.elapsed();
    if !status.success() {
        return Err(format!("{command:?} failed ({status})"));
    }
    Ok(elapsed.as_secs_f64() * 1e3)
}

fn stripped_size(binary: &Path) -> Result<u64> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(root())
        .output()
        .map_err(|e| format!("cannot run rustc: {e}"))?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_owned();
    let strip = Path::new(&sysroot)
        .join("lib/rustlib")
        .join(HOST_TARGET)
        .join("bin/llvm-strip");
    let out = std::env::temp_dir().join(format!("eremite-stripped-{}", std::process::id()));
    run_command(Command::new(strip).arg("-o").arg(&out).arg(binary))?;
    let size = std::fs::metadata(&out).map_err(|e| e.to_string())?.len();
    let _ = std::fs::remove_file(&out);
    Ok(size)
}

/// The CLI's one-line boot-time breakdown from a `--verbose` run.
fn verbose_breakdown(cli: &Path, image: &Path) -> Result<String> {
    let output = Command::new(cli)
        .arg("run")
        .arg("--verbose")
        .arg(image)
        .output()
        .map_err(|e| format!("cannot run eremite: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr
        .lines()
        .find(|l| l.contains("vmm setup"))
        .map(|l| l.trim().trim_start_matches("eremite: ").to_owned())
        .ok_or_else(|| "the verbose run printed no boot-time breakdown".to_owned())
}

/// The smallest `--memory` (in 2 MiB steps from the VMM's minimum) with
/// which hello exits 0.
fn smallest_memory(cli: &Path, image: &Path) -> Result<String> {
    for mib in (8..=64).step_by(2) {
        let status = Command::new(cli)
            .args(["run", "--memory", &format!("{mib}M")])
            .arg(image)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run eremite: {e}"))?;
        if status.success() {
            let note = if mib == 8 { " (the VMM's minimum)" } else { "" };
            return Ok(format!("{mib} MiB{note}"));
        }
    }
    Err("hello does not boot with up to 64 MiB".to_owned())
}

fn print_table(rows: &[Row], tsc_khz: u64) {
    let group_width = rows.iter().map(|r| r.group.len()).fold(9, usize::max);
    let name_width = rows.iter().map(|r| r.name.len()).fold(22, usize::max);
    println!();
    println!(
        "{:<group_width$} {:<name_width$} {:>6} {:>12} {:>12} {:>8} {:>12} {:>12}",
        "group", "benchmark", "unit", "eremite", "Linux", "ratio", "eremite p99", "Linux p99"
    );
    for row in rows {
        println!(
            "{:<group_width$} {:<name_width$} {:>6} {:>12.2} {:>12.2} {:>8.3} {:>12.2} {:>12.2}",
            row.group,
            row.name,
            row.unit,
            row.eremite.median,
            row.linux.median,
            row.eremite.median / row.linux.median,
            row.tail(&row.eremite),
            row.tail(&row.linux)
        );
    }
    println!("medians; ratio = eremite / Linux (below 1: eremite is faster)");
    if rows.iter().any(Row::is_rate) {
        println!(
            "rates (tx/s) and speed-ups (x): higher is better, so above 1 eremite is faster; their p99 columns show the slowest sample"
        );
    }
    if tsc_khz > 0 {
        println!(
            "cycles are TSC ticks at {:.3} GHz ({:.3} ns each)",
            tsc_khz as f64 / 1e6,
            1e6 / tsc_khz as f64
        );
    }
}

fn write_results(
    dir: &Path,
    rows: &[Row],
    extra: &[String],
    tsc_khz: u64,
    groups: &[&str],
) -> Result {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map_err(|e| format!("cannot run date: {e}"))?;
    let date = String::from_utf8_lossy(&date.stdout).trim().to_owned();
    let stat = |s: &Stat| {
        format!(
            "{{ \"median\": {:.3}, \"p99\": {:.3}, \"min\": {:.3}, \"max\": {:.3}, \"n\": {} }}",
            s.median, s.p99, s.min, s.max, s.n
        )
    };
    let rows_json: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "    {{ \"group\": \"{}\", \"name\": \"{}\", \"unit\": \"{}\", \"eremite\": {}, \"linux\": {}, \"ratio\": {:.4} }}",
                r.group,
                r.name,
                r.unit,
                stat(&r.eremite),
                stat(&r.linux),
                r.eremite.median / r.linux.median
            )
        })
        .collect();
    let mut json = format!(
        "{{\n  \"date\": \"{date}\",\n  \"tsc_khz\": {tsc_khz},\n  \"rows\": [\n{}\n  ]",
        rows_json.join(",\n")
    );
    for e in extra {
        json += &format!(",\n  {e}");
    }
    json += "\n}\n";
    let path = dir.join(format!("{date}.json"));
    std::fs::write(&path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    // One chart per group, or per group and unit when a group has several
    // (one axis cannot show cycles and transactions per second).
    for group in groups {
        let group_rows: Vec<&Row> = rows.iter().filter(|r| r.group == *group).collect();
        let mut units: Vec<&str> = Vec::new();
        for row in &group_rows {
            if !units.contains(&row.unit.as_str()) {
                units.push(&row.unit);
            }
        }
        for unit in &units {
            let unit_rows: Vec<&Row> = group_rows
                .iter()
                .copied()
                .filter(|r| r.unit == *unit)
                .collect();
            let svg = if units.len() == 1 {
                dir.join(format!("{group}.svg"))
            } else {
                dir.join(format!("{group}-{}.svg", unit.replace('/', "-per-")))
            };
            chart::draw(&svg, group, &unit_rows)?;
            println!("wrote {}", svg.display());
        }
    }
    Ok(())
}

fn histogram_json(histogram: &[(u64, u64)]) -> String {
    let items: Vec<String> = histogram
        .iter()
        .map(|(ge, count)| format!("[{ge}, {count}]"))
        .collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_reports_become_rows() {
        let report = "Running 2s test @ http://10.0.0.2:8080/
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   210.32us  120.11us   2.31ms   91.00%
    Req/Sec    36.12k     1.20k   38.00k    70.00%
  Latency Distribution
     50%  190.00us
     75%  230.50us
     90%  310.00us
     99%    1.20ms
  71884 requests in 2.00s, 21.94MB read
Requests/sec:  35941.52
Transfer/sec:     10.97MB
";
        let out = parse_wrk(report).unwrap();
        let (name, unit, rate) = &out.rows[0];
        assert_eq!((name.as_str(), unit.as_str()), ("wrk_requests", "req/s"));
        assert!((rate.median - 35941.52).abs() < 1e-6);
        let (name, unit, latency) = &out.rows[1];
        assert_eq!((name.as_str(), unit.as_str()), ("wrk_latency", "us"));
        assert!((latency.median - 190.0).abs() < 1e-9);
        assert!((latency.p99 - 1200.0).abs() < 1e-9);
        assert!(parse_wrk("Requests/sec: 5\n").is_err(), "no latency");
        assert!(parse_wrk(&report.replace("190.00us", "190.00")).is_err());
    }

    #[test]
    fn program_output_is_parsed_and_checked() {
        let out = parse_output(
            "TSC khz=2600000\nnoise\nBENCH name=getpid unit=cycles median=2.5 p99=3 min=2 max=9 n=10\nHIST gap_ge=32 count=5\n",
        )
        .unwrap();
        assert_eq!(out.tsc_khz, 2_600_000);
        assert_eq!(out.rows[0].0, "getpid");
        assert_eq!(out.rows[0].2.median, 2.5);
        assert_eq!(out.histogram, [(32, 5)]);
        assert!(parse_output("BENCH name=x unit=c median=1 p99=1 min=1 max=1 n=1\n").is_err());
        assert!(
            parse_output("TSC khz=1\nBENCH name=x unit=c median=NaN p99=1 min=1 max=1 n=1")
                .is_err()
        );
        let empty = ProgramOutput {
            tsc_khz: 1,
            rows: Vec::new(),
            histogram: Vec::new(),
        };
        assert!(
            pair("syscalls", &empty, &out, &["getpid"], "").is_err(),
            "a missing row fails"
        );
        let rows = pair("fs", &out, &out, &["getpid"], "_mount").unwrap();
        assert_eq!(rows[0].name, "getpid_mount");
    }
}
