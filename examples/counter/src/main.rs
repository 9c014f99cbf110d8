//! Counts, for snapshot tests (`tests/tests/snapshot.rs`): every STEP_MS
//! milliseconds the main thread writes the count into a file of the RAM
//! file system and prints it with the clocks; a worker thread on another
//! vCPU (if there is one) wakes on a channel and sleeps in between. At
//! COUNT it checks that every file holds its number, that `Instant` never
//! went backwards and that the wall clock moved with it, prints eight
//! bytes of /dev/urandom and exits 0 (1 on a mismatch).
//!
//! With `snapshot-at:K` it asks for a snapshot of itself at count K
//! (`eremite::vm::snapshot`, needs `eremite run --snapshot-to DIR`) and
//! says whether it goes on after taking it or was restored from it; with
//! `snapshot-at:K:stop` the VM stops once it is written.
//!
//! `counter [COUNT [STEP_MS [snapshot-at:K[:stop]]]]` (default 200 steps of
//! 10 ms). `COUNTER_DIR` names the directory for the files (default
//! `/tmp/counter`); `COUNTER_TOUCH_MIB=N` first fills N MiB of memory, kept
//! to the end (for the snapshot benchmark's sizes); `COUNTER_LOG=PATH`
//! keeps PATH open for appending and writes each count into it too.
use std::io::Read as _;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn wall_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let count: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let step = Duration::from_millis(args.next().and_then(|a| a.parse().ok()).unwrap_or(10));
    let snapshot_at: Option<(u32, bool)> = args.next().and_then(|a| {
        let mut parts = a.strip_prefix("snapshot-at:")?.split(':');
        let at = parts.next()?.parse().ok()?;
        Some((at, parts.next() == Some("stop")))
    });
    let dir = std::path::PathBuf::from(
        std::env::var("COUNTER_DIR").unwrap_or_else(|_| "/tmp/counter".to_owned()),
    );
    let dir = dir.as_path();
    std::fs::create_dir_all(dir).expect("a directory in the RAM file system");
    let mut log = std::env::var("COUNTER_LOG").ok().map(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("the log file")
    });
    let touched: Vec<u8> = std::env::var("COUNTER_TOUCH_MIB")
        .ok()
        .and_then(|mib| mib.parse::<usize>().ok())
        .map_or_else(Vec::new, |mib| vec![0x5a; mib << 20]);

    let (to_worker, worker_gets) = mpsc::channel::<u32>();
    let (to_main, main_gets) = mpsc::channel::<u32>();
    let worker = std::thread::spawn(move || {
        let mut sum = 0u64;
        while let Ok(n) = worker_gets.recv() {
            sum += u64::from(n);
            std::thread::sleep(Duration::from_millis(1));
            to_main.send(n).expect("main listens");
        }
        sum
    });

    let started = Instant::now();
    let mut last = started;
    for n in 0..count {
        std::fs::write(dir.join(n.to_string()), n.to_string()).expect("write a count");
        to_worker.send(n).expect("worker listens");
        assert_eq!(main_gets.recv().expect("worker answers"), n);
        let now = Instant::now();
        if now < last {
            println!("Instant went backwards at {n}");
            std::process::exit(1);
        }
        last = now;
        if let Some(log) = &mut log {
            use std::io::Write as _;
            writeln!(log, "count {n}").expect("write the log");
        }
        println!(
            "count {n} mono_ms {} wall_ms {}",
            now.duration_since(started).as_millis(),
            wall_ms()
        );
        if let Some((at, stop)) = snapshot_at
            && at == n
        {
            snapshot(stop);
        }
        std::thread::sleep(step);
    }
    drop(to_worker);
    let sum = worker.join().expect("worker ends");
    let expected: u64 = (0..u64::from(count)).sum();
    let mut bad = 0;
    for n in 0..count {
        let text = std::fs::read_to_string(dir.join(n.to_string())).unwrap_or_default();
        if text != n.to_string() {
            bad += 1;
        }
    }
    let mut random = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .expect("/dev/urandom");
    println!("random {:016x}", u64::from_le_bytes(random));
    println!(
        "files {} bad {bad} worker sum {sum} expected {expected}",
        count
    );
    if touched.iter().step_by(4096).any(|&b| b != 0x5a) {
        println!("the touched memory changed");
        std::process::exit(1);
    }
    if bad != 0 || sum != expected {
        std::process::exit(1);
    }
    println!("counter done");
}

/// Ask the VM for a snapshot of this point; say what came of it.
#[cfg(target_os = "hermit")]
fn snapshot(stop: bool) {
    let outcome = if stop {
        eremite::vm::snapshot_and_stop().map(|()| eremite::vm::Snapshotted::Restored)
    } else {
        eremite::vm::snapshot()
    };
    match outcome {
        Ok(eremite::vm::Snapshotted::Taken) => println!("snapshot taken"),
        Ok(eremite::vm::Snapshotted::Restored) => println!("restored from the snapshot"),
        Err(error) => println!("no snapshot: {error}"),
    }
}

#[cfg(not(target_os = "hermit"))]
fn snapshot(_stop: bool) {
    println!("no snapshot: not in an eremite VM");
}
