//! `eremite run --hypervisor qemu…`: boot the same image on QEMU
//! `-M microvm` through its PVH entry (see `docs/qemu.md`).
//!
//! The CLI builds QEMU's command line (memory, CPUs, the serial ports
//! on stdout and stderr, `isa-debug-exit`, the exit record on a debugcon
//! port that goes to a temporary file, a virtio-net card on a tap for
//! `--net`, the kernel command line with the arguments and environment
//! escaped as [`eremite_interface::pvh`] says), runs QEMU, and maps how the
//! guest ended to the exit codes of our VMM.
//!
//! The guest's stderr (COM2) reaches us through a pipe of its own, so
//! that QEMU's own messages on its stderr can be told from the guest's:
//! when QEMU fails, the user gets one line of what it said instead of an
//! assertion dump (see [`failure`]).
//!
//! QEMU announces its virtio-MMIO devices itself (`auto-kernel-cmdline=on`
//! appends `virtio_mmio.device=` tokens to the command line, which needs
//! `acpi=off`: with ACPI it describes them in its tables instead); the
//! CLI passes `eremite.argc=` so that the kernel tells them from the
//! arguments.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eremite_interface::hypercall::ExitKind;
use eremite_interface::pvh::{self, Escaped, ExitRecord};
use std::net::Ipv4Addr;

use eremite_interface::cmdline::{NetAddress, NetGateway};
use eremite_vmm::{Link, NetSpec, Publish};

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accel {
    /// KVM when `/dev/kvm` opens, TCG otherwise.
    Auto,
    /// QEMU's binary translator.
    Tcg,
    /// KVM (fails when it does not work).
    Kvm,
}

/// QEMU's `-accel` and `-cpu` options. Under KVM the model is the host's
/// CPU less what a unikernel never uses and nested or paravirtual hosts
/// (such as PVM on AMD) refuse to set up, which would stop QEMU before the
/// guest runs: `arch-capabilities` (MSR 0x10A, "failed to set MSR 0x10a"),
/// the PMU (its MSRs, PERF_CAPABILITIES among them) and nested VMX/SVM
/// (their capability MSRs). `invtsc` makes QEMU publish the TSC frequency
/// in KVM's CPUID leaf 0x4000_0010 (the kernel measures it otherwise); a
/// host without an invariant TSC only gets a warning. TCG's `max` model
/// has every feature QEMU can emulate. See `docs/qemu.md`, "CPU model".
pub(crate) fn cpu_args(use_kvm: bool) -> [&'static str; 4] {
    if use_kvm {
        [
            "-accel",
            "kvm",
            "-cpu",
            "host,-arch-capabilities,pmu=off,-vmx,-svm,+invtsc",
        ]
    } else {
        ["-accel", "tcg", "-cpu", "max"]
    }
}

/// The message of QEMU's own stderr that says why it failed, without the
/// program name: its first `error:` report (`qemu-system-x86_64: error:
/// failed to set MSR 0x10a to 0x69`), else its first report that is not a
/// warning or a failed assertion, else its first line. `None` when QEMU
/// said nothing.
pub(crate) fn failure(qemu_stderr: &str) -> Option<String> {
    // QEMU's reports are "PROGRAM: message", PROGRAM the basename of its argv[0].
    let reports: Vec<&str> = qemu_stderr
        .lines()
        .filter_map(|line| {
            let (program, message) = line.split_once(": ")?;
            let name = program.rsplit('/').next().unwrap_or(program);
            (name.starts_with("qemu") && !name.contains(' ')).then_some(message.trim())
        })
        .collect();
    let is_noise = |m: &&&str| m.starts_with("warning:") || m.contains("Assertion");
    reports
        .iter()
        .find_map(|m| m.strip_prefix("error:"))
        .map(str::trim)
        .or_else(|| reports.iter().find(|m| !is_noise(m)).copied())
        .or_else(|| qemu_stderr.lines().map(str::trim).find(|l| !l.is_empty()))
        .map(str::to_owned)
}

/// What the guest asked for, as far as QEMU can give it.
pub(crate) struct QemuRun<'a> {
    pub(crate) image: &'a Path,
    pub(crate) memory_bytes: u64,
    pub(crate) cpus: u32,
    pub(crate) args: &'a [String],
    pub(crate) env: &'a [String],
    pub(crate) cmdline: &'a str,
    /// Our own kernel parameters (`net.ip=`, `net.gateway=`), checked.
    pub(crate) params: &'a [String],
    pub(crate) net: Option<QemuNet<'a>>,
    pub(crate) is_verbose: bool,
    pub(crate) accel: Accel,
}

/// The network card, as on our VMM.
pub(crate) struct QemuNet<'a> {
    pub(crate) card: &'a NetSpec,
    /// The guest's address and gateway (always there for `user`).
    pub(crate) address: Option<NetAddress>,
    pub(crate) gateway: Option<NetGateway>,
    pub(crate) publish: &'a [Publish],
}

