//! Writer → reader round trips, hand-made archives, and the reader's
//! behaviour on hostile bytes (property tests).

use eremite_cpio::mode::{S_IFDIR, S_IFLNK, S_IFREG};
use eremite_cpio::{CpioError, CpioErrorKind, Entry, EntryKind, Writer, entries};
use proptest::prelude::*;

fn parse(archive: &[u8]) -> Result<Vec<Entry<'_>>, CpioError> {
    entries(archive).collect()
}

fn kind_of(archive: &[u8]) -> CpioErrorKind {
    parse(archive).expect_err("archive should be refused").kind
}

/// A member written by hand: `fields` are the 13 header values.
fn raw_member(fields: [u32; 13], name: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = b"070701".to_vec();
    for field in fields {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

/// A member with a NUL-terminated `name`, `mode`, `ino` and `nlink`.
fn member(name: &str, mode: u32, ino: u32, nlink: u32, data: &[u8]) -> Vec<u8> {
    let namesize = u32::try_from(name.len() + 1).unwrap();
    let size = u32::try_from(data.len()).unwrap();
    let mut name = name.as_bytes().to_vec();
    name.push(0);
    raw_member(
        [ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, namesize, 0],
        &name,
        data,
    )
}

fn trailer() -> Vec<u8> {
    member("TRAILER!!!", 0, 0, 1, b"")
}

#[test]
fn written_entries_read_back_in_order() {
    let mut w = Writer::new();
    w.add_dir(".", 0o755, 1).unwrap();
    w.add_dir("etc", 0o700, 2).unwrap();
    w.add_file("etc/motd", 0o600, 3, b"hello\n").unwrap();
    w.add_file("empty", 0o644, 4, b"").unwrap();
    w.add_symlink("etc/link", 0o777, 5, "../empty").unwrap();
    let archive = w.finish();
    let got = parse(&archive).unwrap();
    let summary: Vec<_> = got
        .iter()
        .map(|e| (e.name, e.kind(), e.permissions(), e.mtime, e.data))
        .collect();
    assert_eq!(
        summary,
        [
            (&b"."[..], EntryKind::Directory, 0o755, 1, &b""[..]),
            (b"etc", EntryKind::Directory, 0o700, 2, b""),
            (b"etc/motd", EntryKind::File, 0o600, 3, b"hello\n"),
            (b"empty", EntryKind::File, 0o644, 4, b""),
            (b"etc/link", EntryKind::Symlink, 0o777, 5, b"../empty"),
        ]
    );
    assert!(got[0].is_root());
    let inos: Vec<_> = got.iter().map(|e| e.ino).collect();
    assert_eq!(inos, [1, 2, 3, 4, 5]);
    assert_eq!(got[1].nlink, 2);
    assert_eq!(got[2].nlink, 1);
}

#[test]
fn an_empty_archive_is_just_a_trailer() {
    let archive = Writer::new().finish();
    assert_eq!(archive.len(), 124);
    assert_eq!(parse(&archive).unwrap(), []);
}

#[test]
fn bytes_after_the_trailer_are_ignored() {
    let mut archive = Writer::new().finish();
    archive.extend_from_slice(&[0; 388]);
    archive.extend_from_slice(b"garbage");
    assert_eq!(parse(&archive).unwrap(), []);
}

#[test]
fn names_are_normalised() {
    let mut archive = member(".", S_IFDIR | 0o755, 1, 2, b"");
    archive.extend(member("./a", S_IFDIR | 0o755, 2, 2, b""));
    archive.extend(member("/a/b", S_IFREG | 0o644, 3, 1, b"x"));
    archive.extend(trailer());
    let names: Vec<_> = parse(&archive).unwrap().iter().map(|e| e.name).collect();
    assert_eq!(names, [&b"."[..], b"a", b"a/b"]);
}

#[test]
fn escaping_or_odd_names_are_refused() {
    for name in ["../etc/passwd", "a/../../b", "a//b", "a/./b", "a/"] {
        let mut archive = member(name, S_IFREG | 0o644, 1, 1, b"x");
        archive.extend(trailer());
        assert_eq!(kind_of(&archive), CpioErrorKind::BadName, "{name}");
    }
}

#[test]
fn a_missing_trailer_is_an_error() {
    let archive = member("a", S_IFREG | 0o644, 1, 1, b"data");
    let got: Vec<_> = entries(&archive).collect();
    assert_eq!(got.len(), 2);
    assert!(got[0].is_ok());
    assert_eq!(
        got[1],
        Err(CpioError {
            offset: archive.len(),
            kind: CpioErrorKind::MissingTrailer
        })
    );
    assert_eq!(kind_of(b""), CpioErrorKind::MissingTrailer);
}

#[test]
fn the_iterator_stops_after_an_error() {
    let mut archive = member("a", S_IFREG | 0o644, 1, 1, b"data");
    archive.extend(b"070702".iter().chain([b'0'; 104].iter()));
    archive.extend(member("b", S_IFREG | 0o644, 1, 1, b"data"));
    archive.extend(trailer());
    let mut it = entries(&archive);
    assert!(it.next().unwrap().is_ok());
    assert_eq!(
        it.next().unwrap().unwrap_err().kind,
        CpioErrorKind::BadMagic
    );
    assert!(it.next().is_none());
    assert!(it.next().is_none());
}

#[test]
fn header_fields_must_be_hex() {
    let mut archive = member("a", S_IFREG | 0o644, 1, 1, b"");
    archive[6 + 8 * 6] = b'g'; // filesize
    archive.extend(trailer());
    assert_eq!(kind_of(&archive), CpioErrorKind::BadField("filesize"));
    let mut archive = member("a", S_IFREG | 0o644, 1, 1, b"");
    archive[6 + 8 * 11 + 7] = b' '; // namesize
    assert_eq!(kind_of(&archive), CpioErrorKind::BadField("namesize"));
}

#[test]
fn upper_case_hex_is_accepted() {
    let mut archive = Writer::new();
    archive.add_file("f", 0o7777, u32::MAX, b"").unwrap();
    let archive = archive.finish();
    let text = std::str::from_utf8(&archive[..110]).unwrap();
    assert!(text.contains("FFFFFFFF"), "{text}");
    let got = parse(&archive).unwrap();
    assert_eq!(got[0].mtime, u32::MAX);
    assert_eq!(got[0].mode, S_IFREG | 0o7777);
}

#[test]
fn name_sizes_and_terminators_are_checked() {
    let fields = |namesize| [1, S_IFREG | 0o644, 0, 0, 1, 0, 0, 0, 0, 0, 0, namesize, 0];
    let mut archive = raw_member(fields(0), b"", b"");
    archive.extend(trailer());
    assert_eq!(kind_of(&archive), CpioErrorKind::BadNameSize);
    let mut archive = raw_member(fields(5000), b"", b"");
    archive.extend(trailer());
    assert_eq!(kind_of(&archive), CpioErrorKind::BadNameSize);
    let mut archive = raw_member(fields(2), b"ab", b"");
    archive.extend(trailer());
    assert_eq!(kind_of(&archive), CpioErrorKind::NameNotTerminated);
    let mut archive = raw_member(fields(4), b"a\0b\0", b"");
    archive.extend(trailer());
    assert_eq!(kind_of(&archive), CpioErrorKind::BadName);
    // A name size that runs past the end.
    let archive = raw_member(fields(4000), b"a\0", b"");
    assert_eq!(kind_of(&archive), CpioErrorKind::Truncated);
}

#[test]
fn sizes_past_the_end_are_truncation() {
    let mut archive = raw_member(
        [1, S_IFREG | 0o644, 0, 0, 1, 0, u32::MAX, 0, 0, 0, 0, 2, 0],
        b"a\0",
        b"",
    );
    archive.extend(trailer());
    assert_eq!(kind_of(&archive), CpioErrorKind::Truncated);
    assert_eq!(kind_of(b"070701"), CpioErrorKind::Truncated);
}

#[test]
fn type_specific_rules_are_checked() {
    let mut archive = member("d", S_IFDIR | 0o755, 1, 2, b"data");
    archive.extend(trailer());
    assert_eq!(kind_of(&archive), CpioErrorKind::DirectoryWithData);
    for target in [&b""[..], b"a\0b"] {
        let mut archive = member("l", S_IFLNK | 0o777, 1, 1, target);
        archive.extend(trailer());
        assert_eq!(kind_of(&archive), CpioErrorKind::BadSymlinkTarget);
    }
    let mut archive = member(".", S_IFREG | 0o644, 1, 1, b"");
    archive.extend(trailer());
    assert_eq!(kind_of(&archive), CpioErrorKind::RootNotDirectory);
}

#[test]
fn other_file_types_are_reported_not_refused() {
    let mut archive = member("dev/console", 0o020_600, 1, 1, b"");
    archive.extend(trailer());
    assert_eq!(parse(&archive).unwrap()[0].kind(), EntryKind::Other);
}

#[test]
fn hard_links_become_copies_of_the_last_members_data() {
    // As GNU cpio writes a file with three links: data on the last one.
    let mut archive = member("a", S_IFREG | 0o644, 7, 3, b"");
    archive.extend(member("b", S_IFREG | 0o644, 7, 3, b""));
    archive.extend(member("c", S_IFREG | 0o644, 7, 3, b"shared"));
    // Two links to an empty file, then an unrelated file.
    archive.extend(member("e1", S_IFREG | 0o644, 8, 2, b""));
    archive.extend(member("e2", S_IFREG | 0o644, 8, 2, b""));
    archive.extend(member("f", S_IFREG | 0o644, 9, 1, b"own"));
    // A link whose partner is not next to it stays empty.
    archive.extend(member("g1", S_IFREG | 0o644, 10, 2, b""));
    archive.extend(member("x", S_IFREG | 0o644, 11, 1, b"x"));
    archive.extend(member("g2", S_IFREG | 0o644, 10, 2, b"late"));
    archive.extend(trailer());
    let got: Vec<_> = parse(&archive)
        .unwrap()
        .iter()
        .map(|e| (e.name, e.data))
        .collect();
    assert_eq!(
        got,
        [
            (&b"a"[..], &b"shared"[..]),
            (b"b", b"shared"),
            (b"c", b"shared"),
            (b"e1", b""),
            (b"e2", b""),
            (b"f", b"own"),
            (b"g1", b""),
            (b"x", b"x"),
            (b"g2", b"late"),
        ]
    );
}

#[test]
fn a_long_run_of_empty_links_is_linear() {
    // 20000 links without data: quadratic lookahead would take seconds.
    let mut archive = Vec::new();
    for i in 0..20_000 {
        archive.extend(member(&format!("l{i}"), S_IFREG | 0o644, 5, 2, b""));
    }
    archive.extend(trailer());
    assert_eq!(parse(&archive).unwrap().len(), 20_000);
}

/// What the writer is asked to store.
#[derive(Clone, Debug)]
enum Spec {
    Dir(String, u32, u32),
    File(String, u32, u32, Vec<u8>),
    Symlink(String, u32, u32, Vec<u8>),
}

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-zA-Z0-9_.-]{1,12}", 1..5)
        .prop_map(|parts| parts.join("/"))
        .prop_filter("not a . or .. component", |n| {
            n.split('/').all(|c| c != "." && c != "..")
        })
}

