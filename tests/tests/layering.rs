//! The kernel's module layering, as `docs/design.md` draws it ("Kernel
//! modules"): a module may use a module on a lower line of the layer list,
//! or one the exceptions list names, and nothing else. This test reads the
//! kernel's sources and fails on any `crate::` path that breaks the rule,
//! and on a module the list does not place, so the layering cannot erode
//! unnoticed. Host-only: no VM.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The lines of the first fenced code block after `marker` in `text`.
fn block_after<'a>(text: &'a str, marker: &str) -> Vec<&'a str> {
    let start = text
        .find(marker)
        .unwrap_or_else(|| panic!("docs/design.md has no {marker:?}"));
    let mut lines = text[start..].lines().skip_while(|l| !l.starts_with("```"));
    lines.next();
    lines
        .take_while(|l| !l.starts_with("```"))
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect()
}

/// `text` without comments and string contents, so that only code
/// counts (`sym crate::boot::kernel_start` in an `asm!` is code).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_string = false;
                    out.push(c);
                }
                _ => {}
            }
            continue;
        }
        if c == '\'' {
            // A character literal ('x', '\n', '"'), or a lifetime.
            let mut ahead = chars.clone();
            match (ahead.next(), ahead.next()) {
                (Some('\\'), _) => {
                    // The backslash, the escaped character, then up to and
                    // including the closing quote ('\u{7f}' is longer).
                    chars.next();
                    chars.next();
                    while chars.next().is_some_and(|c| c != '\'') {}
                    continue;
                }
                (Some(_), Some('\'')) => {
                    chars.next();
                    chars.next();
                    continue;
                }
                _ => {}
            }
        }
        match (c, chars.peek()) {
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// The top-level modules that `code` names through `crate::` paths:
/// `crate::fs::open`, `crate::{fs, net::Socket}`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The names at the group's top level.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.insert(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            names.insert(first_segment(&item));
        } else {
            names.insert(first_segment(rest));
        }
    }
    names.remove("");
    names.remove("self");
    names
}

fn first_segment(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_kernel_module_imports_a_module_above_it() {
    let root = eremite_tests::root();
    let design = std::fs::read_to_string(root.join("docs/design.md")).unwrap();
    // Top line first.
    let layers = block_after(&design, "<!-- kernel-layers -->");
    let level: BTreeMap<&str, usize> = layers
        .iter()
        .rev()
        .enumerate()
        .flat_map(|(i, line)| line.split_whitespace().map(move |m| (m, i)))
        .collect();
    let exceptions: BTreeSet<(String, String)> =
        block_after(&design, "<!-- kernel-layer-exceptions -->")
            .iter()
            .map(|l| {
                let (from, to) = l.split_once("->").expect("`from -> to`");
                (from.trim().to_owned(), to.trim().to_owned())
            })
            .collect();
    assert!(level.len() > 10, "the layer list is too short: {layers:?}");

    let src = root.join("kernel/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_owned();
        // The crate root, and the stand-alone image's own crate (`bin/`).
        if module == "lib" || module == "bin" {
            continue;
        }
        let Some(&own) = level.get(module.as_str()) else {
            problems.push(format!(
                "{module} ({}) is not in the layer list",
                rel.display()
            ));
            continue;
        };
        let code = strip_comments(&std::fs::read_to_string(&file).unwrap());
        for used in crate_paths(&code) {
            if used == module {
                continue;
            }
            let is_lower = level.get(used.as_str()).is_some_and(|&l| l < own);
            if !is_lower && !exceptions.contains(&(module.clone(), used.clone())) {
                problems.push(format!("{} uses crate::{used}", rel.display()));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "imports against the layering of docs/design.md:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_scanner_sees_paths_groups_and_ignores_comments() {
    let code = strip_comments(
        "use crate::{fs, net::{Socket, Mode}};\n// crate::boot\n/* crate::abi */ let x = crate::mm::alloc(\"crate::not\");\nlet q = '\"'; let e = '\\''; fn f<'a>(x: &'a u8) { crate::time::now(); }",
    );
    let found: Vec<String> = crate_paths(&code).into_iter().collect();
    assert_eq!(found, ["fs", "mm", "net", "time"]);
}
