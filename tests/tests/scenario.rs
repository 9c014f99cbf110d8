//! `eremite scenario` and `eremite experiment`: files checked line by
//! line, instances run side by side with their CPUs, memory, order and
//! checks, stopped on a timeout or Ctrl-C, and sweeps written out.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eremite_tests::{Run, c_image, eremite_cli, require_kvm, spawn_eremite};

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("eremite-scenario-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// Write `text` (with `PROBE` and `ECHO` standing for the C programs'
/// paths) to `dir/name`.
fn scenario_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let text = text
        .replace("PROBE", &c_image("probe", false).display().to_string())
        .replace("ECHO", &c_image("echo", false).display().to_string());
    let path = dir.join(name);
    std::fs::write(&path, text).expect("the scenario file");
    path
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// The row of `copy` in a run's summary, split in cells.
fn summary_row<'a>(run: &'a Run, copy: &str) -> Vec<&'a str> {
    run.stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{copy} ")))
        .unwrap_or_else(|| panic!("no summary row for {copy}\n{run}"))
        .split_whitespace()
        .collect()
}

/// The peak VMM memory (MiB) in a summary row.
fn peak_mib(row: &[&str]) -> u64 {
    let at = row
        .iter()
        .position(|c| *c == "MiB")
        .expect("a peak memory cell");
    row[at - 1].parse().expect("a number of MiB")
}

#[test]
fn scenario_check_names_the_line_of_each_mistake() {
    let dir = scratch("check");
    let head = "name = \"bad\"\ncpus = \"0-1\"\n";
    // (file body after `head`, the line the error must name, what it says)
    let cases: [(&str, usize, &str); 13] = [
        ("nmae = \"x\"\n", 3, "unknown field `nmae`"),
        (
            "[[instance]]\nname = \"a\"\nimgae = \"PROBE\"\n",
            5,
            "unknown field `imgae`",
        ),
        (
            "memory_quota = \"100M\"\n[[instance]]\nname = \"a\"\nimage = \"PROBE\"\ncount = 2\nmemory = \"64M\"\n",
            3,
            "over memory_quota",
        ),
        (
            "[[instance]]\nname = \"a\"\nimage = \"PROBE\"\nhost_cpus = \"1-2\"\n",
            6,
            "outside the scenario's cpus",
        ),
        (
            "[[instance]]\nname = \"a\"\nimage = \"PROBE\"\nafter = [\"b\"]\nready_when = \"ready\"\n\
             [[instance]]\nname = \"b\"\nimage = \"PROBE\"\nafter = [\"a\"]\nready_when = \"ready\"\n",
            6,
            "waits, through others, for itself",
        ),
        (
            "[[instance]]\nname = \"a\"\nimage = \"no/such/image\"\n",
            5,
            "is not a file",
        ),
        (
            "[[instance]]\nname = \"a\"\nimage = \"PROBE\"\nafter = [\"ghost\"]\n",
            6,
            "no instance is named ghost",
        ),
        (
            "[[instance]]\nname = \"a\"\nimage = \"PROBE\"\nargs = [\"{nope}\"]\n",
            6,
            "{nope} is not a variable",
        ),
        (
            "[vary]\np = [\"shared\", \"sideways\"]\n[[instance]]\nname = \"a\"\nimage = \"PROBE\"\nplacement = \"{p}\"\n",
            8,
            "placement `sideways` is not shared or exclusive",
        ),
        (
            "[[instance]]\nname = \"a\"\nimage = \"PROBE\"\n[metric]\nops = 'ops: [0-9]+'\n",
            7,
            "no group",
        ),
        (
            "[[instance]]\nname = \"a\"\nimage = \"PROBE\"\ncount = 3\nplacement = \"exclusive\"\n",
            7,
            "copy 2 needs 1 host CPUs of its own and 0 are left",
        ),
        (
            "[[instance]]\nname = \"a\"\nimage = \"PROBE\"\ncount = \"many\n",
            6,
            "invalid basic string",
        ),
        (
            "[[instance]]\nname = \"a\"\nimage = \"PROBE\"\nnet = \"wire:x\"\n",
            6,
            "net: \"wire:x\" is not user",
        ),
    ];
    for (i, (body, line, message)) in cases.iter().enumerate() {
        let path = scenario_file(&dir, &format!("bad{i}.toml"), &format!("{head}{body}"));
        let run = eremite_cli(&["scenario", "check", arg(&path)]);
        run.expect_code(1);
        let first = run.stderr.lines().next().unwrap_or_default();
        assert!(
            first.contains(&format!("bad{i}.toml: line {line}: ")) && first.contains(message),
            "case {i}: wanted line {line} and {message:?}\n{run}"
        );
    }
    let good = scenario_file(
        &dir,
        "good.toml",
        &format!(
            "{head}[vary]\nn = [1, 2]\n[[instance]]\nname = \"a\"\nimage = \"PROBE\"\nargs = [\"{{n}}\"]\n"
        ),
    );
    let run = eremite_cli(&["scenario", "check", arg(&good)]);
    run.expect_code(0);
    assert!(run.stdout.contains("ok (2 combinations)"), "{run}");
}

