//! Snapshots through the real CLI: `eremite run --api`, `eremite vm`,
//! `eremite restore` (docs/snapshots.md), with `examples/counter`, which
//! counts into files of its RAM file system with a worker thread in futex
//! waits and sleeps.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eremite_tests::{Guest, Run, eremite_cli, http_to_guest, image, spawn_image};
use sha2::{Digest, Sha256};

/// A fresh directory for one test's sockets and snapshots.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("eremite-snap-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// One `count N mono_ms M wall_ms W` line.
#[derive(Debug, Clone, Copy)]
struct Count {
    n: u64,
    mono_ms: u64,
    wall_ms: u64,
}

fn counts(stdout: &str) -> Vec<Count> {
    stdout
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["count", n, "mono_ms", m, "wall_ms", w] => Some(Count {
                    n: n.parse().ok()?,
                    mono_ms: m.parse().ok()?,
                    wall_ms: w.parse().ok()?,
                }),
                _ => None,
            }
        })
        .collect()
}

/// `eremite ARGS` with its threads on host CPU `cpu` (of those this
/// process may use, round robin).
fn on_host_cpu(cpu: usize, args: &[&str]) -> Run {
    let allowed = rustix::thread::sched_getaffinity(None).unwrap();
    let cpus: Vec<usize> = (0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&c| allowed.is_set(c))
        .collect();
    let chosen = cpus[cpu % cpus.len()].to_string();
    let mut command = std::process::Command::new("taskset");
    command
        .args(["-c", &chosen])
        .arg(eremite_tests::eremite())
        .args(args);
    eremite_tests::run_command(&mut command)
}

/// `eremite vm SOCKET ARGS`.
fn vm(socket: &Path, args: &[&str]) -> Run {
    let mut all = vec!["vm", path(socket)];
    all.extend_from_slice(args);
    eremite_cli(&all)
}

/// Start the counter with a control socket and wait until it counts.
fn counter(socket: &Path, options: &[&str], steps: &str) -> Guest {
    let mut all = vec!["--api", path(socket)];
    all.extend_from_slice(options);
    let guest = spawn_image(&image("counter"), &all, &[steps, "10"]);
    guest.wait_for_output("count 3 ");
    guest
}

