//! `eremite run --profile DIR`: the sampling profiler, on a program whose
//! profile is known (`examples/busy`: two threads, nine tenths of their
//! time in `busy::hot_loop`, the rest in `busy::cold_loop`).

use std::path::Path;

use eremite_tests::{Run, boot_image, eremite_cli, image, linux_image, output_dir};

/// Samples of the call chains whose leaf (last frame) is `function`.
fn leaf_samples(folded: &str, function: &str) -> u64 {
    folded
        .lines()
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(chain, _)| chain.rsplit(';').next() == Some(function))
        .map(|(_, count)| count.parse::<u64>().expect("a count"))
        .sum()
}

/// Profile `busy` for 600 ms on two vCPUs at 499 Hz and check that the
/// profile says what the program does.
fn profile_busy(image: &Path, dir: &Path) -> Run {
    let dir_text = dir.to_str().unwrap();
    let run = boot_image(image, &["--cpus", "2", "--profile", dir_text], &["600"]);
    run.expect_code(0);
    assert!(run.stdout.starts_with("busy: "), "{run}");
    let folded = std::fs::read_to_string(dir.join("profile.folded")).unwrap();
    let total: u64 = folded
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    // Two vCPUs for 0.6 s at 499 Hz: about 600 samples (boot and exit
    // add a little). A vCPU thread that the host does not run meanwhile
    // (the tests share two CPUs) takes no samples: as few as 430 were
    // seen under `./x test`.
    assert!((300..=800).contains(&total), "{total} samples\n{folded}");
    assert!(
        run.stderr.contains(&format!(
            "eremite: profile: {total} samples in {dir_text}/flame.svg"
        )),
        "{run}"
    );
    // The most frequent chain ends in the hot function, called from
    // `busy::work` (its callers come from the frame pointers).
    let top = folded.lines().next().unwrap();
    assert!(
        top.contains(";busy::work;busy::hot_loop "),
        "top chain: {top}\n{folded}"
    );
    let hot = leaf_samples(&folded, "busy::hot_loop") as f64 / total as f64;
    let cold = leaf_samples(&folded, "busy::cold_loop") as f64 / total as f64;
    assert!((0.75..=0.95).contains(&hot), "hot {hot}\n{folded}");
    assert!((0.04..=0.18).contains(&cold), "cold {cold}\n{folded}");
    // Both threads: the main thread's chain and the spawned one's.
    assert!(
        folded
            .lines()
            .any(|l| l.contains(";busy::main;busy::work;")),
        "{folded}"
    );
    assert!(
        folded
            .lines()
            .any(|l| l.contains("busy::main::{closure") && l.contains(";busy::work;")),
        "{folded}"
    );
    let svg = std::fs::read_to_string(dir.join("flame.svg")).unwrap();
    assert!(
        svg.starts_with("<?xml") && svg.contains("busy::hot_loop"),
        "{svg:.300}"
    );
    run
}

#[test]
fn a_profile_puts_the_hot_function_on_top() {
    let dir = output_dir("profile-hermit");
    profile_busy(&image("busy"), &dir);
    // Kernel code is named too (the program reads the clock).
    let folded = std::fs::read_to_string(dir.join("profile.folded")).unwrap();
    assert!(
        folded.lines().any(|l| l.contains("eremite_kernel::")),
        "{folded}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_linux_program_is_profiled_the_same_way() {
    let dir = output_dir("profile-linux");
    profile_busy(&linux_image("busy"), &dir);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_profile_options_are_refused() {
    let busy = image("busy");
    let busy = busy.to_str().unwrap();
    for (args, code, message) in [
        (
            vec!["run", "--profile", "/tmp/p", "--profile-hz", "0", busy],
            2,
            "invalid value '0' for '--profile-hz <HZ>'",
        ),
        (
            vec!["run", "--profile", "/tmp/p", "--profile-hz", "10001", busy],
            2,
            "invalid value '10001' for '--profile-hz <HZ>'",
        ),
        (
            vec!["run", "--profile-hz", "100", busy],
            2,
            "--profile <DIR>",
        ),
        (
            vec!["run", "--profile", "/proc/version/out", busy],
            125,
            "eremite: cannot write /proc/version/out: ",
        ),
    ] {
        let run = eremite_cli(&args);
        run.expect_code(code);
        assert!(run.stderr.contains(message), "{args:?}\n{run}");
    }
}