#[test]
fn two_instances_run_pinned_to_their_cpus_with_their_memory_and_are_checked() {
    require_kvm();
    let dir = scratch("pinned");
    let file = scenario_file(
        &dir,
        "pinned.toml",
        r#"
name = "pinned"
memory_quota = "256M"
cpus = "0-1"

[[instance]]
name = "probe"
image = "PROBE"
args = ["10", "sleep", "2000"]
count = 2
cpus = 1
memory = "96M"
host_cpus = "0-1"
placement = "exclusive"
expect_output = ["value: 55", "memory: 96 MiB"]

[metric]
value = 'value: ([0-9]+)'
"#,
    );
    let runner = spawn_eremite(&["scenario", "run", arg(&file)]);
    // While the guests sleep: each VMM's vCPU thread is on a CPU of its own.
    let mut pins = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while pins.len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        pins = vcpu_pins(runner.pid());
    }
    pins.sort();
    assert_eq!(pins, ["0", "1"], "the vCPU threads' Cpus_allowed_list");
    let run = runner.wait();
    run.expect_code(0);
    for copy in ["probe-0", "probe-1"] {
        for line in ["cpus: 1", "memory: 96 MiB", "value: 55"] {
            assert!(run.stdout.contains(&format!("[{copy}] {line}\n")), "{run}");
        }
        let row = summary_row(&run, copy);
        assert_eq!(&row[1..2], ["0"], "exit code in {row:?}");
        assert_eq!(row[4], "55", "metric in {row:?}");
        assert!(row.ends_with(&["ok"]), "{row:?}");
    }
    assert!(run.stdout.contains("all 2 instances passed"), "{run}");
}

/// The `Cpus_allowed_list` of every `vcpu0` thread of the runner's
/// children.
fn vcpu_pins(runner: u32) -> Vec<String> {
    let children = std::fs::read_to_string(format!("/proc/{runner}/task/{runner}/children"))
        .unwrap_or_default();
    let mut pins = Vec::new();
    for child in children.split_whitespace() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{child}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() != "vcpu0" {
                continue;
            }
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            if let Some(list) = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            {
                pins.push(list.trim().to_owned());
            }
        }
    }
    pins
}

#[test]
fn a_missing_line_fails_the_run_and_the_timeout_stops_a_spinning_guest() {
    require_kvm();
    let dir = scratch("fail");
    let file = scenario_file(
        &dir,
        "fail.toml",
        r#"
name = "fail"
[experiment]
timeout = "3s"

[[instance]]
name = "spinner"
image = "PROBE"
args = ["5", "spin"]

[[instance]]
name = "wrong"
image = "PROBE"
args = ["5"]
expect_output = ["value: 6"]

[[instance]]
name = "right"
image = "PROBE"
args = ["5"]
expect_output = ["value: 5"]
"#,
    );
    let started = Instant::now();
    let run = eremite_cli(&["scenario", "run", arg(&file)]);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the timeout did not stop the run"
    );
    run.expect_code(1);
    let spinner = summary_row(&run, "spinner").join(" ");
    assert!(
        spinner.contains("stopped: the run's timeout (3s) passed"),
        "{run}"
    );
    let wrong = summary_row(&run, "wrong").join(" ");
    assert!(wrong.contains("no line with \"value: 6\""), "{run}");
    assert!(summary_row(&run, "right").ends_with(&["ok"]), "{run}");
    assert!(run.stdout.contains("2 of 3 instances failed"), "{run}");
}

