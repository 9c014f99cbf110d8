//! Debian's own servers, unmodified, in eremite (`docs/linux.md`,
//! "Dynamic programs"): the binary the package installed, its libraries
//! packed by the VMM, served to clients on the host through a tap inside
//! a network namespace the test creates. `./x test` installs the packages.

use std::process::Command;
use std::time::{Duration, Instant};

use eremite_tests::{GUEST_IP, NetNs, Run, run_command};

fn network() -> (NetNs, [&'static str; 6]) {
    let ns = NetNs::with_tap("stap0", "10.0.0.1/24");
    (
        ns,
        [
            "--net",
            "tap:stap0",
            "--ip",
            "10.0.0.2/24",
            "--gateway",
            "10.0.0.1",
        ],
    )
}

fn require(path: &str) -> &std::path::Path {
    let path = std::path::Path::new(path);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `./x test`, which installs it",
        path.display()
    );
    path
}

/// `redis-cli` against the guest, from inside the namespace.
fn redis_cli(ns: &NetNs, args: &[&str]) -> Run {
    ns.enter(|| run_command(Command::new("redis-cli").args(["-h", GUEST_IP]).args(args)))
}

#[test]
fn debian_redis_serves_clients_and_shuts_down_cleanly_on_sigterm() {
    let server = require("/usr/bin/redis-server");
    require("/usr/bin/redis-cli");
    let (ns, card) = network();
    let guest = ns.spawn_image(
        server,
        &card,
        &["--save", "", "--appendonly", "no", "--protected-mode", "no"],
    );
    let (guest, ()) = guest.talk(|| {
        let started = Instant::now();
        while redis_cli(&ns, &["ping"]).stdout != "PONG\n" {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "redis never answered PING"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        for (args, answer) in [
            (&["set", "greeting", "bonjour"][..], "OK"),
            (&["get", "greeting"], "bonjour"),
            (&["incr", "counter"], "1"),
            (&["incrby", "counter", "41"], "42"),
            (&["lpush", "list", "c", "b", "a"], "3"),
            (&["lrange", "list", "0", "-1"], "a\nb\nc"),
            (&["dbsize"], "3"),
        ] {
            let run = redis_cli(&ns, args);
            run.expect_code(0);
            assert_eq!(run.stdout.trim_end(), answer, "{args:?}\n{run}");
        }
        // 50 clients, 10,000 requests each (pipelined 16 deep), GET and
        // SET: every request answered, no error.
        let bench = ns.enter(|| {
            run_command(Command::new("redis-benchmark").args([
                "-h", GUEST_IP, "-q", "-c", "50", "-n", "500000", "-P", "16", "-t", "get,set",
            ]))
        });
        bench.expect_code(0);
        assert!(
            bench.stdout.contains("SET: ") && bench.stdout.contains("GET: "),
            "{bench}"
        );
        assert!(
            !bench.stdout.to_lowercase().contains("error")
                && !bench.stderr.to_lowercase().contains("error"),
            "{bench}"
        );
        assert_eq!(redis_cli(&ns, &["get", "greeting"]).stdout, "bonjour\n");
    });
    // SIGTERM to eremite reaches redis's handler: it says so and exits 0.
    run_command(Command::new("kill").args(["-TERM", &guest.pid().to_string()])).expect_code(0);
    let run = guest.wait();
    run.expect_code(0);
    assert!(run.stdout.contains("Received SIGTERM"), "{run}");
    assert!(run.stdout.contains("ready to exit, bye bye"), "{run}");
}
