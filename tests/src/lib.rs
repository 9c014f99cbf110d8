//! Helpers for the guest integration tests: boot `examples/*` through the
//! real `eremite` CLI (`target/release/eremite`) and look at what came out.
//!
//! `./x test` builds the CLI and every example before running the tests;
//! a test that finds them missing, or finds no `/dev/kvm`, fails and says
//! why, it never passes silently.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .into()
}

/// The release CLI, which `./x test` builds.
pub fn eremite() -> PathBuf {
    let path = root().join("target/release/eremite");
    built(path, "builds it")
}

/// `path`, which `./x test` builds (how: `builds_what`), or a failed test
/// that says so.
fn built(path: PathBuf, builds_what: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run the tests with `./x test`, which {builds_what}",
        path.display()
    );
    path
}

/// The image of `examples/NAME`, which `./x test` builds.
pub fn image(name: &str) -> PathBuf {
    let path = root()
        .join("examples/target/x86_64-unknown-hermit/release")
        .join(name);
    built(path, "builds every example")
}

/// `examples/NAME` built with every function instrumented for the
/// tracer (`-Zinstrument-mcount`), which `./x test` builds.
pub fn instrumented_image(name: &str) -> PathBuf {
    let path = root()
        .join("examples/target/instrumented/x86_64-unknown-hermit/release")
        .join(name);
    built(path, "builds it")
}

/// `examples/NAME` built with stable Rust for `x86_64-unknown-linux-musl`
/// (an unmodified Linux program), which `./x test` builds.
pub fn linux_image(name: &str) -> PathBuf {
    let path = root()
        .join("examples/target/x86_64-unknown-linux-musl/release")
        .join(name);
    built(path, "builds it with stable Rust")
}

/// `examples/c/NAME.c` built with musl-gcc (`-static`, or `-static-pie`
/// if `is_pie`), which `./x test` builds.
pub fn c_image(name: &str, is_pie: bool) -> PathBuf {
    let file = if is_pie {
        format!("{name}-pie")
    } else {
        name.to_owned()
    };
    let path = root().join("examples/target/c").join(file);
    built(path, "builds it with musl-gcc")
}

/// `examples/c/NAME.c` built with the host's gcc against glibc,
/// dynamically linked (`NAME-glibc`), which `./x test` builds.
pub fn glibc_image(name: &str) -> PathBuf {
    let path = root()
        .join("examples/target/c")
        .join(format!("{name}-glibc"));
    built(path, "builds it with gcc")
}

/// `examples/go/NAME` built with the host's Go (`./x test` builds it).
pub fn go_image(name: &str) -> PathBuf {
    let path = root().join("examples/target/go").join(name);
    built(path, "builds it with Go")
}

/// `examples/unpatched/NAME`: built for `x86_64-unknown-linux-musl` with
/// stable Rust against the registry's crates, unpatched (`./x test`
/// builds it).
pub fn unpatched_image(name: &str) -> PathBuf {
    let path = root()
        .join("examples/unpatched/target/x86_64-unknown-linux-musl/release")
        .join(name);
    built(path, "builds it with stable Rust")
}

/// Fail clearly where KVM is missing.
pub fn require_kvm() {
    assert!(
        Path::new("/dev/kvm").exists(),
        "this test boots a VM and needs /dev/kvm, which this machine does not have"
    );
}

/// What one run of the CLI produced.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from_output(output: Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The count at the end of the `--stats` line that starts with `label`.
    pub fn stat(&self, label: &str) -> u64 {
        self.stderr
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
            .unwrap_or_else(|| panic!("no `{label}` count in the --stats output\n{self}"))
    }

    /// Panic with everything the run printed unless it exited with `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code\n{self}");
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Run `eremite` with `args`.
pub fn eremite_cli(args: &[&str]) -> Run {
    let output = Command::new(eremite())
        .args(args)
        .output()
        .expect("cannot start eremite");
    Run::from_output(output)
}

/// `eremite run OPTIONS examples/NAME -- GUEST_ARGS`.
pub fn boot(name: &str, options: &[&str], guest_args: &[&str]) -> Run {
    boot_image(&image(name), options, guest_args)
}

/// The longest a guest in the tests may run: a hang fails its test
/// instead of stalling the suite.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// `eremite run OPTIONS IMAGE -- GUEST_ARGS`, killed (and the test failed)
/// after [`BOOT_TIMEOUT`].
pub fn boot_image(image: &Path, options: &[&str], guest_args: &[&str]) -> Run {
    boot_command(run_command_line(image, options, guest_args))
}