/// The QEMU binary (`$EREMITE_QEMU` overrides it).
fn qemu_binary() -> PathBuf {
    std::env::var_os("EREMITE_QEMU")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("qemu-system-x86_64"))
}

fn kvm_works() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// What goes on the kernel command line besides argv.
pub(crate) struct KernelParams<'a> {
    pub(crate) env: &'a [String],
    pub(crate) cmdline: &'a str,
    pub(crate) params: &'a [String],
    pub(crate) is_verbose: bool,
    pub(crate) cpus: u32,
    pub(crate) wall_ns: u128,
}

/// The kernel command line: the user's tokens, our parameters, `--`, then
/// argv (the image path first, as on our VMM).
pub(crate) fn kernel_cmdline(image: &Path, args: &[String], p: &KernelParams<'_>) -> String {
    let KernelParams {
        env,
        cmdline,
        params,
        is_verbose,
        cpus,
        wall_ns,
    } = *p;
    let mut line = String::new();
    for token in cmdline
        .split_whitespace()
        .chain(params.iter().map(String::as_str))
    {
        let _ = write!(line, "{} ", Escaped(token.as_bytes()));
    }
    for pair in env {
        let _ = write!(line, "{}{} ", pvh::ENV_KEY, Escaped(pair.as_bytes()));
    }
    if is_verbose {
        let _ = write!(line, "{} ", pvh::VERBOSE_TOKEN);
    }
    if cpus != 1 {
        let _ = write!(line, "{}{cpus} ", pvh::CPUS_KEY);
    }
    let _ = write!(
        line,
        "{}{wall_ns} {}{} {}",
        pvh::WALL_NS_KEY,
        pvh::ARGC_KEY,
        args.len() + 1,
        pvh::ARGS_SEPARATOR
    );
    let argv0 = image.display().to_string();
    for arg in std::iter::once(&argv0).chain(args) {
        let _ = write!(line, " {}", Escaped(arg.as_bytes()));
    }
    line
}

