//! "Run your own program", exactly as the README tells a user: a crate
//! outside this repository depends on `eremite` by path, copies the
//! toolchain file, builds for x86_64-unknown-hermit with build-std, and
//! boots with `eremite run`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use eremite_tests::{boot_image, root, run_command};

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

const TOKIO_MAIN_RS: &str = r#"use eremite as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = [0; 5];
        conn.read_exact(&mut buf).await.unwrap();
        conn.write_all(&buf).await.unwrap();
    });
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client.write_all(b"hello").await.unwrap();
    let mut got = [0; 5];
    client.read_exact(&mut got).await.unwrap();
    server.await.unwrap();
    println!("tokio echoed {}", std::str::from_utf8(&got).unwrap());
}
"#;

#[test]
fn a_tokio_program_outside_the_repository_builds_with_eremite_compat_and_runs() {
    let dir = std::env::temp_dir().join(format!("eremite-own-tokio-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let manifest = format!(
        "[package]\nname = \"mytokio\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
         [dependencies]\neremite = {{ path = \"{}\" }}\n\
         tokio = {{ version = \"=1.54.1\", features = [\"rt-multi-thread\", \"net\", \"io-util\", \"macros\"] }}\n\n\
         [workspace]\n",
        root().join("eremite").display()
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(dir.join("src/main.rs"), TOKIO_MAIN_RS).unwrap();
    std::fs::copy(
        root().join("rust-toolchain.toml"),
        dir.join("rust-toolchain.toml"),
    )
    .unwrap();
    // As the README says: the patched crates, then a hermit build that
    // takes them.
    let compat = dir.join("target/eremite-compat");
    eremite_tests::eremite_cli(&["compat", compat.to_str().unwrap()]).expect_code(0);
    let config = compat.join("patch.toml");
    build_for_hermit(&dir, &["--config".as_ref(), config.as_os_str()]);
    let image = dir.join("target/x86_64-unknown-hermit/release/mytokio");
    let run = boot_image(&image, &["--cpus", "2"], &[]);
    run.expect_code(0);
    assert!(run.stdout.contains("tokio echoed hello"), "{run}");
    std::fs::remove_dir_all(&dir).unwrap();
}
