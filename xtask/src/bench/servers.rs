//! The `servers` group: Debian's own server binaries, unmodified, in
//! eremite (behind its tap, in a namespace made for the run) and natively
//! on the namespace's loopback, each pinned to [`BENCH_CORE`] with the
//! client on core 0, loaded by the packages' own tools in the same run:
//! `redis-benchmark` (GET and SET, 50 clients, pipeline 1 and 16),
//! `memcslap` (sets from 50 clients), `wrk` against nginx (a small page
//! and a 1 MB file, from the RAM file system and, rows `_mount`, through
//! `--mount`), `wrk` against the Go echo server (`examples/go/echo`), and
//! redis's boot-to-ready (from the start of the
//! process to the first `PONG`).
//!
//! Not measured here yet: the same binaries under gVisor and in a Linux
//! microVM (issue 21 asks for both).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{BENCH_CORE, BenchNetNs, ProgramOutput, Row, Stat, pair, run_command_output, wrk};
use crate::{Result, build_cli, root};

const ROWS: [&str; 4] = [
    "redis_set",
    "redis_get",
    "redis_set_pipelined",
    "redis_get_pipelined",
];
const MEMCACHED_ROWS: [&str; 1] = ["memcached_set"];
const READY_ROWS: [&str; 1] = ["redis_ready"];

fn one(value: f64) -> Stat {
    Stat {
        median: value,
        p99: value,
        min: value,
        max: value,
        n: 1,
    }
}

fn output(rows: Vec<(&str, &str, f64)>) -> ProgramOutput {
    ProgramOutput {
        tsc_khz: 1,
        rows: rows
            .into_iter()
            .map(|(name, unit, value)| (name.to_owned(), unit.to_owned(), one(value)))
            .collect(),
        histogram: Vec::new(),
    }
}

