//! The two other places the `servers` group runs a Linux binary, beside
//! eremite and the host: gVisor (Debian's `runsc`, what people use to
//! sandbox Linux binaries on hosts without nested virtualisation) and a
//! Linux microVM (QEMU `-M microvm` with Debian's cloud kernel and a
//! busybox initramfs holding the binary and its libraries).
//!
//! gVisor runs an OCI bundle whose root is the host's `/` under a
//! writable in-memory overlay (`runsc --overlay`), in the namespace's network (`--network
//! host`), so the server listens on the namespace's loopback as the native
//! one does. The microVM's card is a tap in the namespace, as eremite's.
//! On a PVM host (`/sys/module/kvm_pvm`) a Linux guest cannot run under
//! KVM (its CPL0 code is emulated and dies on `int3`), so the microVM runs
//! under TCG there and under KVM elsewhere; [`MicroVm::accel`] says which.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{Result, root, run_command};

/// The packages this module needs: (a command, its version flag, its
/// Debian package).
pub(super) const TOOLS: [(&str, &str, &str); 2] = [
    ("runsc", "--version", "runsc"),
    ("busybox", "--help", "busybox-static"),
];

/// gVisor's state for one benchmark run: its `--root` directory.
pub(super) struct Gvisor {
    dir: PathBuf,
    count: usize,
}

/// A server running under gVisor; stopped (container deleted) on drop.
pub(super) struct GvisorServer {
    netns: String,
    state: PathBuf,
    id: String,
    child: Child,
}

impl Gvisor {
    pub(super) fn new(scratch: &Path) -> Result<Self> {
        let dir = scratch.join("gvisor");
        std::fs::create_dir_all(dir.join("state"))
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Self { dir, count: 0 })
    }

    /// Start `program ARGS` in a new sandbox, its processes pinned to
    /// `core`, run inside the namespace `netns`.
    pub(super) fn start(
        &mut self,
        netns: &str,
        core: &str,
        program: &Path,
        args: &[String],
    ) -> Result<GvisorServer> {
        self.count += 1;
        let id = format!("eremite-bench-{}-{}", std::process::id(), self.count);
        let bundle = self.dir.join(&id);
        std::fs::create_dir_all(&bundle)
            .map_err(|e| format!("cannot create {}: {e}", bundle.display()))?;
        let mut argv = vec![program.display().to_string()];
        argv.extend(args.iter().cloned());
        std::fs::write(bundle.join("config.json"), oci_config(&argv))
            .map_err(|e| format!("cannot write the OCI bundle: {e}"))?;
        let state = self.dir.join("state");
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "taskset", "-c", core, "runsc"])
            .args(["--network=host", "--ignore-cgroups", "--overlay"])
            .arg("--root")
            .arg(&state)
            .arg("run")
            .arg("--bundle")
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start runsc: {e}"))?;
        Ok(GvisorServer {
            netns: netns.to_owned(),
            state,
            id,
            child,
        })
    }
}

impl Drop for GvisorServer {
    fn drop(&mut self) {
        // In the namespace: the sandbox's control socket is an abstract
        // Unix socket, which belongs to a network namespace.
        let runsc = |args: &[&str]| {
            let _ = Command::new("ip")
                .args(["netns", "exec", &self.netns, "runsc", "--root"])
                .arg(&self.state)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        runsc(&["kill", &self.id, "KILL"]);
        for _ in 0..100 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        runsc(&["delete", "--force", &self.id]);
    }
}

/// A JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An OCI runtime configuration (runtime-spec 1.0) for `argv` as root
/// with the host's `/` as its root file system (writable, but runsc's
/// `--overlay` keeps every write in the sandbox's memory: the host's
/// files are never touched) and no network namespace of its own, so
/// `--network=host` gives it the namespace runsc starts in.
fn oci_config(argv: &[String]) -> String {
    let args: Vec<String> = argv.iter().map(|a| json_string(a)).collect();
    let cwd = json_string("/");
    // Root's capabilities as a container runtime grants them by default,
    // so servers that drop privileges (nginx's `user`, memcached's `-u`)
    // start as they do natively.
    let caps = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_SYS_RESOURCE",
    ]
    .map(json_string)
    .join(", ");
    format!(
        r#"{{
  "ociVersion": "1.0.0",
  "process": {{
    "terminal": false,
    "user": {{ "uid": 0, "gid": 0 }},
    "args": [{}],
    "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    "cwd": {cwd},
    "capabilities": {{ "bounding": [{caps}], "effective": [{caps}], "permitted": [{caps}] }},
    "rlimits": [{{ "type": "RLIMIT_NOFILE", "hard": 65536, "soft": 65536 }}]
  }},
  "root": {{ "path": "/", "readonly": false }},
  "hostname": "gvisor",
  "mounts": [
    {{ "destination": "/proc", "type": "proc", "source": "proc" }},
    {{ "destination": "/dev", "type": "tmpfs", "source": "tmpfs" }},
    {{ "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] }}
  ],
  "linux": {{
    "namespaces": [{{ "type": "pid" }}, {{ "type": "ipc" }}, {{ "type": "uts" }}, {{ "type": "mount" }}]
  }}
}}
"#,
        args.join(", ")
    )
}

