//! `cargo xtask` (behind `./x`): the one task runner, used by developers and
//! CI alike.
//!
//! ```text
//! ./x build              the CLI (release), every example and benchmark image
//! ./x image NAME         build examples/NAME for x86_64-unknown-hermit; prints its path last
//! ./x run [OPTS] NAME [-- ARGS]   build and boot examples/NAME (OPTS go to `eremite run`)
//! ./x test               host unit and guest integration tests under KVM, quick benchmarks
//! ./x check              rustfmt and clippy over every workspace
//! ./x bench [GROUP...] [--quick]   syscalls, syscalls_qemu, noise, fs, boot, smp, net: eremite vs native Linux
//! ./x fuzz TARGET [SECONDS]        run a fuzz target in fuzz/ (needs cargo-fuzz)
//! ```
#![forbid(unsafe_code)]

mod bench;
mod linux;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

pub(crate) const HERMIT_TARGET: &str = "x86_64-unknown-hermit";
/// Every guest program in `examples/`, by binary name (each is the
/// binary of the example's folder; the `rayon` and `socket2` examples'
/// packages are `rayon-demo` and `socket2-demo`, as a package may not
/// share its dependency's name).
pub(crate) const EXAMPLES: [&str; 21] = [
    "hello",
    "busy",
    "debuggee",
    "traced",
    "panic",
    "wildptr",
    "hostile",
    "fault",
    "clock",
    "fs",
    "fsdiff",
    "threads",
    "rayon",
    "net",
    "httpd",
    "mio-httpd",
    "tokio-httpd",
    "memory",
    "kvbench",
    "counter",
    "socket2",
];

/// Examples that also build natively, as baselines: `hello` for the boot
/// benchmark, `fsdiff` for the file-system differential test, `rayon` for
/// the multi-core speed-up benchmark, `counter` for the snapshot one.
pub(crate) const NATIVE_EXAMPLES: [&str; 4] = ["hello", "fsdiff", "rayon", "counter"];

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[String]) -> Result {
    let (command, rest) = args.split_first().ok_or_else(usage)?;
    // The examples' `[patch.crates-io]` names the patched tokio and mio
    // made here from their releases (`compat/README.md`); every command
    // may build or check the examples.
    generate_compat()?;
    match command.as_str() {
        "build" => build_all().map(|_| ()),
        "image" => {
            let [name] = rest else { return Err(usage()) };
            let image = build_image(name)?;
            println!("{}", image.display());
            Ok(())
        }
        "run" => run(rest),
        "test" => test(rest),
        "check" => check(),
        "bench" => bench::bench(rest),
        "fuzz" => fuzz(rest),
        "help" | "--help" | "-h" => {
            println!("{}", usage());
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n{}", usage())),
    }
}

fn usage() -> String {
    "usage: ./x build | image NAME | run [EREMITE-OPTIONS] NAME [-- ARGS] | test | check | bench [syscalls|syscalls_qemu|noise|fs|boot|smp|net|linux|servers|scenarios|snapshot]... [--quick] | fuzz TARGET [SECONDS]"
        .to_owned()
}

/// The repository root (xtask lives in `<root>/xtask`).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the repository")
        .to_owned()
}

pub(crate) fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root());
    command
}

pub(crate) fn run_command(command: &mut Command) -> Result {
    let status = command
        .status()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed ({status})"))
    }
}

