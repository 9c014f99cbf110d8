//! "Run your own program", exactly as the README tells a user: a crate
//! outside this repository depends on `eremite` by path, copies the
//! toolchain file, builds for x86_64-unknown-hermit with build-std, and
//! boots with `eremite run`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use eremite_tests::{backtrace_frames, boot_image, root, run_command};

const MAIN_RS: &str = r#"use eremite as _;
use std::collections::HashMap;

fn main() {
    let words = ["apple", "banana", "apple", "cherry", "banana", "apple"];
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for word in words {
        *counts.entry(word).or_default() += 1;
    }
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort();
    println!("my own program counted {counts:?}");
    let name = std::env::args().nth(1).unwrap_or_default();
    println!("hello, {name}");
}
"#;

/// A fresh directory outside the repository.
fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("eremite-own-program-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    assert!(!dir.starts_with(root()));
    dir
}

fn write_app(dir: &Path) {
    let manifest = format!(
        "[package]\nname = \"myapp\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
         [dependencies]\neremite = {{ path = \"{}\" }}\n\n[workspace]\n",
        root().join("eremite").display()
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(dir.join("src/main.rs"), MAIN_RS).unwrap();
    std::fs::copy(
        root().join("rust-toolchain.toml"),
        dir.join("rust-toolchain.toml"),
    )
    .unwrap();
}

/// `cargo build --release --target x86_64-unknown-hermit
/// -Zbuild-std=std,panic_abort EXTRA` in `dir`, which must succeed, as a
/// user would run it from a shell: not with the settings that `cargo test`
/// passes to its children.
fn build_for_hermit(dir: &Path, extra: &[&std::ffi::OsStr]) {
    let inherited: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| {
            !(k.starts_with("CARGO") || k.starts_with("RUST") || k == "__CARGO_FIX_YOLO")
        })
        .collect();
    let build = run_command(
        Command::new("cargo")
            .current_dir(dir)
            .env_clear()
            .envs(inherited)
            .args(["build", "--release", "--target", "x86_64-unknown-hermit"])
            .arg("-Zbuild-std=std,panic_abort")
            .args(extra),
    );
    build.expect_code(0);
}

#[test]
fn a_program_outside_the_repository_builds_and_runs() {
    let dir = scratch_dir();
    write_app(&dir);
    build_for_hermit(&dir, &[]);
    let image = dir.join("target/x86_64-unknown-hermit/release/myapp");
    let run = boot_image(&image, &[], &["world"]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains(r#"my own program counted [("apple", 3), ("banana", 2), ("cherry", 1)]"#),
        "{run}"
    );
    assert!(run.stdout.contains("hello, world"), "{run}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `eremite new --tokio`: a tokio project whose `cargo vm-run` builds
/// with eremite's patched tokio (made by `eremite compat` into the
/// project) and boots, and whose native `cargo run` uses crates.io's.
#[test]
fn eremite_new_makes_a_tokio_project_for_the_vm_and_for_linux() {
    let parent = std::env::temp_dir().join(format!("eremite-own-tokio-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&parent);
    std::fs::create_dir_all(&parent).unwrap();
    let dir = parent.join("mytokio");
    eremite_tests::eremite_cli(&["new", "--tokio", dir.to_str().unwrap()]).expect_code(0);
    let again = eremite_tests::eremite_cli(&["new", dir.to_str().unwrap()]);
    again.expect_code(1);
    assert!(again.stderr.contains("exists already"), "{again}");
    let vm = cargo_in(
        &dir,
        &["vm-run", "--release", "-q"],
        &[("EREMITE_CPUS", "2")],
    );
    vm.expect_code(0);
    assert!(vm.stdout.contains("mytokio: tokio echoed hello"), "{vm}");
    let tests = cargo_in(&dir, &["vm-test", "--release"], &[]);
    tests.expect_code(0);
    assert!(
        tests.stdout.contains("test result: ok. 1 passed"),
        "{tests}"
    );
    let native = cargo_in(&dir, &["run", "-q"], &[]);
    native.expect_code(0);
    assert!(
        native.stdout.contains("mytokio: tokio echoed hello"),
        "{native}"
    );
    std::fs::remove_dir_all(&parent).unwrap();
}

const TWO_TARGETS_MAIN_RS: &str = r#"use eremite as _;

#[inline(never)]
fn explode(items: &[u32]) -> u32 {
    items.first().copied().expect("the list was empty")
}

#[inline(never)]
fn crash_here(at: usize) -> u64 {
    // SAFETY: none; this reads address 8 to fault on purpose.
    unsafe { std::ptr::read_volatile(at as *const u64) }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("panic") => println!("{}", explode(&[])),
        Some("fault") => println!("{}", crash_here(std::hint::black_box(8))),
        _ => {}
    }
    std::fs::write("data.txt", b"hello").unwrap();
    let file = std::fs::OpenOptions::new().write(true).open("data.txt").unwrap();
    // A call std for hermit lacks; eremite's works on both targets.
    eremite::fs::set_len(&file, 2).unwrap();
    let len = std::fs::metadata("data.txt").unwrap().len();
    println!("args {args:?}, length {len}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn passes() {
        assert_eq!(1 + 1, 2);
    }

    #[test]
    fn also_passes() {
        println!("this line is shown only with --nocapture");
    }

    #[test]
    fn fails() {
        assert_eq!(1 + 1, 3, "arithmetic is broken");
    }

    #[test]
    #[ignore]
    fn ignored() {}

    #[test]
    #[should_panic(expected = "boom")]
    fn panics_as_it_should() {
        panic!("boom!");
    }
}
"#;

/// `cargo ARGS` in `dir`, with a clean environment as in
/// [`build_for_hermit`] plus `env`. The projects `eremite new` makes share
/// one target directory in the repository's, so the hermit std their
/// profile asks for is built once for all of them (cargo's lock on the
/// directory orders the builds) and nothing is left in the temporary one.
fn cargo_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> eremite_tests::Run {
    let shared_target = root().join("target/own-program");
    let inherited: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| {
            !(k.starts_with("CARGO") || k.starts_with("RUST") || k == "__CARGO_FIX_YOLO")
        })
        .collect();
    run_command(
        Command::new("cargo")
            .current_dir(dir)
            .env_clear()
            .envs(inherited)
            .env("CARGO_TARGET_DIR", shared_target)
            .envs(env.iter().copied())
            .args(args),
    )
}

/// The set-up `eremite new` makes (README): `eremite` as a plain
/// dependency, eremite as the hermit target's runner, and the
/// `vm-run`/`vm-test` aliases; `cargo run`/`cargo test` stay native.
#[test]
fn one_crate_runs_and_tests_in_the_vm_and_natively_as_cargo_does() {
    let parent = std::env::temp_dir().join(format!("eremite-own-two-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&parent);
    std::fs::create_dir_all(&parent).unwrap();
    let dir = parent.join("two");
    eremite_tests::eremite_cli(&["new", dir.to_str().unwrap()]).expect_code(0);
    std::fs::write(dir.join("src/main.rs"), TWO_TARGETS_MAIN_RS).unwrap();

    // In the VM: the program's arguments as cargo passes them (a release
    // build: no frame pointers, line tables only).
    let run = cargo_in(&dir, &["vm-run", "--release", "-q", "--", "a", "b"], &[]);
    run.expect_code(0);
    assert!(run.stdout.contains(r#"args ["a", "b"], length 2"#), "{run}");
    // A panic's backtrace with RUST_BACKTRACE=1, as natively, and a page
    // fault's, named with files and lines.
    let panic = cargo_in(
        &dir,
        &["vm-run", "--release", "-q", "--", "panic"],
        &[("RUST_BACKTRACE", "1")],
    );
    assert!(panic.stderr.contains("the list was empty"), "{panic}");
    let frames = backtrace_frames(&panic.stderr);
    assert!(
        frames
            .iter()
            .any(|f| f.contains("in two::explode at src/main.rs:")),
        "{panic}"
    );
    assert!(
        frames
            .iter()
            .any(|f| f.contains("in two::main at src/main.rs:")),
        "{panic}"
    );
    let fault = cargo_in(&dir, &["vm-run", "--release", "-q", "--", "fault"], &[]);
    assert!(fault.stderr.contains("CPU exception 14"), "{fault}");
    let frames = backtrace_frames(&fault.stderr);
    assert!(
        frames[0].contains("crash_here")
            || frames
                .iter()
                .any(|f| f.contains("two::crash_here at src/main.rs:")),
        "{fault}"
    );
    assert!(
        frames
            .iter()
            .any(|f| f.contains("in two::main at src/main.rs:")),
        "{fault}"
    );
    // Every test runs, one failing does not stop the others, the summary
    // is libtest's, and the failure's message is shown.
    let vm = cargo_in(&dir, &["vm-test", "--release"], &[]);
    vm.expect_code(101);
    for line in [
        "test tests::passes ... ok",
        "test tests::fails ... FAILED",
        "test tests::ignored ... ignored",
        "test tests::panics_as_it_should ... ok",
        "arithmetic is broken",
        "test result: FAILED. 3 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out",
    ] {
        assert!(vm.stdout.contains(line), "no {line:?}\n{vm}");
    }
    assert!(!vm.stdout.contains("shown only with --nocapture"), "{vm}");
    // A filter, and libtest's own flags after `--`.
    let some = cargo_in(
        &dir,
        &["vm-test", "--release", "passes", "--", "--skip", "also"],
        &[],
    );
    some.expect_code(0);
    assert!(
        some.stdout
            .contains("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 4 filtered out"),
        "{some}"
    );
    let shown = cargo_in(
        &dir,
        &["vm-test", "--release", "also_passes", "--", "--nocapture"],
        &[],
    );
    shown.expect_code(0);
    assert!(
        shown.stdout.contains("shown only with --nocapture"),
        "{shown}"
    );

    // Natively, with no change: the same results.
    let native = cargo_in(&dir, &["test"], &[]);
    native.expect_code(101);
    assert!(
        native.stdout.contains(
            "test result: FAILED. 3 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out"
        ),
        "{native}"
    );
    let native_run = cargo_in(&dir, &["run", "-q", "--", "a", "b"], &[]);
    native_run.expect_code(0);
    assert!(
        native_run.stdout.contains(r#"args ["a", "b"], length 2"#),
        "{native_run}"
    );
    std::fs::remove_dir_all(&parent).unwrap();
}