/// Debian's cloud kernel, unpacked once into `target/linux-microvm`.
pub(super) struct MicroVm {
    kernel: PathBuf,
    modules: PathBuf,
    scratch: PathBuf,
    /// `tcg` on a PVM host, `kvm` where KVM can run a Linux guest.
    pub(super) accel: &'static str,
}

/// The modules the virtio-mmio network card needs, in load order (the
/// cloud kernel builds them as modules).
const MODULES: [&str; 6] = [
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio_mmio.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
];

/// What a microVM server needs: a binary, its arguments, and extra files
/// (host path, guest path) such as a configuration.
pub(super) struct Guest<'a> {
    pub(super) program: &'a Path,
    pub(super) args: &'a [String],
    pub(super) files: &'a [(PathBuf, String)],
}

impl MicroVm {
    /// Fetch (`apt-get download`) and unpack Debian's
    /// `linux-image-cloud-amd64` unless `target/linux-microvm` has it.
    pub(super) fn new(scratch: &Path) -> Result<Self> {
        let dir = root().join("target/linux-microvm");
        let unpacked = dir.join("unpacked");
        if !unpacked.join("boot").exists() {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let depends = Command::new("apt-cache")
                .args(["depends", "linux-image-cloud-amd64"])
                .output()
                .map_err(|e| format!("cannot run apt-cache: {e}"))?;
            let depends = String::from_utf8_lossy(&depends.stdout);
            let package = depends
                .lines()
                .filter_map(|l| l.trim().strip_prefix("Depends: "))
                .find(|p| p.starts_with("linux-image-"))
                .ok_or("apt-cache names no kernel for linux-image-cloud-amd64")?
                .to_owned();
            let download = || {
                run_command(
                    Command::new("apt-get")
                        .args(["download", &package])
                        .current_dir(&dir),
                )
            };
            download().or_else(|_| {
                run_command(Command::new("apt-get").arg("update"))?;
                download()
            })?;
            let deb = std::fs::read_dir(&dir)
                .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension().is_some_and(|x| x == "deb"))
                .ok_or("apt-get download left no .deb")?;
            run_command(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
            let _ = std::fs::remove_file(deb);
        }
        let first = |dir: &Path, prefix: &str| -> Result<PathBuf> {
            std::fs::read_dir(dir)
                .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
                })
                .ok_or_else(|| format!("no {prefix}* in {}", dir.display()))
        };
        let kernel = first(&unpacked.join("boot"), "vmlinuz-")?;
        let modules = first(&unpacked.join("lib/modules"), "")?.join("kernel");
        let accel = if Path::new("/sys/module/kvm_pvm").exists() || !Path::new("/dev/kvm").exists()
        {
            "tcg"
        } else {
            "kvm"
        };
        Ok(Self {
            kernel,
            modules,
            scratch: scratch.join("microvm"),
            accel,
        })
    }

    /// Where the running microVM's console (and QEMU's errors) go.
    pub(super) fn console(&self) -> PathBuf {
        self.scratch.join("console.log")
    }

    /// The last lines of the console of the microVM started last.
    pub(super) fn console_tail(&self) -> String {
        let text = std::fs::read_to_string(self.console()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Boot `guest` in a microVM in `netns`, its card on `tap` with the
    /// address `ip` (a /24) beside the namespace's `peer`, QEMU pinned to
    /// `core`.
    pub(super) fn start(
        &self,
        netns: &str,
        core: &str,
        tap: &str,
        (ip, peer): (&str, &str),
        guest: &Guest,
    ) -> Result<Child> {
        let initrd = self.initramfs(ip, peer, guest)?;
        let netdev = format!("tap,id=net0,ifname={tap},script=no,downscript=no");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", netns, "taskset", "-c", core])
            .arg("qemu-system-x86_64")
            .args([
                "-M",
                "microvm,x-option-roms=off,rtc=off",
                "-accel",
                self.accel,
            ])
            .args(["-m", "512M", "-smp", "1", "-nographic", "-no-reboot"])
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", "console=ttyS0 quiet panic=-1"])
            .args([
                "-netdev",
                &netdev,
                "-device",
                "virtio-net-device,netdev=net0",
            ]);
        if self.accel == "kvm" {
            command.args(["-cpu", "host"]);
        }
        let console = std::fs::File::create(self.console())
            .map_err(|e| format!("cannot create the microVM's console log: {e}"))?;
        let errors = console
            .try_clone()
            .map_err(|e| format!("cannot share the console log: {e}"))?;
        command
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(errors)
            .spawn()
            .map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))
    }

    /// An initramfs (newc cpio) with busybox, the card's modules, the
    /// program with the libraries the host's loader resolves for it
    /// (`ldd`), the host's user and name-service files, `guest.files`,
    /// and an `/init` that brings the card up, asks for `peer`'s address
    /// (so the namespace learns the guest's at once) and execs the program.
    fn initramfs(&self, ip: &str, peer: &str, guest: &Guest) -> Result<PathBuf> {
        let tree = self.scratch.join("tree");
        let _ = std::fs::remove_dir_all(&tree);
        let io = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
        let copy = |from: &Path, to: &str| -> Result {
            let to = tree.join(to.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().unwrap_or(&tree)).map_err(|e| io(&to, e))?;
            std::fs::copy(from, &to).map_err(|e| io(from, e))?;
            Ok(())
        };
        for dir in [
            "proc",
            "sys",
            "dev",
            "tmp",
            "var/log/nginx",
            "var/lib/nginx",
        ] {
            let path = tree.join(dir);
            std::fs::create_dir_all(&path).map_err(|e| io(&path, e))?;
        }
        copy(Path::new("/bin/busybox"), "/bin/busybox")?;
        for applet in ["sh", "ip", "insmod", "mount", "arping"] {
            let link = tree.join("bin").join(applet);
            std::os::unix::fs::symlink("busybox", &link).map_err(|e| io(&link, e))?;
        }
        for module in MODULES {
            let name = Path::new(module).file_name().unwrap_or_default();
            copy(
                &self.modules.join(module),
                &format!("/modules/{}", name.to_string_lossy()),
            )?;
        }
        let program = guest.program.display().to_string();
        copy(guest.program, &program)?;
        for library in shared_libraries(guest.program)? {
            copy(Path::new(&library), &library)?;
        }
        for file in ["passwd", "group", "nsswitch.conf", "hosts"] {
            let host = Path::new("/etc").join(file);
            if host.exists() {
                copy(&host, &format!("/etc/{file}"))?;
            }
        }
        for (host, path) in guest.files {
            copy(host, path)?;
        }
        let quote = |a: &str| format!("'{}'", a.replace('\'', r"'\''"));
        let mut exec = quote(&program);
        for arg in guest.args {
            exec.push(' ');
            exec.push_str(&quote(arg));
        }
        let init = format!(
            "#!/bin/sh\nmount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n\
             {}\nip link set lo up\nip addr add {ip}/24 dev eth0\n\
             ip link set eth0 up\narping -q -c 1 -w 1 -I eth0 {peer}\nexec {exec}\n",
            MODULES
                .iter()
                .map(|m| format!(
                    "insmod /modules/{}",
                    Path::new(m)
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                ))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        let init_path = tree.join("init");
        std::fs::write(&init_path, init).map_err(|e| io(&init_path, e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&init_path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| io(&init_path, e))?;
        }
        let image = self.scratch.join("initramfs.cpio");
        run_command(Command::new("sh").arg("-c").arg(format!(
            "cd '{}' && find . | cpio -o -H newc --quiet > '{}'",
            tree.display(),
            image.display()
        )))?;
        Ok(image)
    }
}

/// The shared objects `ldd` lists for `program`, the interpreter included.
fn shared_libraries(program: &Path) -> Result<Vec<String>> {
    let output = Command::new("ldd")
        .arg(program)
        .output()
        .map_err(|e| format!("cannot run ldd: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(parse_ldd(&text))
}

/// The absolute paths in `ldd`'s report: `name => /path (addr)` and the
/// interpreter's `/path (addr)`.
fn parse_ldd(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let path = line.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| path.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_reports_become_paths() {
        let report = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x7f)\n\t/lib64/ld-linux-x86-64.so.2 (0x7f)\n\tlibmissing.so => not found\n";
        assert_eq!(
            parse_ldd(report),
            [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
    }

    #[test]
    fn oci_arguments_are_json_strings() {
        let config = oci_config(&[
            "/bin/x".into(),
            "--save".into(),
            String::new(),
            "a\"b".into(),
        ]);
        assert!(config.contains(r#""args": ["/bin/x", "--save", "", "a\"b"]"#));
    }
}
