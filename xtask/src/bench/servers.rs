//! The `servers` group: Debian's own server binaries and the Go echo
//! server (`examples/go/echo`), unmodified, in four places in the same
//! run: in eremite (behind its tap, in a namespace made for the run),
//! natively on the namespace's loopback, under gVisor and in a Linux
//! microVM (`sandboxes.rs`), each pinned to [`BENCH_CORE`] with the client
//! on core 0, loaded by the packages' own tools: `redis-benchmark` (GET
//! and SET, 50 clients, pipeline 1 and 16), `memcslap` (sets from 50
//! clients), `wrk` against nginx (a small page and a 1 MB file, from the
//! RAM file system and, rows `_mount`, through `--mount`) and against the
//! Go echo server; and each server's boot-to-ready (from the start of the
//! process to the first answer: `PONG` for redis, an accepted connection
//! for the others). The main table compares eremite with native; a second
//! table (and `servers_four_places` in the JSON) has all four.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{BENCH_CORE, BenchNetNs, Row, Stat, run_command_output, sandboxes, wrk};
use crate::{Result, build_cli, root};

const ROWS: [&str; 4] = [
    "redis_set",
    "redis_get",
    "redis_set_pipelined",
    "redis_get_pipelined",
];

fn one(value: f64) -> Stat {
    Stat {
        median: value,
        p99: value,
        min: value,
        max: value,
        n: 1,
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
    let path = scratch.join(format!("nginx-{port}.conf"));
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Where a server runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Eremite,
    Native,
    Gvisor,
    MicroVm,
}

/// How the load tools drive a server.
#[derive(Clone, Copy)]
enum Load {
    Redis,
    Memcached,
    /// `wrk` against each (path, row suffix).
    Wrk(&'static [(&'static str, &'static str)]),
}

/// One server binary under test, and how each place starts it.
struct Server {
    /// The rows' prefix: `redis`, `memcached`, `nginx`, `go_echo`.
    name: &'static str,
    program: PathBuf,
    load: Load,
    /// In a VM (eremite, the microVM): its arguments, listening on every
    /// address at `port`.
    vm_args: Vec<String>,
    port: u16,
    /// On the host (natively, in gVisor): the arguments that listen on
    /// 127.0.0.1 at the given port.
    host_args: Box<dyn Fn(u16) -> Vec<String>>,
    /// eremite's runs: its options before the program, and a row suffix.
    eremite_runs: Vec<(Vec<String>, &'static str)>,
    /// Files the microVM needs beyond the program's libraries.
    vm_files: Vec<(PathBuf, String)>,
}

/// A started server.
enum Running {
    Process(Child),
    Gvisor(sandboxes::GvisorServer),
}

impl Running {
    fn stop(self) {
        match self {
            Self::Process(child) => stop(child),
            Self::Gvisor(server) => drop(server),
        }
    }
}

/// What one place measured of one server: (row, unit, value).
type Measured = Vec<(String, &'static str, f64)>;

pub(super) fn servers(is_quick: bool) -> Result<(Vec<Row>, String)> {
    let cli = build_cli()?;
    crate::linux::build()?;
    crate::install_tools(&sandboxes::TOOLS)?;
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

/// The servers: Debian's redis, memcached and nginx, and the Go echo
/// server of `examples/go/echo`.
fn server_list(www: &Path, scratch: &Path) -> Result<Vec<Server>> {
    let strings = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    let redis_args = strings(&["--save", "", "--appendonly", "no", "--protected-mode", "no"]);
    let memcached_args = strings(&["-u", "root", "-t", "2"]);

    // nginx: from the RAM file system (an initrd with the configuration
    // and the files) and, row suffix `_mount`, through a --mount.
    let tree = scratch.join("initrd");
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to.parent().unwrap_or(to))
            .and_then(|()| std::fs::copy(from, to))
            .map_err(|e| format!("cannot copy {}: {e}", from.display()))
    };
    let config = root().join("examples/nginx/etc/nginx/eremite.conf");
    copy(&config, &tree.join("etc/nginx/eremite.conf"))?;
    let mut nginx_files = vec![(config, "/etc/nginx/eremite.conf".to_owned())];
    for file in ["index.html", "big.bin"] {
        copy(&www.join(file), &tree.join("var/www").join(file))?;
        nginx_files.push((www.join(file), format!("/var/www/{file}")));
    }
    let mount = format!("{}:/var/www:ro", www.display());
    let initrd = |dir: &Path| vec!["--initrd".to_owned(), dir.display().to_string()];
    let mut configs = Vec::new();
    for port in [81, 82] {
        configs.push((port, native_nginx_config(port, www, scratch)?));
    }
    let echo = crate::linux::go_dir().join("echo");
    Ok(vec![
        Server {
            name: "redis",
            program: "/usr/bin/redis-server".into(),
            load: Load::Redis,
            vm_args: redis_args.clone(),
            port: 6379,
            host_args: Box::new(move |port| {
                let mut args = strings(&["--port", &port.to_string(), "--bind", "127.0.0.1"]);
                args.extend(redis_args.iter().cloned());
                args
            }),
            eremite_runs: vec![(Vec::new(), "")],
            vm_files: Vec::new(),
        },
        Server {
            name: "memcached",
            program: "/usr/bin/memcached".into(),
            load: Load::Memcached,
            vm_args: memcached_args.clone(),
            port: 11211,
            host_args: Box::new(move |port| {
                let mut args = memcached_args.clone();
                args.extend(strings(&["-l", "127.0.0.1", "-p", &port.to_string()]));
                args
            }),
            eremite_runs: vec![(Vec::new(), "")],
            vm_files: Vec::new(),
        },
        Server {
            name: "nginx",
            program: "/usr/sbin/nginx".into(),
            load: Load::Wrk(&[("/index.html", "_small"), ("/big.bin", "_1mb")]),
            vm_args: strings(&["-c", "/etc/nginx/eremite.conf"]),
            port: 80,
            host_args: Box::new(move |port| {
                let config = configs
                    .iter()
                    .find(|(p, _)| *p == port)
                    .map(|(_, c)| c.display().to_string())
                    .unwrap_or_default();
                vec!["-c".to_owned(), config]
            }),
            eremite_runs: vec![
                (initrd(&tree), ""),
                (
                    [
                        initrd(&root().join("examples/nginx")),
                        strings(&["--mount", &mount]),
                    ]
                    .concat(),
                    "_mount",
                ),
            ],
            vm_files: nginx_files,
        },
        Server {
            name: "go_echo",
            program: echo,
            load: Load::Wrk(&[("/", "")]),
            vm_args: strings(&[":8000"]),
            port: 8000,
            host_args: Box::new(|port| vec![format!("127.0.0.1:{port}")]),
            eremite_runs: vec![(Vec::new(), "")],
            vm_files: Vec::new(),
        },
    ])
}

/// Start `server` in `place`: the started server and where it listens.
fn start(
    place: Place,
    server: &Server,
    eremite_options: &[String],
    env: &Env,
) -> Result<(Running, &'static str, u16)> {
    let quiet = |command: &mut Command| {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {command:?}: {e}"))
    };
    if matches!(place, Place::Eremite | Place::MicroVm) {
        env.ns.forget_neighbours()?;
    }
    Ok(match place {
        Place::Eremite => {
            let child = quiet(
                env.ns
                    .eremite(env.cli)
                    .args(eremite_options)
                    .arg(&server.program)
                    .arg("--")
                    .args(&server.vm_args),
            )?;
            (Running::Process(child), "10.0.0.2", server.port)
        }
        Place::Native => {
            let port = server.port + 1;
            let child = quiet(
                env.ns
                    .command(BENCH_CORE, &server.program)
                    .args((server.host_args)(port)),
            )?;
            (Running::Process(child), "127.0.0.1", port)
        }
        Place::Gvisor => {
            let port = server.port + 2;
            let running = env.gvisor.borrow_mut().start(
                env.ns.name(),
                BENCH_CORE,
                &server.program,
                &(server.host_args)(port),
            )?;
            (Running::Gvisor(running), "127.0.0.1", port)
        }
        Place::MicroVm => {
            let guest = sandboxes::Guest {
                program: &server.program,
                args: &server.vm_args,
                files: &server.vm_files,
            };
            let child = env.microvm.start(
                env.ns.name(),
                BENCH_CORE,
                "ebtap0",
                ("10.0.0.2", "10.0.0.1"),
                &guest,
            )?;
            (Running::Process(child), "10.0.0.2", server.port)
        }
    })
}

/// What every run shares.
struct Env<'a> {
    cli: &'a Path,
    ns: &'a BenchNetNs,
    gvisor: std::cell::RefCell<sandboxes::Gvisor>,
    microvm: sandboxes::MicroVm,
    is_quick: bool,
}

/// Start `server` in `place`, time it to its first answer, load it, stop
/// it: its rows, `{name}_ready` (ms) among them.
fn run(place: Place, server: &Server, eremite_options: &[String], env: &Env) -> Result<Measured> {
    let started = Instant::now();
    let (running, host, port) = start(place, server, eremite_options, env)?;
    let port_text = port.to_string();
    let probe = match server.load {
        Load::Redis => redis_ping(host, &port_text),
        _ => ["bash", "-c", &format!("exec 3<>/dev/tcp/{host}/{port}")]
            .map(str::to_owned)
            .to_vec(),
    };
    let probe: Vec<&str> = probe.iter().map(String::as_str).collect();
    // A VM's tap has no carrier until the VMM opens it, and a SYN sent
    // into it before then is lost and sent again only a second later:
    // probe once the link is up.
    let carrier = if matches!(place, Place::Eremite | Place::MicroVm) {
        wait_ready(
            env.ns,
            &[
                "bash",
                "-c",
                "[ \"$(cat /sys/class/net/ebtap0/carrier)\" = 1 ]",
            ],
            started,
        )
        .map(drop)
    } else {
        Ok(())
    };
    let measured = carrier
        .and_then(|()| wait_ready(env.ns, &probe, started))
        .and_then(|ready| {
            let mut rows = vec![(
                format!("{}_ready", server.name),
                "ms",
                ready.as_secs_f64() * 1e3,
            )];
            match server.load {
                Load::Redis => {
                    let rates = redis_load(env.ns, host, &port_text, env.is_quick)?;
                    for (name, rate) in ROWS.iter().zip(rates) {
                        rows.push(((*name).to_owned(), "req/s", rate));
                    }
                }
                Load::Memcached => {
                    let rate = memcached_load(env.ns, &format!("{host}:{port}"), env.is_quick)?;
                    rows.push(("memcached_set".to_owned(), "set/s", rate));
                }
                Load::Wrk(paths) => {
                    for (path, suffix) in paths {
                        let out =
                            wrk(env.ns, &format!("http://{host}:{port}{path}"), env.is_quick)?;
                        let (_, _, rate) = out
                            .rows
                            .iter()
                            .find(|(n, _, _)| n == "wrk_requests")
                            .ok_or("wrk gave no request rate")?;
                        rows.push((
                            format!("wrk_requests_{}{suffix}", server.name),
                            "req/s",
                            rate.median,
                        ));
                    }
                }
            }
            Ok(rows)
        });
    running.stop();
    let place_name = match place {
        Place::Eremite => "eremite",
        Place::Native => "native",
        Place::Gvisor => "gVisor",
        Place::MicroVm => "Linux microVM",
    };
    let console = if place == Place::MicroVm {
        format!("\nits console ended:\n{}", env.microvm.console_tail())
    } else {
        String::new()
    };
    measured.map_err(|e| format!("{} ({place_name}): {e}{console}", server.name))
}

/// One quantity in the four places.
struct Compared {
    name: String,
    unit: &'static str,
    eremite: f64,
    native: f64,
    gvisor: f64,
    microvm: f64,
}

fn measure(
    cli: &Path,
    ns: &BenchNetNs,
    www: &Path,
    scratch: &Path,
    is_quick: bool,
) -> Result<(Vec<Row>, String)> {
    let env = Env {
        cli,
        ns,
        gvisor: std::cell::RefCell::new(sandboxes::Gvisor::new(scratch)?),
        microvm: sandboxes::MicroVm::new(scratch)?,
        is_quick,
    };
    let mut rows = Vec::new();
    let mut compared = Vec::new();
    for server in server_list(www, scratch)? {
        let mut eremite = Vec::new();
        for (options, suffix) in &server.eremite_runs {
            eremite.push((run(Place::Eremite, &server, options, &env)?, *suffix));
        }
        let native = run(Place::Native, &server, &[], &env)?;
        // gVisor and the microVM only in a full run: a quick run (as in
        // `./x test`) checks that the servers work, and a TCG microVM
        // sometimes boots past the readiness timeout on a loaded host.
        let others = if is_quick {
            None
        } else {
            Some((
                run(Place::Gvisor, &server, &[], &env)?,
                run(Place::MicroVm, &server, &[], &env)?,
            ))
        };
        let value = |measured: &Measured, name: &str| {
            measured
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, _, v)| *v)
                .ok_or_else(|| format!("no `{name}` measured"))
        };
        for (measured, suffix) in &eremite {
            for (name, unit, value_eremite) in measured {
                let name_suffixed = format!("{name}{suffix}");
                let value_native = value(&native, name)?;
                rows.push(Row {
                    group: "servers",
                    name: name_suffixed.clone(),
                    unit: (*unit).to_owned(),
                    eremite: one(*value_eremite),
                    linux: one(value_native),
                });
                if let Some((gvisor, microvm)) = &others {
                    compared.push(Compared {
                        name: name_suffixed,
                        unit,
                        eremite: *value_eremite,
                        native: value_native,
                        gvisor: value(gvisor, name)?,
                        microvm: value(microvm, name)?,
                    });
                }
            }
        }
    }
    let accel = env.microvm.accel;
    if compared.is_empty() {
        println!("servers: quick run, so not under gVisor or in the Linux microVM");
    } else {
        print_compared(&compared, accel);
    }
    Ok((rows, compared_json(&compared, accel)))
}