/// The command `eremite run OPTIONS IMAGE -- GUEST_ARGS`.
fn run_command_line(image: &Path, options: &[&str], guest_args: &[&str]) -> Command {
    let mut command = Command::new(eremite());
    add_run_args(&mut command, image, options, guest_args);
    command
}

/// Append `run OPTIONS IMAGE -- GUEST_ARGS` to a command that runs the
/// CLI (directly, or behind `ip netns exec` or `setpriv`).
fn add_run_args(command: &mut Command, image: &Path, options: &[&str], guest_args: &[&str]) {
    command
        .arg("run")
        .args(options)
        .arg(image)
        .arg("--")
        .args(guest_args);
}

/// The frames of the backtrace eremite printed in `stderr` after a crash
/// (`  #N ADDRESS in FUNCTION at FILE:LINE`).
pub fn backtrace_frames(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .skip_while(|l| !l.starts_with("eremite: backtrace"))
        .skip(1)
        .take_while(|l| l.starts_with("  #"))
        .collect()
}

/// `eremite ARGS` in the background (for subcommands other than `run`).
pub fn spawn_eremite(args: &[&str]) -> Guest {
    let mut command = Command::new(eremite());
    command.args(args);
    Guest::spawn(command)
}

/// [`boot_image`] in the background.
pub fn spawn_image(image: &Path, options: &[&str], guest_args: &[&str]) -> Guest {
    Guest::spawn(run_command_line(image, options, guest_args))
}

/// [`spawn_image`] with `env` added to eremite's environment.
pub fn spawn_image_env(
    image: &Path,
    options: &[&str],
    guest_args: &[&str],
    env: &[(&str, &Path)],
) -> Guest {
    let mut command = run_command_line(image, options, guest_args);
    command.envs(env.iter().copied());
    Guest::spawn(command)
}

/// [`spawn_image`] with no privileges: as user `nobody`, with every
/// capability dropped, so it cannot create a tap or a namespace or bind a
/// low port. This machine's `/dev/kvm` is root's alone (0600), so a copy of
/// its device node that anyone may open is bind-mounted over `/dev/kvm` in
/// a mount namespace of the run's own (the host's `/dev/kvm` is left as it
/// is). Needs root to set up, `unshare`, `setpriv` (util-linux).
pub fn spawn_unprivileged(image: &Path, options: &[&str], guest_args: &[&str]) -> Guest {
    let node = open_kvm_node();
    // `nobody` may not be able to reach the checkout (a clean clone in a
    // 0700 temporary directory, say): run links to the files from a
    // directory anyone can enter.
    let image = reachable_by_anyone(image);
    let cli = reachable_by_anyone(&eremite());
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount --bind \"$0\" /dev/kvm && exec setpriv --reuid=65534 --regid=65534 \
             --clear-groups --inh-caps=-all --bounding-set=-all -- \"$@\"",
        )
        .arg(&node)
        .arg(cli);
    add_run_args(&mut command, &image, options, guest_args);
    Guest::spawn(command)
}

/// A path to `file` that every user can reach: a hard link (or, across
/// file systems, a copy) in a directory of this test process's under the
/// temporary directory, mode 0755.
fn reachable_by_anyone(file: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!("eremite-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = file.file_name().expect("a file").to_string_lossy();
    let reachable = dir.join(format!("{n}-{name}"));
    if std::fs::hard_link(file, &reachable).is_err() {
        std::fs::copy(file, &reachable).unwrap();
    }
    std::fs::set_permissions(&reachable, std::fs::Permissions::from_mode(0o755)).unwrap();
    reachable
}

/// A device node for KVM (10:232) that anyone may open, in a directory
/// only root can enter (on `/tmp`: `/dev/shm` is mounted `nodev`): it is
/// reached only through the bind mount. Made once, kept for later runs.
fn open_kvm_node() -> PathBuf {
    let dir = std::env::temp_dir().join("eremite-kvm-node");
    let node = dir.join("kvm");
    if !node.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let made = run_command(
            Command::new("mknod")
                .args(["-m", "666"])
                .arg(&node)
                .args(["c", "10", "232"]),
        );
        assert!(
            made.code == 0 || node.exists(),
            "cannot make a KVM device node (root needed)\n{made}"
        );
    }
    node
}

/// Run `command`, which boots a VM, as [`boot_image`] does.
fn boot_command(command: Command) -> Run {
    Guest::spawn(command).wait()
}

/// A VM running in the background (for tests that talk to it).
pub struct Guest {
    child: std::process::Child,
    stdout: std::thread::JoinHandle<Vec<u8>>,
    /// What the guest printed on stdout so far.
    printed: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    stderr: std::thread::JoinHandle<Vec<u8>>,
    started: Instant,
}

