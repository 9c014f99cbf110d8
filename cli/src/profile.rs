//! `--profile DIR`: the sampling profiler's files. Both are opened before
//! the run (the VMM confines the process's file-system view while the
//! guest runs, so nothing could be created afterwards) and written when
//! it ends, whatever the guest's outcome:
//! - `profile.folded`: one `root;caller;leaf count` line per call chain
//!   (the format of FlameGraph's `flamegraph.pl`, inferno and speedscope);
//! - `flame.svg`: the flame graph, drawn by inferno.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use eremite_vmm::Profile;

/// Make `dir` (and its parents) and create (or empty) the files `names`
/// in it, before the run: afterwards the confined VMM could not.
pub(crate) fn create_files<const N: usize>(
    dir: &Path,
    names: [&str; N],
) -> Result<[File; N], String> {
    let failed = |what: &Path, e: std::io::Error| format!("cannot write {}: {e}", what.display());
    std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
    let mut files = Vec::with_capacity(N);
    for name in names {
        let path = dir.join(name);
        files.push(File::create(&path).map_err(|e| failed(&path, e))?);
    }
    Ok(files
        .try_into()
        .unwrap_or_else(|_| unreachable!("one file per name")))
}

/// The opened output files.
pub(crate) struct Output {
    dir: PathBuf,
    folded: File,
    svg: File,
}

impl Output {
    /// Make `dir` (and its parents) and create its two files.
    pub(crate) fn create(dir: &Path) -> Result<Self, String> {
        let [folded, svg] = create_files(dir, ["profile.folded", "flame.svg"])?;
        Ok(Self {
            dir: dir.to_path_buf(),
            folded,
            svg,
        })
    }

    /// Write `profile` (of `image`) and say where it went, on stderr.
    pub(crate) fn write(mut self, profile: &Profile, image: &Path) -> Result<(), String> {
        let failed = |name: &str, e: &dyn std::fmt::Display| {
            format!("cannot write {}: {e}", self.dir.join(name).display())
        };
        self.folded
            .write_all(profile.folded().as_bytes())
            .map_err(|e| failed("profile.folded", &e))?;
        if profile.stacks.is_empty() {
            eprintln!(
                "eremite: profile: no samples (the run was shorter than one sampling period)"
            );
            return Ok(());
        }
        let mut options = inferno::flamegraph::Options::default();
        options.title = format!("eremite profile: {}", image.display());
        options.count_name = "samples".to_string();
        options.subtitle = Some(format!(
            "{} samples at {} Hz per vCPU{}",
            profile.samples,
            profile.hz,
            if profile.dropped > 0 {
                format!(", {} of new call chains not kept", profile.dropped)
            } else {
                String::new()
            }
        ));
        let lines = profile.folded();
        inferno::flamegraph::from_lines(&mut options, lines.lines(), &mut self.svg)
            .map_err(|e| failed("flame.svg", &e))?;
        eprintln!(
            "eremite: profile: {} samples in {}/flame.svg and profile.folded",
            profile.samples,
            self.dir.display()
        );
        Ok(())
    }
}