#[test]
fn ctrl_c_stops_every_instance_and_leaves_no_vm_behind() {
    require_kvm();
    let dir = scratch("interrupt");
    let file = scenario_file(
        &dir,
        "spin.toml",
        "name = \"spin\"\n[[instance]]\nname = \"s\"\nimage = \"PROBE\"\nargs = [\"5\", \"spin\"]\ncount = 2\nready_when = \"ready\"\n",
    );
    let runner = spawn_eremite(&["scenario", "run", arg(&file)]);
    runner.wait_for_output("[s-1] ready");
    runner.wait_for_output("[s-0] ready");
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", runner.pid()))
        .expect("children");
    let children: Vec<&str> = children.split_whitespace().collect();
    assert_eq!(children.len(), 2, "{children:?}");
    let status = std::process::Command::new("kill")
        .args(["-INT", &runner.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let run = runner.wait();
    run.expect_code(130);
    assert!(
        summary_row(&run, "s-0")
            .join(" ")
            .contains("stopped: interrupted"),
        "{run}"
    );
    for child in children {
        assert!(
            !Path::new(&format!("/proc/{child}")).exists(),
            "VMM {child} is still there"
        );
    }
}

#[test]
fn instances_reach_each_other_by_name_and_the_vmm_stays_within_its_memory_bound() {
    require_kvm();
    let dir = scratch("network");
    let file = scenario_file(
        &dir,
        "net.toml",
        r#"
name = "net"
[network]
subnet = "10.77.0.0/24"
[experiment]
timeout = "60s"

[[instance]]
name = "server"
image = "ECHO"
ready_when = "listening on"
expect_output = ["served 1 connections"]

[[instance]]
name = "client"
image = "PROBE"
args = ["1", "connect", "server", "7777"]
after = ["server"]
expect_output = ["reply: ping"]

[[instance]]
name = "big"
image = "PROBE"
args = ["1", "touch", "200"]
memory = "256M"
expect_output = ["touched 200 MiB"]
"#,
    );
    let run = eremite_cli(&["scenario", "run", arg(&file)]);
    run.expect_code(0);
    // The client started only once the server listened.
    let listening = run
        .stdout
        .find("[server] listening on")
        .expect("server ready");
    let client = run.stdout.find("[client] ").expect("client output");
    assert!(listening < client, "{run}");
    // Guest RAM touched, plus the VMM's own memory (docs/scenarios.md:
    // at most 32 MiB beyond the guest's RAM).
    let peak = peak_mib(&summary_row(&run, "big"));
    assert!((200..=256 + 32).contains(&peak), "peak {peak} MiB\n{run}");
    assert!(peak_mib(&summary_row(&run, "server")) <= 64 + 32, "{run}");
}

#[test]
fn an_experiment_writes_a_row_per_run_and_instance_a_summary_and_charts() {
    require_kvm();
    let dir = scratch("experiment");
    let file = scenario_file(
        &dir,
        "sweep.toml",
        r#"
name = "sweep"
[vary]
n = [10, 20]
vcpus = [1, 2]

[[instance]]
name = "p"
image = "PROBE"
args = ["{n}"]
count = 2
cpus = "{vcpus}"
expect_output = ["cpus: {vcpus}"]

[metric]
value = 'value: ([0-9]+)'
cpus = 'cpus: ([0-9]+)'

[experiment]
repeat = 2
"#,
    );
    let out = dir.join("results");
    let run = eremite_cli(&["experiment", "run", arg(&file), "--out", arg(&out)]);
    run.expect_code(0);
    let csv = std::fs::read_to_string(out.join("runs.csv")).expect("runs.csv");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("n,vcpus,repeat,instance,exit,wall_s,value,cpus,peak_vmm_mib,ok,failure")
    );
    let rows: Vec<&str> = lines.collect();
    // 2 x 2 combinations, 2 repeats, 2 instances.
    assert_eq!(rows.len(), 16, "{csv}");
    assert!(rows.iter().all(|r| r.contains(",true,")), "{csv}");
    assert_eq!(
        rows.iter()
            .filter(|r| r.starts_with("20,2,") && r.contains(",6765,2,"))
            .count(),
        4,
        "{csv}"
    );
    let summary = std::fs::read_to_string(out.join("summary.md")).expect("summary.md");
    // Each run's two instances summed: 2 x fib(20), 2 x vCPUs.
    assert!(
        summary.contains("| 20 | 2 | 2 (0) | 13530 (13530–13530) | 4 (4–4) |"),
        "{summary}"
    );
    for chart in ["value.svg", "cpus.svg"] {
        let svg = std::fs::read_to_string(out.join(chart)).expect("a chart");
        assert!(
            svg.starts_with("<svg") && svg.contains("n=20 vcpus=2"),
            "{chart}"
        );
    }
}
