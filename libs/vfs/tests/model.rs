//! Random operation sequences against a simple model of the same file
//! system (a map from absolute path to node): every result and the final
//! tree must agree.

use std::collections::BTreeMap;

use eremite_interface::errno::{self, Errno};
use eremite_interface::fs::OpenFlags;
use eremite_vfs::{DirCursor, Kind, Location, ParentLocation, ROOT, RamFs};
use proptest::prelude::*;

const NOW: i64 = 1;

#[derive(Clone, Debug, PartialEq)]
enum Node {
    Dir,
    File(Vec<u8>),
}

/// The model: every path that exists ("" is the root).
struct Model(BTreeMap<String, Node>);

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

impl Model {
    fn new() -> Self {
        Self(BTreeMap::from([(String::new(), Node::Dir)]))
    }

    fn check_parent(&self, path: &str) -> Result<(), Errno> {
        // Every ancestor must exist and be a directory, checked from the top.
        let mut at = String::new();
        for part in parent_of(path).split('/').filter(|p| !p.is_empty()) {
            at = format!("{at}/{part}");
            match self.0.get(&at) {
                None => return Err(errno::ENOENT),
                Some(Node::File(_)) => return Err(errno::ENOTDIR),
                Some(Node::Dir) => {}
            }
        }
        Ok(())
    }

    fn children(&self, dir: &str) -> impl Iterator<Item = &String> {
        let prefix = format!("{dir}/");
        self.0
            .keys()
            .filter(move |k| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
    }

    fn apply(&mut self, op: &Op) -> Result<Vec<u8>, Errno> {
        match op {
            Op::Mkdir(p) => {
                self.check_parent(p)?;
                if self.0.contains_key(p) {
                    return Err(errno::EEXIST);
                }
                self.0.insert(p.clone(), Node::Dir);
            }
            Op::Write(p, offset, data) => {
                self.check_parent(p)?;
                let node = self.0.entry(p.clone()).or_insert(Node::File(Vec::new()));
                let Node::File(contents) = node else {
                    return Err(errno::EISDIR);
                };
                let end = *offset as usize + data.len();
                // A write of nothing does not extend the file.
                if !data.is_empty() {
                    if contents.len() < end {
                        contents.resize(end, 0);
                    }
                    contents[*offset as usize..end].copy_from_slice(data);
                }
            }
            Op::Truncate(p, len) => match self.lookup(p)? {
                Node::Dir => return Err(errno::EISDIR),
                Node::File(_) => {
                    if let Some(Node::File(c)) = self.0.get_mut(p) {
                        c.resize(*len as usize, 0);
                    }
                }
            },
            Op::Read(p) => {
                return match self.lookup(p)? {
                    Node::Dir => Err(errno::EISDIR),
                    Node::File(c) => Ok(c.clone()),
                };
            }
            Op::Unlink(p) => match self.lookup(p)? {
                Node::Dir => return Err(errno::EISDIR),
                Node::File(_) => {
                    self.0.remove(p);
                }
            },
            Op::Rmdir(p) => match self.lookup(p)? {
                Node::File(_) => return Err(errno::ENOTDIR),
                Node::Dir => {
                    if self.children(p).next().is_some() {
                        return Err(errno::ENOTEMPTY);
                    }
                    self.0.remove(p);
                }
            },
            Op::Rename(from, to) => {
                self.check_parent(from)?;
                self.check_parent(to)?;
                let node = self.0.get(from).ok_or(errno::ENOENT)?.clone();
                if from == to {
                    return Ok(Vec::new());
                }
                if node == Node::Dir && to.starts_with(&format!("{from}/")) {
                    return Err(errno::EINVAL);
                }
                match (&node, self.0.get(to)) {
                    (Node::Dir, Some(Node::Dir)) => {
                        if self.children(to).next().is_some() {
                            return Err(errno::ENOTEMPTY);
                        }
                    }
                    (Node::Dir, Some(Node::File(_))) => return Err(errno::ENOTDIR),
                    (Node::File(_), Some(Node::Dir)) => return Err(errno::EISDIR),
                    _ => {}
                }
                let moved: Vec<(String, Node)> = self
                    .0
                    .iter()
                    .filter(|(k, _)| *k == from || k.starts_with(&format!("{from}/")))
                    .map(|(k, v)| (format!("{to}{}", &k[from.len()..]), v.clone()))
                    .collect();
                self.0
                    .retain(|k, _| k != from && !k.starts_with(&format!("{from}/")));
                self.0.remove(to);
                self.0.extend(moved);
            }
        }
        Ok(Vec::new())
    }

    fn lookup(&self, p: &str) -> Result<&Node, Errno> {
        self.check_parent(p)?;
        self.0.get(p).ok_or(errno::ENOENT)
    }
}

#[derive(Clone, Debug)]
enum Op {
    Mkdir(String),
    Write(String, u64, Vec<u8>),
    Truncate(String, u64),
    Read(String),
    Unlink(String),
    Rmdir(String),
    Rename(String, String),
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..4)
        .prop_map(|parts| format!("/{}", parts.join("/")))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        path().prop_map(Op::Mkdir),
        (
            path(),
            0..40_000u64,
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(p, o, d)| Op::Write(p, o, d)),
        (path(), 0..40_000u64).prop_map(|(p, l)| Op::Truncate(p, l)),
        path().prop_map(Op::Read),
        path().prop_map(Op::Unlink),
        path().prop_map(Op::Rmdir),
        (path(), path()).prop_map(|(a, b)| Op::Rename(a, b)),
    ]
}