impl Guest {
    fn spawn(mut command: Command) -> Self {
        require_kvm();
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start eremite");
        // Drain both pipes while it runs, so a chatty guest never blocks.
        let printed = std::sync::Arc::default();
        let stdout = drain_into(
            child.stdout.take().expect("piped stdout"),
            std::sync::Arc::clone(&printed),
        );
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        Self {
            child,
            stdout,
            printed,
            stderr,
            started: Instant::now(),
        }
    }

    /// Wait for the VM to end, at most [`BOOT_TIMEOUT`] after its start
    /// (then kill it and fail).
    pub fn wait(mut self) -> Run {
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("cannot wait for eremite") {
                break status;
            }
            if self.started.elapsed() > BOOT_TIMEOUT {
                let _ = self.child.kill();
                break self.child.wait().expect("cannot wait for eremite");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let run = Run::from_output(Output {
            status,
            stdout: self.stdout.join().expect("stdout reader"),
            stderr: self.stderr.join().expect("stderr reader"),
        });
        assert!(
            self.started.elapsed() <= BOOT_TIMEOUT,
            "the guest ran longer than {BOOT_TIMEOUT:?} (hung?)\n{run}"
        );
        run
    }

    /// Wait until the guest has printed `text` on stdout (at most 30 s,
    /// then fail): a server is ready once it says it listens, which no
    /// connection can tell when a proxy (passt) accepts for it.
    pub fn wait_for_output(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let printed = self.printed.lock().unwrap_or_else(|e| e.into_inner());
            if String::from_utf8_lossy(&printed).contains(text) {
                return;
            }
            drop(printed);
            assert!(
                Instant::now() < deadline,
                "the guest did not print {text:?} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// What the guest has printed on stdout so far.
    pub fn printed(&self) -> String {
        let printed = self.printed.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&printed).into_owned()
    }

    /// The `eremite` process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the VM still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kill the VM and return what it printed.
    pub fn kill(mut self) -> Run {
        let _ = self.child.kill();
        self.wait()
    }

    /// Run `talk`, the test's side of the conversation; if it fails,
    /// kill the VM and fail with what the guest printed as well.
    pub fn talk<T>(self, talk: impl FnOnce() -> T) -> (Self, T) {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(talk)) {
            Ok(answer) => (self, answer),
            Err(cause) => {
                let run = self.kill();
                let message = cause
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| cause.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                panic!("{message}\nthe guest, killed:\n{run}");
            }
        }
    }
}

/// Read `pipe` to its end on a thread of its own, appending to `into` as
/// it comes.
fn drain_into(
    mut pipe: impl Read + Send + 'static,
    into: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            into.lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(&chunk[..n]);
        }
        into.lock().unwrap_or_else(|e| e.into_inner()).clone()
    })
}

/// Read `pipe` to its end on a thread of its own.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Run any command and capture it.
pub fn run_command(command: &mut Command) -> Run {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    Run::from_output(output)
}

/// A network namespace made for one test (`ip netns add`), deleted on
/// drop: the network tests give the guest a tap inside it and talk only to
/// addresses inside it. Needs root and iproute2's `ip`; a test fails, and
/// says so, without them.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// A new, empty namespace (only `lo`, down).
    pub fn new() -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "eremite-it-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        Self { name }
    }

    /// A namespace with the tap `tap`, up, and the host side's address
    /// `address` (e.g. `10.0.0.1/24`) on it.
    pub fn with_tap(tap: &str, address: &str) -> Self {
        let ns = Self::new();
        ns.ip(&["tuntap", "add", "dev", tap, "mode", "tap"]);
        ns.ip(&["addr", "add", address, "dev", tap]);
        ns.ip(&["link", "set", tap, "up"]);
        ns
    }

    /// `ip -n NAME ARGS`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Whether the interface `name` exists in the namespace.
    pub fn has_link(&self, name: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.name, "link", "show", "dev", name])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// `eremite run OPTIONS examples/NAME -- GUEST_ARGS` inside the
    /// namespace (`ip netns exec`).
    pub fn boot(&self, name: &str, options: &[&str], guest_args: &[&str]) -> Run {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name])
            .arg(eremite())
            .arg("run")
            .args(options)
            .arg(image(name))
            .arg("--")
            .args(guest_args);
        boot_command(command)
    }

    /// [`NetNs::boot`] in the background.
    pub fn spawn(&self, name: &str, options: &[&str], guest_args: &[&str]) -> Guest {
        self.spawn_image(&image(name), options, guest_args)
    }

    /// [`NetNs::spawn`] of any image: a path rather than an example's name.
    pub fn spawn_image(&self, image: &Path, options: &[&str], guest_args: &[&str]) -> Guest {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(eremite());
        add_run_args(&mut command, image, options, guest_args);
        Guest::spawn(command)
    }

    /// Run `f` on a thread inside the namespace, so its sockets live
    /// there (and reach only the namespace's addresses).
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        use std::os::fd::AsFd;
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let ns = std::fs::File::open(&path)
                        .unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
                    // Moves only this thread, which ends with `f`.
                    rustix::thread::move_into_link_name_space(
                        ns.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .unwrap_or_else(|e| panic!("cannot enter {path}: {e}"));
                    f()
                })
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// `PROGRAM ARGS` inside the namespace (`ip netns exec`), captured.
    pub fn exec(&self, program: &str, args: &[&str]) -> Run {
        run_command(
            Command::new("ip")
                .args(["netns", "exec", &self.name, program])
                .args(args),
        )
    }

    /// `eremite ARGS` inside the namespace in the background (subcommands
    /// other than `run`, such as `restore`).
    pub fn spawn_eremite(&self, args: &[&str]) -> Guest {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name])
            .arg(eremite())
            .args(args);
        Guest::spawn(command)
    }

    /// `eremite ARGS` inside the namespace, for runs that fail before the
    /// guest starts.
    pub fn eremite_cli(&self, args: &[&str]) -> Run {
        run_command(
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .arg(eremite())
                .args(args),
        )
    }
}

