//! Debian's own servers, unmodified, in eremite (`docs/linux.md`,
//! "Dynamic programs"): the binary the package installed, its libraries
//! packed by the VMM, served to clients on the host through a tap inside
//! a network namespace the test creates. `./x test` installs the packages.

use std::process::Command;
use std::time::{Duration, Instant};

use eremite_tests::{GUEST_IP, NetNs, Run, run_command};

fn network() -> (NetNs, [&'static str; 6]) {
    eremite_tests::tap_network("tap:stap0")
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

/// One request to memcached's text protocol; the reply up to `end`.
fn memcached_ask(stream: &mut std::net::TcpStream, request: &str, end: &str) -> String {
    use std::io::{Read, Write};
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(end.as_bytes()) {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "memcached closed");
        reply.push(byte[0]);
    }
    String::from_utf8(reply).unwrap()
}

#[test]
fn debian_memcached_on_two_cpus_serves_memcslap_and_a_scripted_client() {
    let server = require("/usr/bin/memcached");
    require("/usr/bin/memcslap");
    let (ns, card) = network();
    let mut options = vec!["--cpus", "2"];
    options.extend(card);
    let guest = ns.spawn_image(server, &options, &["-u", "root", "-t", "2"]);
    let (guest, ()) = guest.talk(|| {
        ns.enter(|| {
            let mut stream = eremite_tests::connect_to_guest(11211);
            assert_eq!(
                memcached_ask(&mut stream, "set greeting 0 0 7\r\nbonjour\r\n", "\r\n"),
                "STORED\r\n"
            );
            assert_eq!(
                memcached_ask(&mut stream, "get greeting\r\n", "END\r\n"),
                "VALUE greeting 0 7\r\nbonjour\r\nEND\r\n"
            );
            memcached_ask(&mut stream, "set n 0 0 1\r\n5\r\n", "\r\n");
            assert_eq!(
                memcached_ask(&mut stream, "incr n 37\r\n", "\r\n"),
                "42\r\n"
            );
            assert_eq!(
                memcached_ask(&mut stream, "delete greeting\r\n", "\r\n"),
                "DELETED\r\n"
            );
            assert_eq!(
                memcached_ask(&mut stream, "get greeting\r\n", "END\r\n"),
                "END\r\n"
            );
        });
        // 20 concurrent clients, 1,000 sets each.
        let slap = ns.enter(|| {
            run_command(Command::new("memcslap").args([
                &format!("--servers={GUEST_IP}:11211"),
                "--concurrency=20",
                "--execute-number=1000",
            ]))
        });
        slap.expect_code(0);
        assert!(slap.stdout.contains("Time to set"), "{slap}");
        assert!(
            !slap.stdout.contains("error") && !slap.stderr.contains("error"),
            "{slap}"
        );
    });
    run_command(Command::new("kill").args(["-TERM", &guest.pid().to_string()])).expect_code(0);
    guest.wait().expect_code(0);
}

#[test]
fn debian_nginx_serves_a_read_only_tree_and_a_megabyte_byte_exact() {
    // examples/nginx: a configuration for one process in the foreground.
    let server = require("/usr/sbin/nginx");
    let www = eremite_tests::scratch_base().join(format!("eremite-www-{}", std::process::id()));
    std::fs::create_dir_all(www.join("sub")).unwrap();
    std::fs::write(www.join("index.html"), "<h1>nginx in eremite</h1>\n").unwrap();
    std::fs::write(www.join("sub/note.txt"), "a note\n").unwrap();
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(www.join("big.bin"), &big).unwrap();
    let config = eremite_tests::root().join("examples/nginx");
    let mount = format!("{}:/var/www:ro", www.display());
    let (ns, card) = network();
    let mut options = vec!["--initrd", config.to_str().unwrap(), "--mount", &mount];
    options.extend(card);
    let guest = ns.spawn_image(server, &options, &["-c", "/etc/nginx/eremite.conf"]);
    let (guest, ()) = guest.talk(|| {
        ns.enter(|| {
            let index = eremite_tests::http_to_guest(80, "GET / HTTP/1.0\r\n\r\n");
            assert!(index.starts_with("HTTP/1.1 200 OK"), "{index}");
            assert!(
                index.ends_with("\r\n\r\n<h1>nginx in eremite</h1>\n"),
                "{index}"
            );
            let note = eremite_tests::http_to_guest(80, "GET /sub/note.txt HTTP/1.0\r\n\r\n");
            assert!(note.ends_with("\r\n\r\na note\n"), "{note}");
            let missing = eremite_tests::http_to_guest(80, "GET /nothing HTTP/1.0\r\n\r\n");
            assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
            // The megabyte, byte for byte.
            use std::io::{Read, Write};
            let mut stream = eremite_tests::connect_to_guest(80);
            stream.write_all(b"GET /big.bin HTTP/1.0\r\n\r\n").unwrap();
            let mut reply = Vec::new();
            stream.read_to_end(&mut reply).unwrap();
            let body = reply
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|at| &reply[at + 4..])
                .expect("no header end");
            assert!(body == big.as_slice(), "the megabyte differs");
        });
    });
    run_command(Command::new("kill").args(["-TERM", &guest.pid().to_string()])).expect_code(0);
    let run = guest.wait();
    let _ = std::fs::remove_dir_all(&www);
    run.expect_code(0);
}