/// The table of the four places; ratios are eremite's advantage (above 1:
/// eremite is faster, for rates and times alike).
fn print_compared(compared: &[Compared], accel: &str) {
    let width = compared.iter().map(|c| c.name.len()).fold(24, usize::max);
    println!();
    println!(
        "{:<width$} {:>6} {:>11} {:>11} {:>11} {:>11} {:>9} {:>9}",
        "servers",
        "unit",
        "eremite",
        "native",
        "gVisor",
        format!("microVM/{accel}"),
        "vs gVisor",
        "vs VM"
    );
    for c in compared {
        let advantage = |other: f64| {
            if c.unit.ends_with("/s") {
                c.eremite / other
            } else {
                other / c.eremite
            }
        };
        println!(
            "{:<width$} {:>6} {:>11.2} {:>11.2} {:>11.2} {:>11.2} {:>9.2} {:>9.2}",
            c.name,
            c.unit,
            c.eremite,
            c.native,
            c.gvisor,
            c.microvm,
            advantage(c.gvisor),
            advantage(c.microvm)
        );
    }
    println!(
        "the same binaries in eremite, natively, under gVisor (runsc, ptrace platform, host network) and in a Linux microVM (QEMU -M microvm, Debian's cloud kernel, {accel}); \"vs\" columns: how many times faster eremite is (rates: eremite/other, times: other/eremite)"
    );
}

fn compared_json(compared: &[Compared], accel: &str) -> String {
    let rows: Vec<String> = compared
        .iter()
        .map(|c| {
            format!(
                "{{ \"name\": \"{}\", \"unit\": \"{}\", \"eremite\": {:.3}, \"native\": {:.3}, \"gvisor\": {:.3}, \"microvm\": {:.3} }}",
                c.name, c.unit, c.eremite, c.native, c.gvisor, c.microvm
            )
        })
        .collect();
    format!(
        "\"servers_four_places\": {{ \"microvm_accel\": \"{accel}\", \"rows\": [\n    {}\n  ] }}",
        rows.join(",\n    ")
    )
}