/// QEMU's options for a virtio-net card: modern (version 2) virtio-MMIO,
/// which the kernel's driver needs, on the tap or on QEMU's own user-mode
/// network (libslirp) in the guest's network, with the published ports as
/// `hostfwd` rules.
fn net_args(net: &QemuNet<'_>) -> Vec<String> {
    let mac = net
        .card
        .mac
        .map(|mac| format!(",mac={mac}"))
        .unwrap_or_default();
    let netdev = match (&net.card.link, net.address, net.gateway) {
        (Link::Tap(name), _, _) => format!("tap,id=net0,ifname={name},script=no,downscript=no"),
        // QEMU's stream netdev speaks the switch's framing; the CLI has
        // made sure the switch runs.
        (Link::Switch(name), _, _) => {
            let path = eremite_vmm::switch_socket_path(name)
                .map(|path| path.display().to_string())
                .unwrap_or_default();
            format!("stream,id=net0,server=off,addr.type=unix,addr.path={path}")
        }
        (Link::User, address, gateway) => {
            let mut netdev = String::from("user,id=net0");
            if let (Some(address), Some(gateway)) = (address, gateway) {
                let _ = write!(
                    netdev,
                    ",net={}/{},host={},dhcpstart={}",
                    Ipv4Addr::from(address.network()),
                    address.prefix_len,
                    Ipv4Addr::from(gateway.0),
                    Ipv4Addr::from(address.address)
                );
            }
            for p in net.publish {
                let _ = write!(
                    netdev,
                    ",hostfwd={}:{}:{}-:{}",
                    p.protocol, p.host_addr, p.host_port, p.guest_port
                );
            }
            netdev
        }
    };
    [
        "-global",
        "virtio-mmio.force-legacy=off",
        "-netdev",
        &netdev,
        "-device",
        &format!("virtio-net-device,netdev=net0{mac}"),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// How the run ended: the CLI's exit code and a message for failures.
pub(crate) struct Ended {
    pub(crate) exit_code: u8,
    pub(crate) message: Option<String>,
    pub(crate) elapsed: Duration,
}

/// The CLI exit code for an exit record (as `Outcome::exit_code`).
pub(crate) fn exit_code(record: ExitRecord) -> u8 {
    match record.kind {
        ExitKind::Exit => (record.code & 0xff) as u8,
        ExitKind::Abort => 134,
        ExitKind::Exception => 139,
        ExitKind::KernelPanic | ExitKind::Deadlock => 127,
    }
}

/// The CLI exit code from QEMU's status alone (no exit record): the
/// summary [`pvh::debug_exit_value`] wrote, or 126 (the VM failed).
pub(crate) fn exit_code_from_status(status: i32) -> Option<u8> {
    [
        (ExitKind::Exit, 0, 0),
        (ExitKind::Exit, 1, 1),
        (ExitKind::Abort, 0, 134),
        (ExitKind::Exception, 0, 139),
        (ExitKind::KernelPanic, 0, 127),
        (ExitKind::Deadlock, 0, 127),
    ]
    .into_iter()
    .find(|&(kind, code, _)| pvh::qemu_status(pvh::debug_exit_value(kind, code)) == status)
    .map(|(_, _, cli)| cli)
}

/// Boot the image on QEMU and wait for it.
pub(crate) fn run(request: &QemuRun<'_>) -> Result<Ended, String> {
    let use_kvm = match request.accel {
        Accel::Auto => kvm_works(),
        Accel::Tcg => false,
        Accel::Kvm => true,
    };
    let status_file = std::env::temp_dir().join(format!(
        "eremite-qemu-exit-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    ));
    let wall_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let append = kernel_cmdline(
        request.image,
        request.args,
        &KernelParams {
            env: request.env,
            cmdline: request.cmdline,
            params: request.params,
            is_verbose: request.is_verbose,
            cpus: request.cpus,
            wall_ns,
        },
    );
    let (mut guest_err, guest_err_writer) =
        std::io::pipe().map_err(|e| format!("cannot make a pipe for QEMU: {e}"))?;
    let mut command = Command::new(qemu_binary());
    command
        .args([
            "-M",
            "microvm,x-option-roms=off,rtc=off,acpi=off,auto-kernel-cmdline=on",
        ])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-m", &format!("{}M", request.memory_bytes >> 20)])
        .args(["-smp", &request.cpus.to_string()])
        .args(cpu_args(use_kvm))
        .arg("-kernel")
        .arg(request.image)
        .args(["-append", &append])
        // The serial ports write to pipes that this process copies to its
        // own stdout and stderr (so that the output lands where ours would,
        // even in a file that others write to as well): COM1 to QEMU's
        // stdout, COM2 to a pipe that QEMU gets as its stdin (it reads
        // nothing from there) and opens for writing, which keeps QEMU's
        // own stderr for its messages.
        .args(["-chardev", "file,id=out,path=/dev/stdout"])
        .args(["-serial", "chardev:out"])
        .args(["-chardev", "file,id=err,path=/dev/stdin"])
        .args(["-device", "isa-serial,chardev=err,index=1"])
        .args([
            "-device",
            &format!(
                "isa-debug-exit,iobase={:#x},iosize=0x04",
                pvh::DEBUG_EXIT_PORT
            ),
        ])
        .args([
            "-chardev",
            &format!("file,id=exit,path={}", status_file.display()),
        ])
        .args([
            "-device",
            &format!("isa-debugcon,iobase={:#x},chardev=exit", pvh::DEBUGCON_PORT),
        ])
        .stdin(guest_err_writer)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(net) = &request.net {
        command.args(net_args(net));
    }
    if request.is_verbose {
        eprintln!("eremite: {command:?}");
    }
    let started = Instant::now();
    let spawned = command.spawn();
    // The command holds our copy of the pipe's write end: close it, so
    // that the copy below ends when QEMU does.
    drop(command);
    let mut child = spawned.map_err(|e| format!("cannot run {}: {e}", qemu_binary().display()))?;
    let copy_out = child
        .stdout
        .take()
        .map(|mut out| std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::stdout())));
    let copy_err =
        std::thread::spawn(move || std::io::copy(&mut guest_err, &mut std::io::stderr()));
    let own_messages = child.stderr.take().map(|mut err| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut text);
            text
        })
    });
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for {}: {e}", qemu_binary().display()))?;
    let guest_bytes: u64 = [copy_out, Some(copy_err)]
        .into_iter()
        .flatten()
        .map(|copier| copier.join().ok().and_then(Result::ok).unwrap_or(0))
        .sum();
    let own_messages = own_messages
        .and_then(|reader| reader.join().ok())
        .unwrap_or_default();
    if request.is_verbose {
        eprint!("{own_messages}");
    }
    let elapsed = started.elapsed();
    let record = std::fs::read_to_string(&status_file)
        .ok()
        .and_then(|text| ExitRecord::parse_last(&text));
    let _ = std::fs::remove_file(&status_file);
    let code = status.code().unwrap_or(-1);
    Ok(match record {
        Some(record) => Ended {
            exit_code: exit_code(record),
            message: None,
            elapsed,
        },
        None => match exit_code_from_status(code) {
            Some(exit_code) => Ended {
                exit_code,
                message: None,
                elapsed,
            },
            None => {
                let said = failure(&own_messages);
                let advice = if use_kvm {
                    "; --hypervisor qemu-tcg runs without KVM"
                } else {
                    ""
                };
                Ended {
                    // Nothing from the guest at all: QEMU stopped before
                    // it ran, so the VM could not be started.
                    exit_code: if guest_bytes == 0 && said.is_some() {
                        125
                    } else {
                        126
                    },
                    message: Some(match said {
                        Some(said) => format!("QEMU failed ({status}): {said}{advice}"),
                        None => format!("QEMU ended without the guest's exit record ({status})"),
                    }),
                    elapsed,
                }
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_mode_networking_becomes_slirp_in_the_guests_network() {
        let card = eremite_vmm::parse_net_spec("user,mac=02:00:00:00:00:05").unwrap();
        let publish = [
            eremite_vmm::parse_publish("8080:80").unwrap(),
            eremite_vmm::parse_publish("0.0.0.0:5353:53/udp").unwrap(),
        ];
        let net = QemuNet {
            card: &card,
            address: Some(NetAddress {
                address: [10, 0, 2, 15],
                prefix_len: 24,
            }),
            gateway: Some(NetGateway([10, 0, 2, 2])),
            publish: &publish,
        };
        let args = net_args(&net);
        assert_eq!(
            args[3],
            "user,id=net0,net=10.0.2.0/24,host=10.0.2.2,dhcpstart=10.0.2.15,\
             hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp:0.0.0.0:5353-:53"
        );
        assert_eq!(
            args[5],
            "virtio-net-device,netdev=net0,mac=02:00:00:00:00:05"
        );
        let tap = eremite_vmm::parse_net_spec("tap:t0").unwrap();
        let net = QemuNet {
            card: &tap,
            address: None,
            gateway: None,
            publish: &[],
        };
        assert_eq!(
            net_args(&net)[3],
            "tap,id=net0,ifname=t0,script=no,downscript=no"
        );
    }

    #[test]
    fn the_command_line_carries_arguments_and_environment_escaped() {
        let line = kernel_cmdline(
            Path::new("/img"),
            &["beta gamma".into(), "".into()],
            &KernelParams {
                env: &["A=1 2".into()],
                cmdline: "x=1  y",
                params: &["net.ip=10.0.0.2/24".into()],
                is_verbose: true,
                cpus: 3,
                wall_ns: 7,
            },
        );
        assert_eq!(
            line,
            "x=1 y net.ip=10.0.0.2/24 eremite.env=A=1%202 eremite.verbose eremite.cpus=3 eremite.wall_ns=7 eremite.argc=3 -- /img beta%20gamma %"
        );
    }

    #[test]
    fn qemu_gets_a_cpu_model_that_nested_hosts_accept() {
        let [_, accel, _, model] = cpu_args(true);
        assert_eq!(accel, "kvm");
        let features: Vec<&str> = model.split(',').collect();
        assert_eq!(features[0], "host");
        for refused in ["-arch-capabilities", "pmu=off", "-vmx", "-svm"] {
            assert!(features.contains(&refused), "{model} lacks {refused}");
        }
        assert_eq!(cpu_args(false), ["-accel", "tcg", "-cpu", "max"]);
    }

    #[test]
    fn qemus_own_failure_is_one_line_of_what_it_said() {
        // QEMU 7.2 with `-cpu host` on an AMD host under PVM.
        let said = "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\n\
                    qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: \
                    Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed.\n";
        assert_eq!(
            failure(said).as_deref(),
            Some("failed to set MSR 0x10a to 0x69")
        );
        let said = "qemu-system-x86_64: warning: host doesn't support requested feature: \
                    CPUID.80000007H:EDX.invtsc [bit 8]\n\
                    /usr/bin/qemu-system-x86_64: -cpu nonsense: unable to find CPU model 'nonsense'\n";
        assert_eq!(
            failure(said).as_deref(),
            Some("-cpu nonsense: unable to find CPU model 'nonsense'")
        );
        assert_eq!(
            failure("Could not access KVM kernel module: No such file or directory\nqemu-system-x86_64: -accel kvm: failed to initialize kvm: No such file or directory\n").as_deref(),
            Some("-accel kvm: failed to initialize kvm: No such file or directory")
        );
        assert_eq!(failure(""), None);
        assert_eq!(failure("\n\n"), None);
    }

    #[test]
    fn statuses_without_a_record_map_to_the_vmm_codes() {
        let status = |kind, code| pvh::qemu_status(pvh::debug_exit_value(kind, code));
        assert_eq!(exit_code_from_status(status(ExitKind::Exit, 0)), Some(0));
        assert_eq!(exit_code_from_status(status(ExitKind::Abort, 0)), Some(134));
        assert_eq!(
            exit_code_from_status(status(ExitKind::Exception, 6)),
            Some(139)
        );
        assert_eq!(exit_code_from_status(1), None);
        assert_eq!(
            exit_code(ExitRecord {
                kind: ExitKind::Exit,
                code: 255
            }),
            255
        );
    }
}
