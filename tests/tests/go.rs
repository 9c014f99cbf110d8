//! Go programs built with Debian's golang-go and default flags
//! (`examples/go`), unmodified: their runtime's reservations go to the
//! kernel's virtual window, and page 0 stays unmapped so that Go's nil
//! checks fault (their system calls are calls to per-site stubs instead
//! of the trampoline there; `docs/linux.md`).

use eremite_tests::{NetNs, boot_image, go_image, http_to_guest};

#[test]
fn goroutines_channels_timers_the_gc_and_a_recovered_nil_dereference() {
    for cpus in ["1", "2"] {
        let run = boot_image(&go_image("goroutines"), &["--cpus", cpus, "--stats"], &[]);
        run.expect_code(0);
        // Every system call went through a stub: none trapped.
        let stat = |name: &str| {
            run.stderr
                .lines()
                .find_map(|l| l.trim_start().strip_prefix(name))
                .and_then(|rest| rest.trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {name:?} in --stats:\n{run}"))
        };
        assert!(stat("sites rewritten") > 30, "{run}");
        assert_eq!(stat("sites left as syscall"), 0, "{run}");
        assert_eq!(stat("calls by the trap path"), 0, "{run}");
        assert!(
            run.stdout.starts_with(&format!("GOMAXPROCS {cpus}\n")),
            "{run}"
        );
        let oks = run.stdout.lines().filter(|l| l.starts_with("ok ")).count();
        assert_eq!(oks, 6, "{run}");
        assert!(run.stdout.ends_with("goroutines passed\n"), "{run}");
    }
}

#[test]
fn the_go_echo_server_answers_clients_on_the_host_under_load() {
    // HermitCore's Go demo: it echoes method, URL, protocol, headers,
    // Host, RemoteAddr and form values.
    let ns = NetNs::with_tap("gtap0", "10.0.0.1/24");
    let card = ["--net", "tap:gtap0", "--ip", "10.0.0.2/24", "--cpus", "2"];
    let guest = ns.spawn_image(&go_image("echo"), &card, &[":8000"]);
    let (guest, ()) = guest.talk(|| {
        ns.enter(|| {
            let body = "name=eve&x=2";
            let request = format!(
                "POST /hello?x=1 HTTP/1.1\r\nHost: 10.0.0.2:8000\r\nX-Test: yes\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let reply = http_to_guest(8000, &request);
            assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
            for line in [
                "POST /hello?x=1 HTTP/1.1\n",
                "Header[\"X-Test\"] = \"yes\"\n",
                "Host = \"10.0.0.2:8000\"\n",
                "RemoteAddr = \"10.0.0.1:",
                "Form[\"name\"] = [\"eve\"]\n",
                "Form[\"x\"] = [\"2\" \"1\"]\n",
            ] {
                assert!(reply.contains(line), "no {line:?} in\n{reply}");
            }
            for i in 0..20 {
                let reply = http_to_guest(
                    8000,
                    &format!("GET /n?i={i} HTTP/1.0\r\nHost: eremite\r\n\r\n"),
                );
                assert!(
                    reply.contains(&format!("Form[\"i\"] = [\"{i}\"]")),
                    "{reply}"
                );
            }
            // Load from eight clients at once: thousands of requests, with
            // interrupts landing everywhere, including the kernel's few
            // instructions on a goroutine's stack (an upcall there once
            // overwrote the neighbouring goroutine's stack within a
            // second of such load).
            std::thread::scope(|scope| {
                for client in 0..8 {
                    scope.spawn(move || {
                        for i in 0..600 {
                            let reply = http_to_guest(
                                8000,
                                &format!("GET /load?c={client}&i={i} HTTP/1.0\r\n\r\n"),
                            );
                            assert!(
                                reply.contains(&format!("Form[\"i\"] = [\"{i}\"]")),
                                "client {client}, request {i}: {reply}"
                            );
                        }
                    });
                }
            });
            let bye = http_to_guest(8000, "GET /quit HTTP/1.0\r\n\r\n");
            assert!(bye.ends_with("bye\n"), "{bye}");
        });
    });
    let run = guest.wait();
    run.expect_code(0);
    assert!(
        run.stdout.starts_with("listening on :8000, GOMAXPROCS 2\n"),
        "{run}"
    );
    assert!(run.stdout.ends_with("served\n"), "{run}");
}