#[test]
fn a_counter_snapshotted_at_a_random_moment_goes_on_in_new_processes() {
    let dir = scratch("random");
    let socket = dir.join("vm.sock");
    let snap = dir.join("snap");
    let guest = counter(&socket, &["--cpus", "2"], "150");
    // A moment the test does not choose: 0 to 255 ms after the 4th count.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    std::thread::sleep(Duration::from_millis(u64::from(nanos % 256)));
    let taken = vm(&socket, &["snapshot", path(&snap), "--stop"]);
    let before = guest.wait();
    taken.expect_code(0);
    assert!(taken.stdout.contains("the VM stops"), "{taken}");
    before.expect_code(0);
    assert!(
        before
            .stderr
            .contains("stopped the guest once its snapshot was written"),
        "{before}"
    );
    let last = *counts(&before.stdout).last().expect("it counted");
    assert!(last.n < 149, "the snapshot came after the end\n{before}");
    // The memory file is sparse: a few MiB of data in 256 MiB.
    let memory = std::fs::metadata(snap.join("memory")).unwrap();
    assert_eq!(memory.len(), 256 << 20);
    {
        use std::os::unix::fs::MetadataExt as _;
        assert!(
            memory.blocks() * 512 < 64 << 20,
            "{} blocks",
            memory.blocks()
        );
    }

    std::thread::sleep(Duration::from_millis(300));
    let downtime_started = last.wall_ms;
    // Each on another host CPU than the other: KVM reports the CPU it ran
    // on among the CPU features, which must not make them differ.
    let first = on_host_cpu(0, &["restore", path(&snap)]);
    let second = on_host_cpu(1, &["restore", path(&snap)]);
    for (run, label) in [(&first, "first"), (&second, "second")] {
        run.expect_code(0);
        assert!(run.stdout.ends_with("counter done\n"), "{label}\n{run}");
        assert!(run.stdout.contains("files 150 bad 0"), "{label}\n{run}");
        let counts = counts(&run.stdout);
        let resumed = counts.first().expect("it counted on");
        // It goes on from the next count: nothing counted twice, nothing
        // skipped, the files written before the snapshot are all there.
        assert_eq!(resumed.n, last.n + 1, "{label}\n{run}");
        assert_eq!(counts.last().unwrap().n, 149, "{label}\n{run}");
        // Its monotonic clock goes on from where it stood, neither back
        // nor by the time it spent on disk; its wall clock is the host's.
        assert!(
            resumed.mono_ms >= last.mono_ms,
            "{label}: {resumed:?} after {last:?}"
        );
        assert!(
            resumed.mono_ms < last.mono_ms + 250,
            "{label}: {resumed:?} after {last:?}"
        );
        assert!(
            resumed.wall_ms >= downtime_started + 300,
            "{label}: {resumed:?} after {last:?}"
        );
    }
    let random = |run: &Run| {
        run.stdout
            .lines()
            .find(|l| l.starts_with("random "))
            .map(str::to_owned)
            .unwrap()
    };
    assert_ne!(
        random(&first),
        random(&second),
        "two restores drew the same numbers"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_paused_vm_stands_still_and_its_clocks_leave_the_pause_out() {
    let dir = scratch("pause");
    let socket = dir.join("vm.sock");
    let guest = counter(&socket, &[], "60");
    let status = vm(&socket, &["status"]);
    status.expect_code(0);
    assert_eq!(status.stdout, "running\n");
    vm(&socket, &["pause"]).expect_code(0);
    let again = vm(&socket, &["pause"]);
    again.expect_code(1);
    assert!(again.stderr.contains("already paused"), "{again}");
    assert_eq!(vm(&socket, &["status"]).stdout, "paused\n");
    let printed = guest.printed();
    let paused_at = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(guest.printed(), printed, "the guest ran while paused");
    vm(&socket, &["resume"]).expect_code(0);
    let paused_for = paused_at.elapsed();
    let resumed = vm(&socket, &["resume"]);
    resumed.expect_code(1);
    assert!(resumed.stderr.contains("not paused"), "{resumed}");
    let run = guest.wait();
    run.expect_code(0);
    assert!(run.stdout.contains("counter done"), "{run}");
    // The longest step in wall time is the pause; in monotonic time it is
    // an ordinary step.
    let counts = counts(&run.stdout);
    let (at, wall_gap) = counts
        .windows(2)
        .map(|w| (w[1], w[1].wall_ms - w[0].wall_ms))
        .max_by_key(|(_, gap)| *gap)
        .unwrap();
    let before = counts.iter().find(|c| c.n + 1 == at.n).unwrap();
    assert!(
        wall_gap + 50 >= paused_for.as_millis() as u64,
        "wall clock moved {wall_gap} ms over a {paused_for:?} pause\n{run}"
    );
    assert!(
        at.mono_ms - before.mono_ms < 200,
        "monotonic clock moved {} ms over the pause\n{run}",
        at.mono_ms - before.mono_ms
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Write `state`'s JSON with `edit` applied, hashed again as its writer
/// would: only the checks behind the hash can refuse it.
fn rehash(state: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let bytes = std::fs::read(state).unwrap();
    let newline = bytes.iter().position(|&b| b == b'\n').unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(&bytes[newline + 1..]).unwrap();
    edit(&mut json);
    let body = serde_json::to_vec(&json).unwrap();
    let hash: String = Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut out = format!("eremite-snapshot 1 sha256={hash}\n").into_bytes();
    out.extend_from_slice(&body);
    std::fs::write(state, out).unwrap();
}

/// A copy of snapshot `from` in `to`, changed by `change`.
fn damaged(from: &Path, to: &Path, change: impl FnOnce(&Path)) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for name in ["state", "memory"] {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
    change(to);
    to.to_owned()
}

/// The counter with `DIR/data` mounted at `/data` and `/data/log` open,
/// snapshotted into `DIR/snap` (and stopped) once it counts: the snapshot,
/// the mounted directory and the run.
fn logging_counter_snapshot(dir: &Path, steps: &str) -> (PathBuf, PathBuf, Run) {
    let socket = dir.join("vm.sock");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let snap = dir.join("snap");
    let mount = format!("{}:/data", data.display());
    let guest = counter(
        &socket,
        &["--mount", &mount, "-e", "COUNTER_LOG=/data/log"],
        steps,
    );
    vm(&socket, &["snapshot", path(&snap), "--stop"]).expect_code(0);
    let run = guest.wait();
    run.expect_code(0);
    (snap, data, run)
}

#[test]
fn damaged_or_foreign_snapshots_are_refused_before_the_guest_runs() {
    let dir = scratch("refused");
    let (snap, data, _) = logging_counter_snapshot(&dir, "100000");

    let cases: Vec<(&str, PathBuf)> = vec![
        (
            "memory file is",
            damaged(&snap, &dir.join("short"), |d| {
                let memory = std::fs::File::options()
                    .write(true)
                    .open(d.join("memory"))
                    .unwrap();
                memory.set_len(128 << 20).unwrap();
            }),
        ),
        (
            "do not match its hash",
            damaged(&snap, &dir.join("edited"), |d| {
                let mut bytes = std::fs::read(d.join("state")).unwrap();
                let at = bytes.len() / 2;
                bytes[at] ^= 0x20;
                std::fs::write(d.join("state"), bytes).unwrap();
            }),
        ),
        (
            "do not match its hash",
            damaged(&snap, &dir.join("truncated"), |d| {
                let bytes = std::fs::read(d.join("state")).unwrap();
                std::fs::write(d.join("state"), &bytes[..bytes.len() - 100]).unwrap();
            }),
        ),
        (
            "of format 7",
            damaged(&snap, &dir.join("format"), |d| {
                let bytes = std::fs::read(d.join("state")).unwrap();
                let mut out = b"eremite-snapshot 7".to_vec();
                out.extend_from_slice(&bytes["eremite-snapshot 1".len()..]);
                std::fs::write(d.join("state"), out).unwrap();
            }),
        ),
        (
            "speaks interface",
            damaged(&snap, &dir.join("version"), |d| {
                rehash(&d.join("state"), |json| {
                    json["interface_version"] = serde_json::json!(1);
                });
            }),
        ),
        (
            "other CPU features",
            damaged(&snap, &dir.join("cpu"), |d| {
                rehash(&d.join("state"), |json| {
                    json["cpu_features"] = serde_json::json!("00");
                });
            }),
        ),
        ("cannot read", dir.join("nothing-here")),
    ];
    let with_card = eremite_cli(&["restore", "--net", "tap:nothing0", path(&snap)]);
    with_card.expect_code(125);
    assert!(
        with_card.stderr.contains("had no network card"),
        "{with_card}"
    );
    for (expected, snapshot) in &cases {
        let run = eremite_cli(&["restore", path(snapshot)]);
        run.expect_code(125);
        assert!(run.stderr.contains(expected), "want {expected:?}\n{run}");
        assert!(run.stdout.is_empty(), "the guest ran\n{run}");
    }
    // A file the guest had open that is gone, then a mount that is gone.
    std::fs::rename(data.join("log"), data.join("moved")).unwrap();
    let run = eremite_cli(&["restore", path(&snap)]);
    run.expect_code(125);
    assert!(
        run.stderr
            .contains("log open, and it cannot be opened again"),
        "{run}"
    );
    assert!(run.stdout.is_empty(), "the guest ran\n{run}");
    std::fs::remove_dir_all(&data).unwrap();
    let run = eremite_cli(&["restore", path(&snap)]);
    run.expect_code(125);
    assert!(run.stderr.contains(path(&data)), "{run}");
    assert!(run.stdout.is_empty(), "the guest ran\n{run}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_control_socket_answers_mistakes_with_one_clear_line() {
    let dir = scratch("mistakes");
    let nobody = vm(&dir.join("none.sock"), &["status"]);
    nobody.expect_code(1);
    assert!(nobody.stderr.contains("no VM answers there"), "{nobody}");
    // A path that is not a socket is left alone.
    let file = dir.join("file");
    std::fs::write(&file, "keep me").unwrap();
    let run = eremite_tests::boot("hello", &["--api", path(&file)], &[]);
    run.expect_code(125);
    assert!(run.stderr.contains("not a socket"), "{run}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");

    let socket = dir.join("vm.sock");
    let guest = counter(&socket, &[], "100000");
    // A second VM on a socket in use.
    let second = eremite_tests::boot("hello", &["--api", path(&socket)], &[]);
    second.expect_code(125);
    assert!(second.stderr.contains("answers"), "{second}");
    // An unknown request, and a snapshot without its files.
    for (request, expected) in [
        ("frobnicate\n", "error: unknown request"),
        (
            "snapshot\n",
            "error: a snapshot needs its state and memory files",
        ),
    ] {
        use std::io::{Read as _, Write as _};
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with(expected), "{request:?}: {answer:?}");
    }
    vm(&socket, &["stop"]).expect_code(0);
    let run = guest.wait();
    run.expect_code(0);
    // A stale socket file (its VM gone) is replaced by the next VM.
    assert!(socket.exists());
    let run = eremite_tests::boot("hello", &["--api", path(&socket)], &[]);
    run.expect_code(0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_guest_snapshots_itself_where_it_chooses_and_restores_start_there() {
    let dir = scratch("guest");
    let stopped = dir.join("stopped");
    let counter = image("counter");
    // Snapshot at count 10 and stop.
    let run = eremite_tests::boot_image(
        &counter,
        &["--snapshot-to", path(&stopped), "--cpus", "2"],
        &["30", "5", "snapshot-at:10:stop"],
    );
    run.expect_code(0);
    assert!(
        run.stdout.ends_with("count 10 ") || counts(&run.stdout).last().unwrap().n == 10,
        "{run}"
    );
    assert!(!run.stdout.contains("snapshot taken"), "{run}");
    assert!(
        run.stderr.contains("once its snapshot was written"),
        "{run}"
    );
    let restored = eremite_cli(&["restore", path(&stopped)]);
    restored.expect_code(0);
    assert!(
        restored
            .stdout
            .starts_with("restored from the snapshot\ncount 11 "),
        "{restored}"
    );
    assert!(restored.stdout.contains("files 30 bad 0"), "{restored}");

    // Snapshot at count 5 and go on: the run says it took one and ends;
    // a restore goes on from count 6.
    let going_on = dir.join("going-on");
    let run = eremite_tests::boot_image(
        &counter,
        &["--snapshot-to", path(&going_on)],
        &["12", "5", "snapshot-at:5"],
    );
    run.expect_code(0);
    assert!(run.stdout.contains("count 5 "), "{run}");
    assert!(run.stdout.contains("snapshot taken\ncount 6 "), "{run}");
    assert!(run.stdout.ends_with("counter done\n"), "{run}");
    let restored = eremite_cli(&["restore", path(&going_on)]);
    restored.expect_code(0);
    assert!(
        restored
            .stdout
            .starts_with("restored from the snapshot\ncount 6 "),
        "{restored}"
    );

    // Without --snapshot-to the call fails and the program goes on.
    let run = eremite_tests::boot("counter", &[], &["8", "1", "snapshot-at:3"]);
    run.expect_code(0);
    assert!(run.stdout.contains("no snapshot: "), "{run}");
    assert!(run.stdout.ends_with("counter done\n"), "{run}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A GET of `path` that asks to close the connection.
fn request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: guest\r\nConnection: close\r\n\r\n")
}

#[test]
fn an_http_server_snapshotted_while_listening_answers_on_a_new_tap_after_restore() {
    let dir = scratch("httpd");
    let socket = dir.join("vm.sock");
    let snap = dir.join("snap");
    let (first_ns, card) = eremite_tests::tap_network("tap:stap0");
    let mut options = vec!["--api", path(&socket)];
    options.extend_from_slice(&card);
    let guest = first_ns.spawn("httpd", &options, &["0.0.0.0:8080"]);
    guest.wait_for_output("listening on");
    let (guest, before) =
        guest.talk(|| first_ns.enter(|| http_to_guest(8080, &request("/before"))));
    assert!(before.contains("url: /before"), "{before}");
    // A snapshot it goes on after: its card stops and serves again.
    vm(&socket, &["snapshot", path(&dir.join("going-on"))]).expect_code(0);
    let (guest, between) =
        guest.talk(|| first_ns.enter(|| http_to_guest(8080, &request("/between"))));
    assert!(between.contains("url: /between"), "{between}");
    vm(&socket, &["snapshot", path(&snap), "--stop"]).expect_code(0);
    guest.wait().expect_code(0);
    drop(first_ns);

    // A new namespace and a new tap; the card keeps its address and the
    // guest its IP configuration and its listening socket.
    let (ns, _) = eremite_tests::tap_network("tap:stap0");
    let refused = ns.eremite_cli(&["restore", path(&snap)]);
    refused.expect_code(125);
    assert!(refused.stderr.contains("give --net"), "{refused}");
    let restored = ns.spawn_eremite(&["restore", "--net", "tap:stap0", path(&snap)]);
    let (restored, after) = restored.talk(|| ns.enter(|| http_to_guest(8080, &request("/after"))));
    assert!(after.contains("url: /after"), "{after}");
    let (restored, _) = restored.talk(|| ns.enter(|| http_to_guest(8080, &request("/quit"))));
    let run = restored.wait();
    run.expect_code(0);
    assert!(run.stdout.contains("served "), "{run}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn diff_snapshots_in_a_row_restore_from_their_base_in_order_only() {
    let dir = scratch("diff");
    let socket = dir.join("vm.sock");
    let [base, first, second] = ["base", "first", "second"].map(|name| dir.join(name));
    let guest = counter(&socket, &["--cpus", "2"], "120");
    // No difference before a snapshot of this run.
    let early = vm(&socket, &["snapshot", path(&first), "--diff"]);
    early.expect_code(1);
    assert!(
        early.stderr.contains("no snapshot to be a difference from"),
        "{early}"
    );
    vm(&socket, &["snapshot", path(&base)]).expect_code(0);
    std::thread::sleep(Duration::from_millis(60));
    vm(&socket, &["snapshot", path(&first), "--diff"]).expect_code(0);
    std::thread::sleep(Duration::from_millis(60));
    let last = vm(&socket, &["snapshot", path(&second), "--diff", "--stop"]);
    last.expect_code(0);
    assert!(last.stdout.contains("(a difference)"), "{last}");
    let before = guest.wait();
    before.expect_code(0);
    let stopped_at = counts(&before.stdout).last().unwrap().n;

    // The differences hold far less than the base.
    let allocated = |d: &Path| {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(d.join("memory")).unwrap().blocks() * 512
    };
    assert!(
        allocated(&second) * 4 < allocated(&base),
        "base {} bytes, difference {} bytes",
        allocated(&base),
        allocated(&second)
    );
    let run = eremite_cli(&["restore", path(&base), path(&first), path(&second)]);
    run.expect_code(0);
    assert_eq!(counts(&run.stdout)[0].n, stopped_at + 1, "{run}");
    assert!(run.stdout.contains("files 120 bad 0"), "{run}");
    // Out of order, a difference alone, or one skipped: refused.
    for chain in [
        vec![path(&base), path(&second)],
        vec![path(&second)],
        vec![path(&base), path(&second), path(&first)],
    ] {
        let mut args = vec!["restore"];
        args.extend(chain);
        let run = eremite_cli(&args);
        run.expect_code(125);
        assert!(run.stdout.is_empty(), "the guest ran\n{run}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_file_open_on_a_mount_stays_open_across_a_snapshot_and_restore() {
    let dir = scratch("open-file");
    let (snap, data, before) = logging_counter_snapshot(&dir, "40");
    let run = eremite_cli(&["restore", path(&snap)]);
    run.expect_code(0);
    assert!(run.stdout.contains("counter done"), "{run}");
    // Every count once, in order: the restored guest appended through the
    // file it had open.
    let log = std::fs::read_to_string(data.join("log")).unwrap();
    let expected: String = (0..40).map(|n| format!("count {n}\n")).collect();
    assert_eq!(log, expected, "{before}\n{run}");
    std::fs::remove_dir_all(&dir).unwrap();
}