/// Make `target/compat/tokio-*` and `target/compat/mio-*` from the
/// releases in cargo's cache and the patches in `compat/` (nothing to do
/// when they are up to date).
fn generate_compat() -> Result {
    let cargo_home = eremite_compat::cargo_home()
        .ok_or("neither CARGO_HOME nor HOME is set: where is cargo's registry?")?;
    eremite_compat::generate(&root().join("target/compat"), &cargo_home)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Build the `eremite` CLI in release mode; returns the binary's path.
pub(crate) fn build_cli() -> Result<PathBuf> {
    // Not `--quiet`: a first build takes minutes, and cargo's progress
    // says what it is doing.
    run_command(cargo().args(["build", "--release", "--package", "eremite"]))?;
    Ok(root().join("target/release/eremite"))
}

/// Build one example for the hermit target; returns the image's path.
pub(crate) fn build_image(name: &str) -> Result<PathBuf> {
    if !root()
        .join("examples")
        .join(name)
        .join("Cargo.toml")
        .exists()
    {
        return Err(format!("no example named `{name}` in examples/"));
    }
    build_images(&[name])?;
    Ok(image_path(name))
}

fn build_images(names: &[&str]) -> Result {
    let mut command = cargo();
    command
        .current_dir(root().join("examples"))
        .args(["build", "--release"]);
    for name in names {
        command.args(["--bin", name]);
    }
    run_command(&mut command)
}

/// Examples also built with every function instrumented for the tracer
/// (`eremite run --trace`), into [`instrumented_dir`].
pub(crate) const INSTRUMENTED_EXAMPLES: [&str; 1] = ["traced"];

/// The flags that instrument an application for `eremite run --trace`
/// (docs/tracing.md); frame pointers too, as RUSTFLAGS replaces the
/// workspace's own flags.
pub(crate) const INSTRUMENT_FLAGS: &str =
    "-Zinstrument-mcount -Cpasses=ee-instrument<post-inline> -Cforce-frame-pointers=yes";

/// Where the instrumented examples' target directory is.
pub(crate) fn instrumented_dir() -> PathBuf {
    root().join("examples/target/instrumented")
}

/// Build `names` from `examples/` with every function instrumented, the
/// kernel's too (the `eremite` crate's `trace-kernel` feature).
fn build_instrumented(names: &[&str]) -> Result {
    let mut command = cargo();
    command
        .current_dir(root().join("examples"))
        .env("RUSTFLAGS", INSTRUMENT_FLAGS)
        .arg("build")
        .args(["--release", "--features", "eremite/trace-kernel"])
        .arg("--target-dir")
        .arg(instrumented_dir());
    for name in names {
        command.args(["--bin", name]);
    }
    run_command(&mut command)
}

pub(crate) fn image_path(name: &str) -> PathBuf {
    root()
        .join("examples/target")
        .join(HERMIT_TARGET)
        .join("release")
        .join(name)
}

/// Build `names` from `examples/` for the host (Linux); the binaries land
/// in `examples/target/x86_64-unknown-linux-gnu/release/`.
pub(crate) fn build_native_examples(names: &[&str]) -> Result {
    let mut command = cargo();
    command.current_dir(root().join("examples")).args([
        "build",
        "--release",
        "--target",
        "x86_64-unknown-linux-gnu",
        "--config",
        "unstable.build-std=[]",
    ]);
    for name in names {
        command.args(["--bin", name]);
    }
    run_command(&mut command)
}

/// Packages of the examples' workspace with logic of their own that has
/// host unit tests: the `httpd` library, `kvbench`'s tree, and `compat/socket2`'s address
/// conversions.
const EXAMPLE_LIBRARIES: [&str; 3] = ["httpd", "socket2", "kvbench"];

/// Run the unit tests of the examples' workspace on the host.
fn test_example_libraries() -> Result {
    let mut command = cargo();
    command.current_dir(root().join("examples")).args([
        "test",
        "--quiet",
        "--target",
        "x86_64-unknown-linux-gnu",
        "--config",
        "unstable.build-std=[]",
        "--lib",
    ]);
    for name in EXAMPLE_LIBRARIES {
        command.args(["-p", name]);
    }
    run_command(&mut command)
}

fn build_all() -> Result<PathBuf> {
    install_host_tools()?;
    let cli = build_cli()?;
    build_images(&EXAMPLES)?;
    build_instrumented(&INSTRUMENTED_EXAMPLES)?;
    build_native_examples(&NATIVE_EXAMPLES)?;
    linux::build()?;
    bench::build_benches(&[])?;
    Ok(cli)
}

/// `./x run [OPTS] NAME [-- ARGS]`: options before NAME go to `eremite run`.
fn run(args: &[String]) -> Result {
    let (before, guest_args) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[][..]),
    };
    let (name, options) = before.split_last().ok_or_else(usage)?;
    let cli = build_cli()?;
    let image = build_image(name)?;
    let status = Command::new(cli)
        .arg("run")
        .args(options)
        .arg(&image)
        .arg("--")
        .args(guest_args)
        .status()
        .map_err(|e| format!("cannot start eremite: {e}"))?;
    // Pass the guest's exit code on, as the CLI does.
    std::process::exit(status.code().unwrap_or(1));
}

/// Build everything the guest tests boot, run every host and guest test
/// of the workspace, then every benchmark once in quick mode (they must
/// produce well-formed results, so they cannot rot).
fn test(extra: &[String]) -> Result {
    build_all()?;
    run_command(cargo().args(["test", "--workspace"]).args(extra))?;
    test_example_libraries()?;
    bench::bench(&["--quick".to_owned()])
}

