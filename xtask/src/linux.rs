//! The Linux programs the Linux-ABI tests and benchmarks boot: C programs
//! from `examples/c` built with musl (Debian's musl-tools), `-static` and
//! `-static-pie`, and with the host's gcc and glibc, dynamically linked;
//! Go programs from `examples/go` built with the host's Go; and Rust examples built with stable Rust
//! for `x86_64-unknown-linux-musl`, the toolchain and target installed
//! with rustup (the pinned nightly has no musl target). Nothing in them
//! knows eremite.

use std::path::PathBuf;
use std::process::Command;

use crate::{Result, root, run_command};

/// C programs in `examples/c`, by name (`NAME.c`).
pub(crate) const C_PROGRAMS: [&str; 13] = [
    "hello",
    "pthreads",
    "redzone",
    "oneprocess",
    "sockets",
    "readiness",
    "signals",
    "echo",
    "fsdiff",
    "memory",
    "wildptr",
    "probe",
    "mapstress",
];
/// Programs in `examples/c` built only against the host's glibc, as
/// HermitCore's C, C++, Fortran and OpenMP support: the source file, the
/// compiler and its flags; the binary is `NAME-glibc`.
const GLIBC_PROGRAMS: [(&str, &str, &[&str]); 3] = [
    ("openmp.c", "gcc", &["-O2", "-fopenmp"]),
    ("iostreams.cpp", "g++", &["-O2", "-pthread"]),
    ("matrix.f90", "gfortran", &["-O2"]),
];

/// Rust examples built for Linux, by binary name.
pub(crate) const RUST_PROGRAMS: [&str; 7] = [
    "hello", "threads", "fsdiff", "rayon", "httpd", "fault", "busy",
];

const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";
/// Where Debian's musl-dev keeps musl's start files and libc.a.
const MUSL_LIB: &str = "/usr/lib/x86_64-linux-musl";

/// Where the C programs land: `NAME` (static), `NAME-pie` and
/// `NAME-glibc` (dynamic).
pub(crate) fn c_dir() -> PathBuf {
    root().join("examples/target/c")
}

/// Build every Linux program.
pub(crate) fn build() -> Result {
    build_c()?;
    build_go()?;
    build_rust()
}

/// Go programs in `examples/go`, by directory: built with the host's Go
/// (Debian's golang-go), default flags, into `examples/target/go/NAME`.
pub(crate) const GO_PROGRAMS: [&str; 2] = ["echo", "goroutines"];

/// Where the Go programs land.
pub(crate) fn go_dir() -> PathBuf {
    root().join("examples/target/go")
}

fn build_go() -> Result {
    let out = go_dir();
    // Go's caches under the target directory: the tests run as root with
    // whatever HOME, and a clean clone builds from nothing.
    let cache = root().join("examples/target/go-cache");
    for name in GO_PROGRAMS {
        run_command(
            Command::new("go")
                .current_dir(root().join("examples/go"))
                .env("GOCACHE", cache.join("build"))
                .env("GOPATH", cache.join("path"))
                .env("GOFLAGS", "-mod=mod")
                .args(["build", "-o"])
                .arg(out.join(name))
                .arg(format!("./{name}")),
        )?;
    }
    Ok(())
}

fn gcc_file(name: &str) -> Result<String> {
    let out = Command::new("gcc")
        .arg(format!("-print-file-name={name}"))
        .output()
        .map_err(|e| format!("cannot run gcc: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn build_c() -> Result {
    let out = c_dir();
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let source_dir = root().join("examples/c");
    let (crtbegin, crtend, libgcc) = (
        gcc_file("crtbeginS.o")?,
        gcc_file("crtendS.o")?,
        gcc_file("libgcc.a")?,
    );
    for (file, compiler, flags) in GLIBC_PROGRAMS {
        let name = file.split('.').next().unwrap_or(file);
        run_command(
            Command::new(compiler)
                .args(flags)
                .arg("-o")
                .arg(out.join(format!("{name}-glibc")))
                .arg(source_dir.join(file)),
        )?;
    }
    for name in C_PROGRAMS {
        let source = source_dir.join(format!("{name}.c"));
        let binary = out.join(name);
        run_command(
            Command::new("musl-gcc")
                .args(["-static", "-O2", "-pthread", "-o"])
                .arg(&binary)
                .arg(&source),
        )?;
        // The same source against the host's glibc, dynamically linked
        // (a PIE, Debian's default): the interpreter and the libraries
        // come from the host at run time.
        run_command(
            Command::new("gcc")
                .args(["-O2", "-pthread", "-o"])
                .arg(out.join(format!("{name}-glibc")))
                .arg(&source),
        )?;
        // musl-gcc's specs know no -static-pie: compile position-
        // independent, then link musl's rcrt1.o and libc.a by hand.
        let object = out.join(format!("{name}.o"));
        run_command(
            Command::new("musl-gcc")
                .args(["-O2", "-fPIE", "-pthread", "-c", "-o"])
                .arg(&object)
                .arg(&source),
        )?;
        run_command(
            Command::new("gcc")
                .args([
                    "-nostdlib",
                    "-nostartfiles",
                    "-static-pie",
                    "-Wl,--no-dynamic-linker",
                    "-o",
                ])
                .arg(out.join(format!("{name}-pie")))
                .arg(format!("{MUSL_LIB}/rcrt1.o"))
                .arg(format!("{MUSL_LIB}/crti.o"))
                .arg(&crtbegin)
                .arg(&object)
                .arg(format!("{MUSL_LIB}/libc.a"))
                .arg(&libgcc)
                .arg(&crtend)
                .arg(format!("{MUSL_LIB}/crtn.o")),
        )?;
    }
    Ok(())
}

/// Build the benchmark programs `names` from `benches/` for Linux (musl,
/// stable Rust): `benches/target/x86_64-unknown-linux-musl/release/`.
pub(crate) fn build_benches(names: &[&str]) -> Result {
    install_stable()?;
    let mut command = stable_cargo("benches");
    for name in names {
        command.args(["--bin", name]);
    }
    run_command(&mut command)
}

/// Where a benchmark program built by [`build_benches`] is.
pub(crate) fn bench_path(name: &str) -> PathBuf {
    root()
        .join("benches/target")
        .join(MUSL_TARGET)
        .join("release")
        .join(name)
}

/// `cargo +stable build --release` for musl in `dir` of the checkout.
fn stable_cargo(dir: &str) -> Command {
    let mut command = Command::new("cargo");
    command
        .current_dir(root().join(dir))
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .args(["+stable", "build", "--release", "--target", MUSL_TARGET]);
    command
}

/// Stable Rust with the musl target (quick when it is there already).
fn install_stable() -> Result {
    run_command(
        Command::new("rustup")
            .stdout(std::process::Stdio::null())
            .args([
                "toolchain",
                "install",
                "stable",
                "--profile",
                "minimal",
                "--target",
                MUSL_TARGET,
                "--no-self-update",
            ]),
    )
}

fn build_rust() -> Result {
    install_stable()?;
    let mut command = stable_cargo("examples");
    for name in RUST_PROGRAMS {
        command.args(["--bin", name]);
    }
    run_command(&mut command)?;
    // The registry's tokio and mio, unpatched (its own workspace).
    run_command(&mut stable_cargo("examples/unpatched"))
}
