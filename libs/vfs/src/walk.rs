//! Path resolution (`path_resolution(7)`): one component at a time, with
//! the components still to do on a stack, so that a symbolic link's target
//! is pushed in front of the rest of the path and no recursion is needed.

use alloc::boxed::Box;
use alloc::vec::Vec;

use eremite_interface::errno::{self, Errno};
use eremite_interface::fs::{NAME_MAX, PATH_MAX};

use crate::{Ino, Location, MAX_SYMLINKS, Node, ParentLocation, ROOT, RamFs};

/// Push the components of `path` onto `stack` so that the first is on
/// top. A trailing `/` becomes a final `.`, which requires a directory.
fn push_components<'a>(stack: &mut Vec<&'a [u8]>, path: &'a [u8]) {
    if path.ends_with(b"/") && path.iter().any(|&b| b != b'/') {
        stack.push(b".");
    }
    stack.extend(path.rsplit(|&b| b == b'/').filter(|c| !c.is_empty()));
}

fn check_path(path: &[u8]) -> Result<(), Errno> {
    if path.is_empty() {
        return Err(errno::ENOENT);
    }
    if path.len() >= PATH_MAX {
        return Err(errno::ENAMETOOLONG);
    }
    Ok(())
}

impl RamFs {
    /// Resolve `path` from directory `start` (absolute paths from `/`).
    /// `links` counts symbolic links followed so far; `trail`, when given,
    /// collects the names from `/` to the result (for `canonicalize`).
    pub(crate) fn walk(
        &self,
        start: Ino,
        path: &[u8],
        follow_last: bool,
        links: &mut u32,
        mut trail: Option<&mut Vec<Box<[u8]>>>,
    ) -> Result<Location, Errno> {
        check_path(path)?;
        let mut cur = if path.starts_with(b"/") { ROOT } else { start };
        if cur == ROOT
            && let Some(trail) = trail.as_deref_mut()
        {
            trail.clear();
        }
        let mut stack: Vec<&[u8]> = Vec::new();
        push_components(&mut stack, path);
        while let Some(component) = stack.pop() {
            let dir = self.dir(cur)?;
            if let Some(mount) = dir.mount {
                stack.push(component);
                match mount_path(&mut stack) {
                    Some(path) => return Ok(Location::Mount { mount, path }),
                    None => {
                        // `..` out of the mount's root: continue above it.
                        cur = dir.parent;
                        if let Some(trail) = trail.as_deref_mut() {
                            trail.pop();
                        }
                        continue;
                    }
                }
            }
            match component {
                b"." => continue,
                b".." => {
                    cur = dir.parent;
                    if let Some(trail) = trail.as_deref_mut() {
                        trail.pop();
                    }
                    continue;
                }
                _ => {}
            }
            if component.len() > NAME_MAX {
                return Err(errno::ENAMETOOLONG);
            }
            let child = *dir.entries.get(component).ok_or(errno::ENOENT)?;
            if let Node::Symlink(target) = &self.inode(child)?.node
                && (follow_last || !stack.is_empty())
            {
                *links += 1;
                if *links > MAX_SYMLINKS {
                    return Err(errno::ELOOP);
                }
                if target.starts_with(b"/") {
                    cur = ROOT;
                    if let Some(trail) = trail.as_deref_mut() {
                        trail.clear();
                    }
                }
                push_components(&mut stack, target);
                continue;
            }
            cur = child;
            if let Some(trail) = trail.as_deref_mut() {
                trail.push(component.into());
            }
        }
        if let Some(mount) = self.dir(cur).ok().and_then(|d| d.mount) {
            return Ok(Location::Mount {
                mount,
                path: Vec::new(),
            });
        }
        Ok(Location::Ram(cur))
    }

    /// Resolve all but the last component of `path` from `start`.
    pub(crate) fn walk_parent(
        &self,
        start: Ino,
        path: &[u8],
        links: &mut u32,
    ) -> Result<ParentLocation, Errno> {
        check_path(path)?;
        let trimmed_len = path.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
        let has_trailing_slash = trimmed_len < path.len();
        let trimmed = &path[..trimmed_len];
        if trimmed.is_empty() {
            // `/` itself: its "name" is `.` in itself.
            return Ok(ParentLocation::Ram {
                dir: ROOT,
                name: b".".to_vec(),
                has_trailing_slash,
            });
        }
        let (dir_path, name) = match trimmed.iter().rposition(|&b| b == b'/') {
            Some(slash) => (&trimmed[..=slash], &trimmed[slash + 1..]),
            None => (&b""[..], trimmed),
        };
        if name.len() > NAME_MAX {
            return Err(errno::ENAMETOOLONG);
        }
        let dir = if dir_path.is_empty() {
            Location::Ram(start)
        } else {
            self.walk(start, dir_path, true, links, None)?
        };
        match dir {
            Location::Ram(dir) => {
                if let Some(mount) = self.dir(dir)?.mount {
                    return Ok(ParentLocation::Mount {
                        mount,
                        path: name.to_vec(),
                    });
                }
                Ok(ParentLocation::Ram {
                    dir,
                    name: name.to_vec(),
                    has_trailing_slash,
                })
            }
            Location::Mount { mount, mut path } => {
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(name);
                Ok(ParentLocation::Mount { mount, path })
            }
        }
    }
}

/// The rest of a path below a mount point, normalised lexically (`.`
/// dropped, `..` cancels the previous component). `None` when a `..`
/// leaves the mount's root: then `stack` holds what follows it.
fn mount_path(stack: &mut Vec<&[u8]>) -> Option<Vec<u8>> {
    let mut parts: Vec<&[u8]> = Vec::new();
    while let Some(component) = stack.pop() {
        match component {
            b"." => {}
            b".." => {
                parts.pop()?;
            }
            name => parts.push(name),
        }
    }
    Some(parts.join(&b'/'))
}
