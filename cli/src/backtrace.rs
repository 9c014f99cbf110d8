//! The backtrace of a guest thread that crashed (the VMM's
//! [`eremite_vmm::Backtrace`]: its stack scanned, with functions, files
//! and lines).
//!
//! A CPU exception always shows it. A panic shows it when the guest's
//! `RUST_BACKTRACE` asks, as std would: after std's own `stack
//! backtrace:` line, which has no frames on hermit. As std does, the
//! panic machinery's frames and the runtime's below `main` are left out
//! unless it is `full`.

use std::fmt::Write as _;
use std::path::Path;

use eremite_vmm::{Backtrace, Outcome};

/// What to print for `backtrace` after a run that ended with `outcome`
/// (`None`: nothing). `env` is the guest's environment (`KEY=VALUE`);
/// files below `cwd` are shown relative to it.
pub(crate) fn render(
    backtrace: &Backtrace,
    outcome: &Outcome,
    env: &[String],
    cwd: Option<&Path>,
) -> Option<String> {
    let wanted = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("RUST_BACKTRACE="))
        .filter(|v| *v != "0");
    let is_panic = matches!(outcome, Outcome::Aborted);
    if is_panic && wanted.is_none() {
        return None;
    }
    let frames = &backtrace.frames;
    let named = |pattern: &str| {
        frames.iter().position(|f| {
            f.function
                .as_deref()
                .is_some_and(|name| name.contains(pattern))
        })
    };
    // As std's short backtrace: from the panic handler (below the panic
    // machinery) to the program's `main` (above the runtime's start).
    let (first, last) = match wanted {
        Some("full") => (0, frames.len()),
        _ => (
            named("__rust_end_short_backtrace")
                .filter(|_| is_panic)
                .map_or(0, |i| i + 1),
            named("__rust_begin_short_backtrace").map_or(frames.len(), |i| i + 1),
        ),
    };
    let mut out =
        String::from("eremite: backtrace (the stack of the thread that crashed, scanned):\n");
    for (n, frame) in frames[first..last.max(first)].iter().enumerate() {
        let function = frame.function.as_deref().unwrap_or("??");
        let _ = write!(out, "  #{n:<2} {:#x} in {function}", frame.address);
        if let Some((file, line)) = &frame.location {
            // std's sources as `library/std/src/...`, the program's own
            // as `src/main.rs` when run from its directory.
            let file = file
                .split_once("/lib/rustlib/src/rust/")
                .map(|(_, path)| path)
                .or_else(|| {
                    let relative = Path::new(file).strip_prefix(cwd?).ok()?;
                    relative.to_str()
                })
                .unwrap_or(file);
            let _ = write!(out, " at {file}:{line}");
        }
        out.push('\n');
    }
    Some(out)
}