impl Default for NetNs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Not `ip()`: a panic while unwinding would abort the test run.
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// `ip ARGS`, which must succeed.
fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (the network tests need iproute2): {e}"));
    assert!(
        output.status.success(),
        "`ip {}` failed (the network tests need root): {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// An empty place for one test's output files (`--profile`, `--trace`):
/// `eremite-NAME-PID` in the temporary directory, removed if it exists
/// (eremite makes it).
pub fn output_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("eremite-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Where tests put files a native run and a guest compare: `/dev/shm`
/// (tmpfs, as the guest's RAM file system), else the temporary directory.
pub fn scratch_base() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// The file-system differential test: `examples/fsdiff` natively in a
/// fresh directory on tmpfs, and booted with `options` (a hypervisor, say)
/// on eremite's RAM file system; every result and every errno must agree,
/// line for line.
pub fn assert_fsdiff_matches_linux(options: &[&str]) {
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let native = root().join("examples/target/x86_64-unknown-linux-gnu/release/fsdiff");
    assert!(
        native.exists(),
        "{} is missing: run the tests with `./x test`, which builds it",
        native.display()
    );
    let dir = scratch_base().join(format!(
        "eremite-fsdiff-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let linux = run_command(Command::new(&native).arg(&dir));
    linux.expect_code(0);
    let unikernel = boot("fsdiff", options, &["/fsdiff"]);
    unikernel.expect_code(0);
    assert!(linux.stdout.ends_with("end of transcript\n"), "{linux}");
    assert!(linux.stdout.lines().count() > 80, "{linux}");
    for (number, (l, e)) in linux
        .stdout
        .lines()
        .zip(unikernel.stdout.lines())
        .enumerate()
    {
        assert_eq!(
            e,
            l,
            "transcripts differ at line {}\n{unikernel}",
            number + 1
        );
    }
    assert_eq!(
        linux.stdout.lines().count(),
        unikernel.stdout.lines().count(),
        "{unikernel}"
    );
}

/// The guest's address in the network the tests' namespaces give it.
pub const GUEST_IP: &str = "10.0.0.2";
/// The host side's (the tap's) address there.
pub const HOST_IP: &str = "10.0.0.1";

/// A namespace with the tap of `link` (`tap:NAME`) at [`HOST_IP`]/24, and
/// the `eremite run` options that give the guest a card on it at
/// [`GUEST_IP`] with the tap as its gateway.
pub fn tap_network(link: &'static str) -> (NetNs, [&'static str; 6]) {
    let tap = link.strip_prefix("tap:").expect("a tap: link");
    let ns = NetNs::with_tap(tap, "10.0.0.1/24");
    (
        ns,
        ["--net", link, "--ip", "10.0.0.2/24", "--gateway", HOST_IP],
    )
}

/// Connect to the guest's `port` (from inside its namespace), retrying
/// while it boots; reads time out after 30 s.
pub fn connect_to_guest(port: u16) -> TcpStream {
    let addr: SocketAddr = format!("{GUEST_IP}:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(stream) => {
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                return stream;
            }
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot connect to the guest at {addr}: {e}"),
        }
    }
}

/// Send `request` to the guest's `port` on a new connection and read the
/// whole answer (the request asks to close).
pub fn http_to_guest(port: u16, request: &str) -> String {
    let mut stream = connect_to_guest(port);
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}