fn ram_parent(fs: &RamFs, p: &str) -> Result<(u64, Vec<u8>), Errno> {
    match fs.resolve_parent(p.as_bytes())? {
        ParentLocation::Ram { dir, name, .. } => Ok((dir, name)),
        ParentLocation::Mount { .. } => unreachable!("no mounts here"),
    }
}

fn ram(loc: Location) -> u64 {
    match loc {
        Location::Ram(ino) => ino,
        Location::Mount { .. } => unreachable!("no mounts here"),
    }
}

fn apply(fs: &mut RamFs, op: &Op) -> Result<Vec<u8>, Errno> {
    match op {
        Op::Mkdir(p) => {
            let (dir, name) = ram_parent(fs, p)?;
            fs.mkdir(dir, &name, 0o755, NOW)?;
        }
        Op::Write(p, offset, data) => {
            let ino = ram(fs.open(
                p.as_bytes(),
                OpenFlags::CREAT | OpenFlags::WRONLY,
                0o644,
                NOW,
            )?);
            let result = fs.write(ino, *offset, data, NOW);
            fs.close(ino)?;
            result?;
        }
        Op::Truncate(p, len) => {
            let ino = ram(fs.resolve(p.as_bytes(), true)?);
            fs.set_len(ino, *len, NOW)?;
        }
        Op::Read(p) => {
            let ino = ram(fs.open(p.as_bytes(), OpenFlags::RDONLY, 0, NOW)?);
            let mut buf = vec![0; 50_000];
            let n = fs.read(ino, 0, &mut buf);
            fs.close(ino)?;
            buf.truncate(n?);
            return Ok(buf);
        }
        Op::Unlink(p) => {
            let (dir, name) = ram_parent(fs, p)?;
            fs.unlink(dir, &name, NOW)?;
        }
        Op::Rmdir(p) => {
            let (dir, name) = ram_parent(fs, p)?;
            fs.rmdir(dir, &name, NOW)?;
        }
        Op::Rename(from, to) => {
            let (from_dir, from_name) = ram_parent(fs, from)?;
            let (to_dir, to_name) = ram_parent(fs, to)?;
            fs.rename(from_dir, &from_name, to_dir, &to_name, NOW)?;
        }
    }
    Ok(Vec::new())
}

/// The whole tree as the model's map.
fn dump(fs: &RamFs, dir: u64, prefix: &str, out: &mut BTreeMap<String, Node>) {
    let mut entries = Vec::new();
    fs.read_dir(dir, &DirCursor::Start, |e| {
        if e.name != b"." && e.name != b".." {
            entries.push((String::from_utf8(e.name.to_vec()).unwrap(), e.ino, e.kind));
        }
        true
    })
    .unwrap();
    for (name, ino, kind) in entries {
        let path = format!("{prefix}/{name}");
        match kind {
            Kind::Dir => {
                out.insert(path.clone(), Node::Dir);
                dump(fs, ino, &path, out);
            }
            Kind::File => {
                let mut buf = vec![0; fs.len(ino).unwrap() as usize];
                fs.read(ino, 0, &mut buf).unwrap();
                out.insert(path, Node::File(buf));
            }
            Kind::Symlink => unreachable!("no symlinks here"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn ram_fs_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let mut fs = RamFs::new(NOW);
        let mut model = Model::new();
        for op in &ops {
            let expected = model.apply(op);
            let got = apply(&mut fs, op);
            prop_assert_eq!(got, expected, "{:?}", op);
        }
        let mut tree = BTreeMap::from([(String::new(), Node::Dir)]);
        dump(&fs, ROOT, "", &mut tree);
        prop_assert_eq!(tree, model.0);
        // Every inode is reachable: nothing leaked.
        prop_assert_eq!(fs.inode_count(), model_inodes(&fs));
    }
}

fn model_inodes(fs: &RamFs) -> usize {
    let mut tree = BTreeMap::new();
    dump(fs, ROOT, "", &mut tree);
    tree.len() + 1
}
