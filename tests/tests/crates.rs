//! docs/crates.md stays true: every crate's program in `examples/crates/`
//! is built as a hermit image and booted; those the table says fail are
//! built for x86_64-unknown-linux-musl (stable Rust) and run through the
//! Linux ABI; what happens must be what the table says.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use eremite_tests::{boot_image, require_kvm, root, run_command};

/// One row of the table: the program's directory, and its status as a
/// hermit image and as a Linux program (`-`: not tried).
struct Row {
    program: String,
    hermit: String,
    linux: String,
}

fn table() -> Vec<Row> {
    let text = std::fs::read_to_string(root().join("docs/crates.md")).expect("docs/crates.md");
    text.lines()
        .skip_while(|l| !l.starts_with("<!-- crates table"))
        .filter(|l| l.starts_with("| ") && !l.starts_with("| crate "))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            Row {
                program: cells[2].to_owned(),
                hermit: cells[3].to_owned(),
                linux: cells[4].to_owned(),
            }
        })
        .collect()
}

/// `cargo ARGS` in examples/crates with `toolchain` (`None`: the pinned
/// one), as a user would run it, not with the settings `cargo test`
/// passes its children. Whether it built everything does not matter:
/// what each program does is checked.
fn cargo(toolchain: Option<&str>, args: &[&str]) {
    let inherited: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| !(k.starts_with("CARGO") || k.starts_with("RUST")))
        .collect();
    let mut command = Command::new("cargo");
    command
        .current_dir(root().join("examples/crates"))
        .env_clear()
        .envs(inherited);
    if let Some(toolchain) = toolchain {
        command.arg(toolchain);
    }
    run_command(command.args(args).arg("--keep-going"));
}

/// What the program `binary` does in eremite.
fn status(binary: &Path, program: &str) -> String {
    if !binary.exists() {
        return "fails to build".into();
    }
    let run = boot_image(binary, &["--cpus", "2", "-e", "RUST_BACKTRACE=0"], &[]);
    let is_ok = run.code == 0 && run.stdout.contains(&format!("ok {program}"));
    if is_ok {
        "works".into()
    } else {
        eprintln!("{program} ({}):\n{run}", binary.display());
        "fails when run".into()
    }
}

fn binary_name(program: &str) -> String {
    format!("crate-{}", program.replace('_', "-"))
}

#[test]
fn the_crate_table_says_what_happens() {
    require_kvm();
    let rows = table();
    assert!(rows.len() >= 19, "the table has {} rows", rows.len());
    let target = root().join("examples/crates/target");
    // Stale binaries must not pass for fresh ones.
    for dir in [
        "x86_64-unknown-hermit/debug",
        "x86_64-unknown-linux-musl/debug",
    ] {
        for row in &rows {
            let _ = std::fs::remove_file(target.join(dir).join(binary_name(&row.program)));
        }
    }
    cargo(None, &["build"]);
    let linux: Vec<String> = rows
        .iter()
        .filter(|r| r.linux != "-")
        .map(|r| binary_name(&r.program))
        .collect();
    if !linux.is_empty() {
        let mut args = vec!["build", "--target", "x86_64-unknown-linux-musl"];
        for package in &linux {
            args.extend(["-p", package.as_str()]);
        }
        cargo(Some("+stable"), &args);
    }
    let mut wrong = Vec::new();
    for row in &rows {
        let name = binary_name(&row.program);
        let routes = [
            ("a hermit image", "x86_64-unknown-hermit/debug", &row.hermit),
            (
                "a Linux program",
                "x86_64-unknown-linux-musl/debug",
                &row.linux,
            ),
        ];
        for (what, dir, expected) in routes.into_iter().filter(|(_, _, e)| *e != "-") {
            let observed = status(&target.join(dir).join(&name), &row.program);
            if observed != *expected {
                wrong.push(format!(
                    "{}: as {what} it {observed}, the table says {expected}",
                    row.program
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/crates.md is wrong:\n{}",
        wrong.join("\n")
    );
}
