//! The `snapshot` group: what snapshots cost and what restoring one saves
//! (docs/snapshots.md).
//!
//! - Rows: the wall time of `eremite run counter -- 1 0` (a cold boot that
//!   counts once) and of `eremite restore` of a snapshot the same program
//!   took of itself at its first count (`snapshot-at:0:stop`), each
//!   against the native `counter 1 0`, interleaved run by run.
//! - Printed and kept in the JSON: the time from `eremite restore`'s start
//!   to the guest's first instruction (`restore -v`, median), and the time
//!   and disk space a snapshot takes of a 64 MiB and a 1 GiB guest that
//!   touched little or most of its memory (`COUNTER_TOUCH_MIB`).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{HOST_TARGET, Row, Stat, run_command_output, time_interleaved};
use crate::{Result, build_image, root};

/// The group's rows and its JSON extras.
pub(super) fn snapshots(cli: &Path, is_quick: bool) -> Result<(Vec<Row>, Vec<String>)> {
    let image = build_image("counter")?;
    crate::build_native_examples(&["counter"])?;
    let native = root()
        .join("examples/target")
        .join(HOST_TARGET)
        .join("release/counter");
    let work = root().join("target/bench-snapshots");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;

    // A snapshot the program takes of itself at its first count.
    let at_main = work.join("at-main");
    run_command_output(
        Command::new(cli)
            .arg("run")
            .arg("--snapshot-to")
            .arg(&at_main)
            .arg(&image)
            .args(["--", "1", "0", "snapshot-at:0:stop"]),
    )?;
    let mut cold = Command::new(cli);
    cold.arg("run").arg(&image).args(["--", "1", "0"]);
    let mut restore = Command::new(cli);
    restore.arg("restore").arg(&at_main);
    let mut linux = Command::new(&native);
    linux
        .env("COUNTER_DIR", work.join("native"))
        .args(["1", "0"]);
    let runs = if is_quick { 5 } else { 30 };
    let [cold_ms, restore_ms, native_ms] =
        time_interleaved([&mut cold, &mut restore, &mut linux], runs)?;
    let row = |name: &str, samples: &[f64]| Row {
        group: "snapshot",
        name: name.to_owned(),
        unit: "ms".to_owned(),
        eremite: Stat::of(samples),
        linux: Stat::of(&native_ms),
    };
    let rows = vec![
        row("counter_cold_boot_wall", &cold_ms),
        row("counter_restore_wall", &restore_ms),
    ];

    let first_instruction = (0..runs)
        .map(|_| first_instruction_ms(cli, &at_main))
        .collect::<Result<Vec<f64>>>()?;
    let first_instruction = Stat::of(&first_instruction).median;

    let sizes: &[(&str, u64)] = if is_quick {
        &[("64M", 0), ("64M", 32)]
    } else {
        &[("64M", 0), ("64M", 32), ("1G", 0), ("1G", 768)]
    };
    let mut taken = Vec::new();
    for &(memory, touch_mib) in sizes {
        taken.push(take(cli, &image, &work, memory, touch_mib)?);
    }

    println!("snapshot: `eremite restore` of a snapshot taken at the program's first count");
    println!(
        "  first instruction after {first_instruction:.2} ms (median of {runs}, `restore -v`)"
    );
    for t in &taken {
        println!(
            "  snapshot of a {} guest that touched {} MiB: {} ms, {} MiB written, {} MiB on disk",
            t.memory, t.touch_mib, t.ms, t.written_mib, t.disk_mib
        );
    }
    let mut extra = vec![format!(
        "\"restore_first_instruction_ms\": {first_instruction:.3}"
    )];
    extra.push(format!(
        "\"snapshots\": [{}]",
        taken
            .iter()
            .map(|t| format!(
                "{{ \"memory\": \"{}\", \"touched_mib\": {}, \"ms\": {}, \"written_mib\": {}, \"disk_mib\": {} }}",
                t.memory, t.touch_mib, t.ms, t.written_mib, t.disk_mib
            ))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let _ = std::fs::remove_dir_all(&work);
    Ok((rows, extra))
}

/// The first-instruction time `eremite restore -v` reports.
fn first_instruction_ms(cli: &Path, snapshot: &Path) -> Result<f64> {
    let output = Command::new(cli)
        .args(["restore", "-v"])
        .arg(snapshot)
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run eremite restore: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr
        .split("first instruction after ")
        .nth(1)
        .and_then(|rest| rest.split(" ms").next())
        .and_then(|ms| ms.parse().ok())
        .ok_or_else(|| format!("`eremite restore -v` printed no first-instruction time: {stderr}"))
}

/// One snapshot's cost.
struct Taken {
    memory: &'static str,
    touch_mib: u64,
    ms: u64,
    written_mib: u64,
    disk_mib: u64,
}

/// Start the counter with `memory` of RAM that fills `touch_mib` MiB, take
/// a snapshot through its control socket once it counts, and stop it.
fn take(
    cli: &Path,
    image: &Path,
    work: &Path,
    memory: &'static str,
    touch_mib: u64,
) -> Result<Taken> {
    let socket = work.join(format!("vm-{memory}-{touch_mib}.sock"));
    let dir: PathBuf = work.join(format!("snap-{memory}-{touch_mib}"));
    let mut child = Command::new(cli)
        .arg("run")
        .arg("--memory")
        .arg(memory)
        .arg("--api")
        .arg(&socket)
        .arg("-e")
        .arg(format!("COUNTER_TOUCH_MIB={touch_mib}"))
        .arg(image)
        .args(["--", "1000000", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run eremite: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    // The program touched its memory once it prints its first count.
    let counted = BufReader::new(stdout)
        .lines()
        .map_while(std::result::Result::ok)
        .any(|line| line.starts_with("count "));
    let answer = if counted {
        run_command_output(
            Command::new(cli)
                .args(["vm"])
                .arg(&socket)
                .arg("snapshot")
                .arg(&dir)
                .arg("--stop"),
        )
    } else {
        Err("the counter ended before it counted".to_owned())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    let answer = answer?;
    // "snapshot: N KiB of memory written in M ms, the VM stops"
    let number_before = |word: &str| {
        answer
            .split_whitespace()
            .zip(answer.split_whitespace().skip(1))
            .find(|(_, next)| *next == word)
            .and_then(|(n, _)| n.parse::<u64>().ok())
            .ok_or_else(|| format!("no `{word}` in the snapshot's answer: {answer:?}"))
    };
    let written_kib = number_before("KiB")?;
    let ms = number_before("ms,")?;
    let disk = {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(dir.join("memory"))
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .blocks()
            * 512
    };
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Taken {
        memory,
        touch_mib,
        ms,
        written_mib: written_kib >> 10,
        disk_mib: disk >> 20,
    })
}
