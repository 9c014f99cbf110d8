//! Unmodified dynamic Linux programs (`docs/linux.md`, "Dynamic
//! programs"): the C programs of `examples/c` built with the host's gcc
//! against glibc (`NAME-glibc`, PIEs that need `ld.so` and `libc.so.6`),
//! and Debian's own `/usr/bin/sqlite3`. The VMM loads `ld.so` and packs
//! the libraries into the initrd; `ld.so` maps them with `mmap` of files,
//! and the kernel rewrites their system-call sites as they are mapped.

use std::process::Command;

use eremite_tests::{Run, boot_image, glibc_image, run_command};

fn boot_glibc(name: &str, options: &[&str], args: &[&str]) -> Run {
    boot_image(&glibc_image(name), options, args)
}

#[test]
fn a_glibc_program_gets_its_arguments_environment_and_exit_code() {
    let run = boot_glibc(
        "hello",
        &["-e", "GREETING=bonjour", "--stats"],
        &["42", "two words"],
    );
    run.expect_code(42);
    assert!(
        run.stdout.starts_with("hello from glibc, argc=3\n"),
        "{run}"
    );
    assert!(run.stdout.contains("argv[2]=two words\n"), "{run}");
    assert!(run.stdout.contains("GREETING=bonjour\n"), "{run}");
    assert!(
        run.stdout.contains("/proc/self/exe is argv[0]: yes\n"),
        "{run}"
    );
    // libc.so.6's sites were rewritten when ld.so mapped it, judged by
    // the functions of its .dynsym: all but a few percent.
    let (rewritten, left) = (
        run.stat("rewritten when mapped"),
        run.stat("left when mapped"),
    );
    assert!(rewritten > 100 && left * 10 < rewritten, "{run}");
}

#[test]
fn glibc_threads_share_a_mutex_a_condvar_and_tls_on_one_and_two_cpus() {
    for cpus in ["1", "2"] {
        let run = boot_glibc("pthreads", &["--cpus", cpus], &[]);
        run.expect_code(0);
        assert_eq!(
            run.stdout,
            "main is named pthreads, names kept\ncounter=80000 sum=28 own=7\ncreated and joined 1000 threads\n",
            "{run}"
        );
    }
}

#[test]
fn glibc_programs_pass_the_socket_readiness_signal_and_memory_checks() {
    // The same programs, and the same counts of checks, as for musl
    // (tests/tests/linux.rs); each passes on Linux.
    for (name, oks) in [
        ("sockets", 34),
        ("readiness", 52),
        ("signals", 22),
        ("memory", 19),
    ] {
        for cpus in ["1", "2"] {
            let run = boot_glibc(name, &["--cpus", cpus], &[]);
            run.expect_code(0);
            let passed = run.stdout.lines().filter(|l| l.starts_with("ok ")).count();
            assert_eq!(passed, oks, "{name}\n{run}");
            assert!(run.stdout.ends_with(&format!("{name} passed\n")), "{run}");
        }
    }
}

#[test]
fn the_glibc_file_system_transcript_matches_linux_line_for_line() {
    let program = glibc_image("fsdiff");
    let base = eremite_tests::scratch_base();
    let dir = base.join(format!("eremite-glibc-fsdiff-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let native = run_command(Command::new(&program).arg(&dir));
    native.expect_code(0);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(native.stdout.ends_with("end of transcript\n"), "{native}");
    let run = boot_image(&program, &[], &["/fsdiff"]);
    run.expect_code(0);
    for (number, (l, e)) in native.stdout.lines().zip(run.stdout.lines()).enumerate() {
        assert_eq!(e, l, "transcripts differ at line {}\n{run}", number + 1);
    }
    assert_eq!(
        native.stdout.lines().count(),
        run.stdout.lines().count(),
        "{run}"
    );
}

/// A script with a table of 10,000 rows inserted in one transaction, a
/// join and aggregates.
const SQL: &str = "\
create table city(id integer primary key, name text, country text);
create table visit(city integer, year integer, people integer);
begin;
with recursive n(i) as (select 1 union all select i + 1 from n where i < 100)
  insert into city select i, 'city' || i, char(65 + i % 7) from n;
with recursive n(i) as (select 1 union all select i + 1 from n where i < 10000)
  insert into visit select 1 + i % 100, 2000 + i % 25, (i * 7919) % 1000 from n;
commit;
select count(*), sum(people), min(year), max(year) from visit;
select c.country, count(*), sum(v.people), round(avg(v.people), 3)
  from visit v join city c on v.city = c.id
  group by c.country order by c.country;
select c.name, sum(v.people) as total from visit v join city c on v.city = c.id
  group by c.id order by total desc, c.name limit 5;
select sqlite_version() = sqlite_version();
";

#[test]
fn debian_sqlite3_runs_a_script_as_it_does_natively() {
    let sqlite = std::path::Path::new("/usr/bin/sqlite3");
    assert!(
        sqlite.exists(),
        "/usr/bin/sqlite3 is missing: run the tests with `./x test`, which installs it"
    );
    let native = run_command(Command::new(sqlite).args([":memory:", SQL]));
    native.expect_code(0);
    assert_eq!(native.stdout.lines().count(), 1 + 7 + 5 + 1, "{native}");
    let run = boot_image(sqlite, &[], &[":memory:", SQL]);
    run.expect_code(0);
    assert_eq!(run.stdout, native.stdout, "{run}");
    assert!(run.stderr.is_empty(), "{run}");
}

/// The program natively and in eremite with `options`: the same output.
fn same_as_native(name: &str, options: &[&str]) -> Run {
    let program = glibc_image(name);
    let native = run_command(&mut Command::new(&program));
    native.expect_code(0);
    let run = boot_image(&program, options, &[]);
    run.expect_code(0);
    assert_eq!(run.stdout, native.stdout, "{run}");
    run
}

#[test]
fn cpp_threads_iostreams_and_exceptions_match_native() {
    // examples/c/iostreams.cpp: std::thread, std::mutex, iostreams,
    // std::map, std::sort, a thrown and caught exception (libstdc++ and
    // libgcc_s's unwinder, dynamically linked).
    let run = same_as_native("iostreams", &["--cpus", "2"]);
    assert!(run.stdout.ends_with("exceptions unwind\n"), "{run}");
}

#[test]
fn fortran_matches_native() {
    // examples/c/matrix.f90: matmul and array intrinsics, libgfortran.
    let run = same_as_native("matrix", &[]);
    assert!(run.stdout.starts_with("trace = "), "{run}");
}

#[test]
fn an_openmp_loop_uses_both_cpus_and_gets_the_same_result() {
    // examples/c/openmp.c (gcc -fopenmp, libgomp): one thread per vCPU,
    // and the integral does not depend on how many. Its speed-up (about
    // 1.9 on 2 vCPUs here) is printed, not asserted: timing is for
    // benchmarks.
    let run = boot_image(&glibc_image("openmp"), &["--cpus", "2"], &[]);
    run.expect_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "threads=2", "{run}");
    assert_eq!(lines[1], "pi(1 thread)=3.1415926536", "{run}");
    assert_eq!(lines[2], "pi(2 threads)=3.1415926536", "{run}");
    assert!(lines[3].starts_with("speedup="), "{run}");
}