fn spec() -> impl Strategy<Value = Spec> {
    let mode = 0u32..=0o7777;
    let mtime = any::<u32>();
    prop_oneof![
        (name(), mode.clone(), mtime).prop_map(|(n, m, t)| Spec::Dir(n, m, t)),
        (
            name(),
            mode.clone(),
            mtime,
            prop::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(n, m, t, d)| Spec::File(n, m, t, d)),
        (
            name(),
            mode,
            mtime,
            prop::collection::vec(1u8..=255, 1..100)
        )
            .prop_map(|(n, m, t, d)| Spec::Symlink(n, m, t, d)),
    ]
}

fn write(specs: &[Spec]) -> Vec<u8> {
    let mut w = Writer::new();
    for spec in specs {
        match spec {
            Spec::Dir(n, m, t) => w.add_dir(n, *m, *t),
            Spec::File(n, m, t, d) => w.add_file(n, *m, *t, d),
            Spec::Symlink(n, m, t, d) => w.add_symlink(n, *m, *t, d),
        }
        .unwrap();
    }
    w.finish()
}

/// A valid archive and the bytes to mess it up with.
fn archive() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(spec(), 0..8).prop_map(|specs| write(&specs))
}

proptest! {
    #[test]
    fn writer_output_reads_back_the_same(specs in prop::collection::vec(spec(), 0..12)) {
        let archive = write(&specs);
        prop_assert_eq!(archive.len() % 4, 0);
        let got = parse(&archive).unwrap();
        prop_assert_eq!(got.len(), specs.len());
        for (entry, spec) in got.iter().zip(&specs) {
            let (kind, name, mode, mtime, data): (_, &String, _, _, &[u8]) = match spec {
                Spec::Dir(n, m, t) => (S_IFDIR, n, m, t, &[]),
                Spec::File(n, m, t, d) => (S_IFREG, n, m, t, d),
                Spec::Symlink(n, m, t, d) => (S_IFLNK, n, m, t, d),
            };
            prop_assert_eq!(entry.name, name.as_bytes());
            prop_assert_eq!(entry.mode, kind | mode);
            prop_assert_eq!(entry.mtime, *mtime);
            prop_assert_eq!(entry.data, data);
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse(&bytes);
        let mut with_magic = b"070701".to_vec();
        with_magic.extend(&bytes);
        let _ = parse(&with_magic);
    }

    #[test]
    fn random_hex_headers_never_panic(
        digits in prop::collection::vec(prop::sample::select(b"0123456789abcdef".to_vec()), 104),
        tail in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = b"070701".to_vec();
        bytes.extend(digits);
        bytes.extend(tail);
        let _ = parse(&bytes);
    }

    #[test]
    fn truncated_archives_are_refused(archive in archive(), cut in any::<prop::sample::Index>()) {
        let len = cut.index(archive.len());
        let got = parse(&archive[..len]);
        prop_assert!(got.is_err(), "a cut at {} of {} was accepted", len, archive.len());
    }

    #[test]
    fn mutated_archives_never_panic(
        archive in archive(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = archive;
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Ok(entries) = parse(&bytes) {
            for entry in entries {
                prop_assert!(eremite_cpio::normalise_name(entry.name) == Some(entry.name));
            }
        }
    }
}
