//! Benchmarks: programs, not tests. Each prints a table with the ratio to
//! native Linux measured in the same run, and writes JSON and an SVG chart
//! to `bench-results/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::{Result, build_cli, build_image, cargo, root, run_command};

const HOST_TARGET: &str = "x86_64-unknown-linux-gnu";
const DEFAULT_RUNS: usize = 30;

pub(crate) fn bench(args: &[String]) -> Result {
    match args {
        [name, rest @ ..] if name == "boot" => boot(parse_runs(rest)?),
        _ => Err("usage: ./x bench boot [--runs N]".to_owned()),
    }
}

fn parse_runs(args: &[String]) -> Result<usize> {
    match args {
        [] => Ok(DEFAULT_RUNS),
        [flag, n] if flag == "--runs" => match n.parse::<usize>() {
            Ok(n) if n >= 5 => Ok(n),
            _ => Err(format!("--runs wants a number of at least 5, not `{n}`")),
        },
        _ => Err("usage: ./x bench boot [--runs N]".to_owned()),
    }
}

/// Summary of a set of wall-time samples, in milliseconds.
struct Summary {
    median: f64,
    p10: f64,
    p90: f64,
    min: f64,
    max: f64,
}

impl Summary {
    fn of(samples: &[f64]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        Self {
            median: at(0.5),
            p10: at(0.1),
            p90: at(0.9),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        }
    }
}

/// Wall time of `eremite run hello` from process start to exit, against a
/// native Linux build of the same program, interleaved run by run so both
/// see the same machine noise.
fn boot(runs: usize) -> Result {
    let cli = build_cli()?;
    let image = build_image("hello")?;
    let native = build_native("hello")?;

    let eremite_cmd = |c: &mut Command| {
        c.arg("run").arg(&image);
    };
    // Warm the page cache for both binaries.
    time_once(&cli, eremite_cmd)?;
    time_once(&native, |_| {})?;
    let mut eremite_ms = Vec::with_capacity(runs);
    let mut native_ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        eremite_ms.push(time_once(&cli, eremite_cmd)?);
        native_ms.push(time_once(&native, |_| {})?);
    }
    let unikernel = Summary::of(&eremite_ms);
    let linux = Summary::of(&native_ms);
    let ratio = unikernel.median / linux.median;
    let stripped = stripped_size(&image)?;
    let breakdown = verbose_breakdown(&cli, &image)?;

    println!("boot: `eremite run hello` vs native Linux `hello`, {runs} interleaved runs, wall ms");
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "median", "p10", "p90", "min", "max"
    );
    for (name, s) in [
        ("eremite (KVM guest)", &unikernel),
        ("native Linux process", &linux),
    ] {
        println!(
            "{name:<22} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            s.median, s.p10, s.p90, s.min, s.max
        );
    }
    println!("ratio eremite / native (median): {ratio:.2}x");
    println!(
        "hello image: {} bytes stripped ({:.0} KiB)",
        stripped,
        stripped as f64 / 1024.0
    );
    if let Some(line) = &breakdown {
        println!("one verbose run: {line}");
    }

    let dir = root().join("bench-results");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let json = format!(
        "{{\n  \"benchmark\": \"boot\",\n  \"runs\": {runs},\n  \"unit\": \"ms\",\n  \
         \"eremite\": {},\n  \"native\": {},\n  \"ratio_median\": {ratio:.3},\n  \
         \"image_stripped_bytes\": {stripped},\n  \"breakdown\": {}\n}}\n",
        summary_json(&unikernel, &eremite_ms),
        summary_json(&linux, &native_ms),
        breakdown.as_deref().map_or("null".to_owned(), |b| format!(
            "\"{}\"",
            b.replace('"', "'")
        )),
    );
    write(&dir.join("boot.json"), &json)?;
    write(
        &dir.join("boot.svg"),
        &svg_chart(&[("eremite", &unikernel), ("native Linux", &linux)]),
    )?;
    println!("wrote {} and boot.svg", dir.join("boot.json").display());
    Ok(())
}