/// Wait until `ready` (a command in the namespace) succeeds, up to 60 s;
/// how long it took.
fn wait_ready(ns: &BenchNetNs, ready: &[&str], started: Instant) -> Result<Duration> {
    loop {
        let status = ns
            .command("0", Path::new(ready[0]))
            .args(&ready[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run {}: {e}", ready[0]))?;
        if status.success() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!("the server never answered {ready:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `redis-cli ping` that fails unless the answer is PONG.
fn redis_ping(host: &str, port: &str) -> Vec<String> {
    [
        "bash",
        "-c",
        &format!("[ \"$(redis-cli -h {host} -p {port} ping 2>/dev/null)\" = PONG ]"),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// `redis-benchmark --csv` against `host:port`: requests per second of
/// SET and GET, unpipelined and 16 deep.
fn redis_load(ns: &BenchNetNs, host: &str, port: &str, is_quick: bool) -> Result<Vec<f64>> {
    let requests = if is_quick { "20000" } else { "200000" };
    let mut rates = Vec::new();
    for pipeline in ["1", "16"] {
        let csv = run_command_output(ns.command("0", Path::new("redis-benchmark")).args([
            "-h", host, "-p", port, "-c", "50", "-n", requests, "-P", pipeline, "-t", "set,get",
            "--csv",
        ]))?;
        for test in ["SET", "GET"] {
            let rate = csv
                .lines()
                .find(|l| l.starts_with(&format!("\"{test}\"")))
                .and_then(|l| l.split(',').nth(1))
                .and_then(|v| v.trim_matches('"').parse::<f64>().ok())
                .ok_or_else(|| format!("no {test} rate in redis-benchmark's output\n{csv}"))?;
            rates.push(rate);
        }
    }
    Ok(rates)
}

/// `memcslap` with 50 clients setting keys: sets per second.
fn memcached_load(ns: &BenchNetNs, server: &str, is_quick: bool) -> Result<f64> {
    let each = if is_quick { "200" } else { "2000" };
    let out = run_command_output(ns.command("0", Path::new("memcslap")).args([
        &format!("--servers={server}"),
        "--concurrency=50",
        &format!("--execute-number={each}"),
    ]))?;
    // "Time to set 100000 keys by 50 threads: 1.234 seconds."
    let line = out
        .lines()
        .find(|l| l.contains("Time to set"))
        .ok_or_else(|| format!("memcslap printed no time\n{out}"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let keys: f64 = words
        .iter()
        .position(|w| *w == "set")
        .and_then(|i| words.get(i + 1)?.parse().ok())
        .ok_or_else(|| format!("memcslap: {line}"))?;
    let seconds: f64 = words
        .iter()
        .rev()
        .nth(1)
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| format!("memcslap: {line}"))?;
    Ok(keys / seconds)
}

/// The nginx configuration of `examples/nginx` for a native run: on
/// `port`, serving `www`, its temporary files and pid under `scratch`.
fn native_nginx_config(port: u16, www: &Path, scratch: &Path) -> Result<PathBuf> {
    let example = root().join("examples/nginx/etc/nginx/eremite.conf");
    let text = std::fs::read_to_string(&example)
        .map_err(|e| format!("cannot read {}: {e}", example.display()))?;
    let text = text
        .replace("/tmp/", &format!("{}/", scratch.display()))
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
        .replace("root /var/www;", &format!("root {};", www.display()));
    let path = scratch.join("nginx.conf");
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

pub(super) fn servers(is_quick: bool) -> Result<Vec<Row>> {
    let cli = build_cli()?;
    crate::linux::build()?;
    let ns = BenchNetNs::new()?;
    let scratch =
        std::env::temp_dir().join(format!("eremite-bench-servers-{}", std::process::id()));
    let www = scratch.join("www");
    std::fs::create_dir_all(&www).map_err(|e| format!("cannot create {}: {e}", www.display()))?;
    let write = |name: &str, data: &[u8]| {
        std::fs::write(www.join(name), data).map_err(|e| format!("cannot write {name}: {e}"))
    };
    write("index.html", b"<h1>hello</h1>\n")?;
    write(
        "big.bin",
        &(0..1_000_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    )?;
    let result = measure(&cli, &ns, &www, &scratch, is_quick);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn measure(
    cli: &Path,
    ns: &BenchNetNs,
    www: &Path,
    scratch: &Path,
    is_quick: bool,
) -> Result<Vec<Row>> {
    let spawn = |command: &mut Command| {
        command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {command:?}: {e}"))
    };
    let redis_args = ["--save", "", "--appendonly", "no", "--protected-mode", "no"];

    // redis: boot-to-ready, then the load.
    let started = Instant::now();
    let guest = spawn(
        ns.eremite(cli)
            .arg("/usr/bin/redis-server")
            .arg("--")
            .args(redis_args),
    )?;
    let ping = redis_ping("10.0.0.2", "6379");
    let ping: Vec<&str> = ping.iter().map(String::as_str).collect();
    let guest_ready = wait_ready(ns, &ping, started);
    let guest_rates = guest_ready
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|_| redis_load(ns, "10.0.0.2", "6379", is_quick));
    stop(guest);
    let started = Instant::now();
    let native = spawn(
        ns.command(BENCH_CORE, Path::new("/usr/bin/redis-server"))
            .args(["--port", "6380", "--bind", "127.0.0.1"])
            .args(redis_args),
    )?;
    let ping = redis_ping("127.0.0.1", "6380");
    let ping: Vec<&str> = ping.iter().map(String::as_str).collect();
    let native_ready = wait_ready(ns, &ping, started);
    let native_rates = native_ready
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|_| redis_load(ns, "127.0.0.1", "6380", is_quick));
    stop(native);
    let (guest_rates, native_rates) = (guest_rates?, native_rates?);
    let rates = |r: &[f64]| {
        output(vec![
            ("redis_set", "req/s", r[0]),
            ("redis_get", "req/s", r[1]),
            ("redis_set_pipelined", "req/s", r[2]),
            ("redis_get_pipelined", "req/s", r[3]),
        ])
    };
    let mut rows = pair(
        "servers",
        &rates(&guest_rates),
        &rates(&native_rates),
        &ROWS,
        "",
    )?;
    let ready = |d: Duration| output(vec![("redis_ready", "ms", d.as_secs_f64() * 1e3)]);
    rows.extend(pair(
        "servers",
        &ready(guest_ready?),
        &ready(native_ready?),
        &READY_ROWS,
        "",
    )?);

    // memcached on one core, two threads.
    let guest = spawn(
        ns.eremite(cli)
            .arg("/usr/bin/memcached")
            .args(["--", "-u", "root", "-t", "2"]),
    )?;
    let guest_rate = wait_ready(
        ns,
        &["bash", "-c", "exec 3<>/dev/tcp/10.0.0.2/11211"],
        Instant::now(),
    )
    .and_then(|_| memcached_load(ns, "10.0.0.2:11211", is_quick));
    stop(guest);
    let native = spawn(
        ns.command(BENCH_CORE, Path::new("/usr/bin/memcached"))
            .args(["-u", "root", "-t", "2", "-l", "127.0.0.1", "-p", "11212"]),
    )?;
    let native_rate = wait_ready(
        ns,
        &["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/11212"],
        Instant::now(),
    )
    .and_then(|_| memcached_load(ns, "127.0.0.1:11212", is_quick));
    stop(native);
    let set = |rate: f64| output(vec![("memcached_set", "set/s", rate)]);
    rows.extend(pair(
        "servers",
        &set(guest_rate?),
        &set(native_rate?),
        &MEMCACHED_ROWS,
        "",
    )?);

    // nginx: a small page and a megabyte, from the RAM file system (an
    // initrd with the configuration and the files) and through a --mount.
    let tree = scratch.join("initrd");
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to.parent().unwrap_or(to))
            .and_then(|()| std::fs::copy(from, to))
            .map_err(|e| format!("cannot copy {}: {e}", from.display()))
    };
    copy(
        &root().join("examples/nginx/etc/nginx/eremite.conf"),
        &tree.join("etc/nginx/eremite.conf"),
    )?;
    for file in ["index.html", "big.bin"] {
        copy(&www.join(file), &tree.join("var/www").join(file))?;
    }
    let mount = format!("{}:/var/www:ro", www.display());
    let config = root().join("examples/nginx");
    let mut guest_rows = Vec::new();
    for (initrd, extra, suffix) in [
        (&tree, None, ""),
        (&config, Some(["--mount", mount.as_str()]), "_mount"),
    ] {
        let guest = spawn(
            ns.eremite(cli)
                .args(["--initrd", initrd.to_str().unwrap_or_default()])
                .args(extra.iter().flatten())
                .args(["/usr/sbin/nginx", "--", "-c", "/etc/nginx/eremite.conf"]),
        )?;
        let measured = wait_ready(
            ns,
            &["bash", "-c", "exec 3<>/dev/tcp/10.0.0.2/80"],
            Instant::now(),
        )
        .and_then(|_| {
            Ok((
                wrk(ns, "http://10.0.0.2/index.html", is_quick)?,
                wrk(ns, "http://10.0.0.2/big.bin", is_quick)?,
            ))
        });
        stop(guest);
        guest_rows.push((measured?, suffix));
    }
    let native_config = native_nginx_config(8090, www, scratch)?;
    let native = spawn(
        ns.command(BENCH_CORE, Path::new("/usr/sbin/nginx"))
            .arg("-c")
            .arg(&native_config),
    )?;
    let native_wrk = wait_ready(
        ns,
        &["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8090"],
        Instant::now(),
    )
    .and_then(|_| {
        Ok((
            wrk(ns, "http://127.0.0.1:8090/index.html", is_quick)?,
            wrk(ns, "http://127.0.0.1:8090/big.bin", is_quick)?,
        ))
    });
    stop(native);
    let (native_small, native_big) = native_wrk?;
    for ((guest_small, guest_big), suffix) in &guest_rows {
        rows.extend(pair(
            "servers",
            guest_small,
            &native_small,
            &["wrk_requests"],
            &format!("_nginx_small{suffix}"),
        )?);
        rows.extend(pair(
            "servers",
            guest_big,
            &native_big,
            &["wrk_requests"],
            &format!("_nginx_1mb{suffix}"),
        )?);
    }

    // The Go echo server (examples/go/echo), built with the host's Go.
    let echo = crate::linux::go_dir().join("echo");
    let guest = spawn(ns.eremite(cli).arg(&echo).args(["--", ":8000"]))?;
    let guest_wrk = wait_ready(
        ns,
        &["bash", "-c", "exec 3<>/dev/tcp/10.0.0.2/8000"],
        Instant::now(),
    )
    .and_then(|_| wrk(ns, "http://10.0.0.2:8000/", is_quick));
    stop(guest);
    let native = spawn(ns.command(BENCH_CORE, &echo).arg("127.0.0.1:8001"))?;
    let native_wrk = wait_ready(
        ns,
        &["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8001"],
        Instant::now(),
    )
    .and_then(|_| wrk(ns, "http://127.0.0.1:8001/", is_quick));
    stop(native);
    rows.extend(pair(
        "servers",
        &guest_wrk?,
        &native_wrk?,
        &["wrk_requests"],
        "_go_echo",
    )?);
    Ok(rows)
}
