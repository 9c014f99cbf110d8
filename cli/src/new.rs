//! `eremite new NAME [--tokio]`: a Cargo project that builds for Linux
//! and for eremite from one `Cargo.toml`, with eremite as the hermit
//! target's runner (README, "`cargo run` and `cargo test` in the VM").
//!
//! It writes `Cargo.toml` (the `eremite` crate of the checkout this
//! binary was built from), the checkout's `rust-toolchain.toml`,
//! `.cargo/config.toml` (the runner and the `vm-run`, `vm-test`,
//! `vm-build` aliases) and a `src/main.rs` with a test. With `--tokio`
//! the program uses tokio, and `eremite compat` makes the patched tokio
//! and mio in `target/eremite-compat/`, which only the `vm-*` aliases
//! use: native builds keep crates.io's releases.

use std::path::{Path, PathBuf};

/// The checkout's `rust-toolchain.toml`: the nightly images need.
const TOOLCHAIN: &str = include_str!("../../rust-toolchain.toml");

/// The `eremite` crate of the checkout this binary was built from.
fn eremite_crate() -> Result<PathBuf, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../eremite");
    path.canonicalize().map_err(|_| {
        format!(
            "eremite new needs the eremite checkout this binary was built from, and {} is gone",
            path.display()
        )
    })
}

const MAIN_RS: &str = r#"use eremite as _;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("Hello from NAME, with arguments {args:?}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn adds() {
        assert_eq!(1 + 1, 2);
    }
}
"#;

const TOKIO_MAIN_RS: &str = r#"use eremite as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() {
    // An echo over TCP on the loopback, inside the VM.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buffer = [0; 64];
        let n = socket.read(&mut buffer).await.unwrap();
        socket.write_all(&buffer[..n]).await.unwrap();
    });
    let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
    client.write_all(b"hello").await.unwrap();
    let mut reply = [0; 5];
    client.read_exact(&mut reply).await.unwrap();
    println!("NAME: tokio echoed {}", String::from_utf8_lossy(&reply));
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn sleeps() {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}
"#;

/// Make the project `dir`; `make_compat` makes the patched crates in a
/// directory and returns their `[patch]` section.
pub(crate) fn new(
    dir: &Path,
    has_tokio: bool,
    make_compat: impl FnOnce(&Path) -> Result<String, String>,
) -> Result<(), String> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| {
            n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                && n.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        })
        .ok_or_else(|| {
            format!(
                "{}: a package name is a letter, then letters, digits, - and _",
                dir.display()
            )
        })?;
    if dir.exists() {
        return Err(format!("{} exists already", dir.display()));
    }
    let eremite = eremite_crate()?;
    let runner =
        std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let write = |path: &str, text: &str| {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    let tokio = if has_tokio {
        let version = eremite_compat::PATCHED
            .iter()
            .find(|p| p.name == "tokio")
            .map_or("1", |p| p.version);
        format!(
            "# The release eremite carries patches for (`eremite compat`).\n\
             tokio = {{ version = \"={version}\", features = [\"rt-multi-thread\", \"net\", \"io-util\", \"macros\", \"time\", \"sync\"] }}\n"
        )
    } else {
        String::new()
    };
    write(
        "Cargo.toml",
        &format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [dependencies]\n\
             # The library OS, linked into hermit builds only (empty elsewhere).\n\
             eremite = {{ path = \"{}\" }}\n{tokio}\n\
             # Line tables in release builds: backtraces with files and lines.\n\
             [profile.release]\ndebug = \"line-tables-only\"\n",
            eremite.display()
        ),
    )?;
    write("rust-toolchain.toml", TOOLCHAIN)?;
    write(".gitignore", "/target\n")?;
    let main = if has_tokio { TOKIO_MAIN_RS } else { MAIN_RS };
    write("src/main.rs", &main.replace("NAME", name))?;
    let patch = if has_tokio {
        make_compat(&dir.join("target/eremite-compat"))?;
        " --config target/eremite-compat/patch.toml"
    } else {
        ""
    };
    let hermit = format!("--target x86_64-unknown-hermit -Zbuild-std=std,panic_abort{patch}");
    write(
        ".cargo/config.toml",
        &format!(
            "# Made by `eremite new`. `cargo run`, `cargo test`: Linux, as always;\n\
             # `cargo vm-run`, `cargo vm-test`, `cargo vm-build`: the same program as\n\
             # an eremite image, booted by eremite (each test in a VM of its own).\n\
             # EREMITE_MEMORY and EREMITE_CPUS set the VM's memory and vCPUs.\n\
             [target.x86_64-unknown-hermit]\nrunner = \"{} run\"\n\n\
             [alias]\nvm-run = \"run {hermit}\"\nvm-test = \"test {hermit}\"\nvm-build = \"build {hermit}\"\n",
            runner.display()
        ),
    )?;
    println!(
        "made {}: `cargo vm-run -- ARGS` runs it in a VM, `cargo vm-test` tests it there; `cargo run` and `cargo test` stay native",
        dir.display()
    );
    Ok(())
}