/// Host tools the tests and the quick benchmarks call (with the flag that
/// makes each print its version), by Debian package: `cpio` (initrd
/// interoperability), `tar` (initrd from a tar archive), `ip` (network
/// namespaces and tap devices), `qemu-system-x86_64` (the second
/// hypervisor, `tests/tests/qemu.rs`), `wrk` (the `net` group's HTTP
/// load), `musl-gcc` and `gcc` (the C programs of the Linux-ABI tests),
/// `g++` and `gfortran` (the C++ and Fortran examples), `go` (the Go
/// examples, Debian's golang-go), `sqlite3`,
/// `redis-server` with `redis-cli` and `redis-benchmark`, `memcached`
/// with `memcslap`, `nginx` (unmodified Debian programs the tests run),
/// `passt` (user-mode networking), `strace` (what the VMM asks of the
/// host).
const HOST_TOOLS: [(&str, &str, &str); 20] = [
    ("cpio", "--version", "cpio"),
    ("tar", "--version", "tar"),
    ("ip", "-V", "iproute2"),
    ("qemu-system-x86_64", "--version", "qemu-system-x86"),
    ("wrk", "-v", "wrk"),
    ("musl-gcc", "--version", "musl-tools"),
    ("gcc", "--version", "gcc"),
    ("g++", "--version", "g++"),
    ("gfortran", "--version", "gfortran"),
    ("go", "version", "golang-go"),
    ("sqlite3", "--version", "sqlite3"),
    ("redis-server", "--version", "redis-server"),
    ("redis-cli", "--version", "redis-tools"),
    ("memcached", "-V", "memcached"),
    ("memcslap", "--version", "libmemcached-tools"),
    ("nginx", "-v", "nginx-light"),
    ("passt", "--version", "passt"),
    ("strace", "-V", "strace"),
    ("uftrace", "--version", "uftrace"),
    ("gdb", "--version", "gdb"),
];

/// Install the missing host tools with apt-get (the tests run as root on
/// the machines this project targets).
pub(crate) fn install_host_tools() -> Result {
    install_tools(&HOST_TOOLS)
}

/// Install the packages of `tools` (a command, its version flag, its
/// Debian package) whose command does not run.
pub(crate) fn install_tools(tools: &[(&str, &str, &str)]) -> Result {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(tool, version, _)| {
            // Present if it runs at all (`wrk -v` exits with 1).
            Command::new(tool)
                .arg(version)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_err()
        })
        .map(|(_, _, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let install = || {
        run_command(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends"])
                .args(&missing),
        )
    };
    install().or_else(|_| {
        run_command(Command::new("apt-get").arg("update"))?;
        install()
    })
}

/// The fuzz targets in `fuzz/fuzz_targets/`.
const FUZZ_TARGETS: [&str; 7] = [
    "cpio_entries",
    "vfs_ops",
    "cmdline_params",
    "hypercall_requests",
    "elf_images",
    "net_frames",
    "snapshot_states",
];

/// `./x fuzz TARGET [SECONDS]`: run one target with libFuzzer (default
/// 60 s). Needs `cargo install cargo-fuzz`.
fn fuzz(args: &[String]) -> Result {
    let (target, seconds) = match args {
        [target] => (target.as_str(), "60"),
        [target, seconds] => (target.as_str(), seconds.as_str()),
        _ => {
            return Err(format!(
                "usage: ./x fuzz TARGET [SECONDS] (targets: {})",
                FUZZ_TARGETS.join(", ")
            ));
        }
    };
    if !FUZZ_TARGETS.contains(&target) {
        return Err(format!(
            "no fuzz target `{target}` (targets: {})",
            FUZZ_TARGETS.join(", ")
        ));
    }
    seconds
        .parse::<u64>()
        .map_err(|_| format!("`{seconds}` is not a number of seconds"))?;
    // Start from the checked-in seeds (a valid archive gets the fuzzer past
    // the magic and the hex header at once); the corpus itself is not kept.
    let corpus = root().join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&corpus)
        .map_err(|e| format!("cannot create {}: {e}", corpus.display()))?;
    if let Ok(seeds) = std::fs::read_dir(root().join("fuzz/seeds").join(target)) {
        for seed in seeds.flatten() {
            let _ = std::fs::copy(seed.path(), corpus.join(seed.file_name()));
        }
    }
    run_command(
        cargo()
            .current_dir(root().join("fuzz"))
            .args(["fuzz", "run", target, "--"])
            .arg(format!("-max_total_time={seconds}")),
    )
}

fn check() -> Result {
    run_command(cargo().args(["fmt", "--all", "--check"]))?;
    for dir in ["kernel", "eremite", "examples", "benches", "fuzz"] {
        run_command(
            cargo()
                .current_dir(root().join(dir))
                .args(["fmt", "--all", "--check"]),
        )?;
    }
    run_command(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    for dir in ["kernel", "examples", "benches"] {
        run_command(cargo().current_dir(root().join(dir)).args([
            "clippy",
            "--release",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    Ok(())
}
