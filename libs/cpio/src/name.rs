//! Member names: the one rule the reader, the writer and the VMM's tar
//! conversion share.

/// The canonical form of a member name, or `None` if it cannot be one.
///
/// Leading `/` and `./` are removed (archives made with `find . | cpio`
/// or from absolute paths); what is left must be `/`-separated components
/// that are neither empty nor `.` nor `..`. A name that is empty after the
/// stripping, or is `.`, is the root directory and comes back as `.`.
/// The result is a sub-slice of `raw` (or the static `"."`).
pub fn normalise_name(raw: &[u8]) -> Option<&[u8]> {
    let mut name = raw;
    loop {
        if let Some(rest) = name.strip_prefix(b"./") {
            name = rest;
        } else if let Some(rest) = name.strip_prefix(b"/") {
            name = rest;
        } else {
            break;
        }
    }
    if name.is_empty() || name == b"." {
        return Some(b".");
    }
    let is_bad = |c: &[u8]| c.is_empty() || c == b"." || c == b".." || c.contains(&0);
    if name.split(|&b| b == b'/').any(is_bad) {
        return None;
    }
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_slashes_and_dots_are_stripped() {
        assert_eq!(normalise_name(b"./a/b"), Some(&b"a/b"[..]));
        assert_eq!(normalise_name(b"/a"), Some(&b"a"[..]));
        assert_eq!(normalise_name(b".//./a"), Some(&b"a"[..]));
        assert_eq!(normalise_name(b"a.b/.c/..d"), Some(&b"a.b/.c/..d"[..]));
    }

    #[test]
    fn the_root_is_a_dot() {
        for root in [&b"."[..], b"", b"/", b"./", b"//", b"././"] {
            assert_eq!(normalise_name(root), Some(&b"."[..]), "{root:?}");
        }
    }

    #[test]
    fn escapes_and_odd_components_are_refused() {
        for bad in [
            &b".."[..],
            b"../a",
            b"a/../b",
            b"a/..",
            b"a//b",
            b"a/",
            b"a/./b",
            b"a/.",
            b"a\0b",
        ] {
            assert_eq!(normalise_name(bad), None, "{bad:?}");
        }
    }
}