fn time_once(program: &Path, configure: impl Fn(&mut Command)) -> Result<f64> {
    let mut command = Command::new(program);
    configure(&mut command);
    command.stdout(Stdio::null()).stderr(Stdio::null());
    let start = Instant::now();
    let status = command
        .status()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let elapsed = start.elapsed();
    if !status.success() {
        return Err(format!("{command:?} failed ({status})"));
    }
    Ok(elapsed.as_secs_f64() * 1e3)
}

/// Build an example for the host, as a native Linux program.
fn build_native(name: &str) -> Result<PathBuf> {
    run_command(cargo().current_dir(root().join("examples")).args([
        "build",
        "--release",
        "--quiet",
        "--package",
        name,
        "--target",
        HOST_TARGET,
        // The host has a prebuilt std; do not rebuild it.
        "--config",
        "unstable.build-std=[]",
    ]))?;
    Ok(root()
        .join("examples/target")
        .join(HOST_TARGET)
        .join("release")
        .join(name))
}

fn stripped_size(image: &Path) -> Result<u64> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(root())
        .output()
        .map_err(|e| format!("cannot run rustc: {e}"))?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_owned();
    let strip = Path::new(&sysroot)
        .join("lib/rustlib")
        .join(HOST_TARGET)
        .join("bin/llvm-strip");
    let out = std::env::temp_dir().join(format!("eremite-stripped-{}", std::process::id()));
    run_command(Command::new(strip).arg("-o").arg(&out).arg(image))?;
    let size = std::fs::metadata(&out).map_err(|e| e.to_string())?.len();
    let _ = std::fs::remove_file(&out);
    Ok(size)
}

/// The CLI's one-line boot-time breakdown from a `--verbose` run.
fn verbose_breakdown(cli: &Path, image: &Path) -> Result<Option<String>> {
    let output = Command::new(cli)
        .arg("run")
        .arg("--verbose")
        .arg(image)
        .output()
        .map_err(|e| format!("cannot run eremite: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    Ok(stderr
        .lines()
        .find(|l| l.contains("vmm setup"))
        .map(|l| l.trim().to_owned()))
}

fn summary_json(s: &Summary, samples: &[f64]) -> String {
    let list: Vec<String> = samples.iter().map(|v| format!("{v:.3}")).collect();
    format!(
        "{{ \"median\": {:.3}, \"p10\": {:.3}, \"p90\": {:.3}, \"min\": {:.3}, \"max\": {:.3}, \"samples\": [{}] }}",
        s.median,
        s.p10,
        s.p90,
        s.min,
        s.max,
        list.join(", ")
    )
}

/// A horizontal bar chart of medians with p10–p90 whiskers.
fn svg_chart(rows: &[(&str, &Summary)]) -> String {
    let width = 640.0;
    let left = 130.0;
    let bar_height = 28.0;
    let scale_max = rows
        .iter()
        .map(|(_, s)| s.p90)
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.15;
    let x = |ms: f64| left + (width - left - 20.0) * ms / scale_max;
    let height = 50.0 + rows.len() as f64 * (bar_height + 16.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"13\">\n\
         <text x=\"10\" y=\"20\">Boot to exit, wall time (ms): median, whiskers p10-p90</text>\n"
    );
    for (i, (name, s)) in rows.iter().enumerate() {
        let y = 36.0 + i as f64 * (bar_height + 16.0);
        let mid = y + bar_height / 2.0;
        svg += &format!(
            "<text x=\"10\" y=\"{:.1}\">{name}</text>\n\
             <rect x=\"{left}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bar_height}\" fill=\"{}\"/>\n\
             <line x1=\"{:.1}\" y1=\"{mid:.1}\" x2=\"{:.1}\" y2=\"{mid:.1}\" stroke=\"black\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\">{:.2} ms</text>\n",
            mid + 4.0,
            x(s.median) - left,
            if i == 0 { "#4a7bd0" } else { "#999999" },
            x(s.p10),
            x(s.p90),
            x(s.p90) + 6.0,
            mid + 4.0,
            s.median,
        );
    }
    svg + "</svg>\n"
}

fn write(path: &Path, text: &str) -> Result {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
