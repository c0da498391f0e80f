//! Reading an app's files from the host without trusting them.
//!
//! The sandbox keeps running while we read its `/app`, and everything in it
//! was written by the agent. So every open is relative to a directory we
//! already hold, refuses to follow any symlink (`RESOLVE_NO_SYMLINKS`) and
//! to leave that directory (`RESOLVE_BENEATH`), and only regular files are
//! read (FIFOs and devices are skipped without blocking). A symlink is
//! recorded as a symlink — its target is a string, never followed.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Dir, FileType, Mode, OFlags, ResolveFlags};

use crate::VersionsError;

/// Directories never versioned: dependencies and build output (the lockfile
/// is versioned, so they can be recreated), and VCS metadata.
pub const SKIP_DIRS: &[&str] = &["node_modules", "dist", ".vite", ".git"];
/// Largest file versioned.
pub const MAX_FILE: u64 = 16 * 1024 * 1024;
/// Largest whole snapshot.
pub const MAX_TOTAL: u64 = 256 * 1024 * 1024;
/// Most files in a snapshot.
pub const MAX_FILES: usize = 20_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    File { data: Vec<u8>, executable: bool },
    Symlink { target: Vec<u8> },
}

impl Entry {
    pub fn mode(&self) -> &'static str {
        match self {
            Entry::File { executable: true, .. } => "100755",
            Entry::File { .. } => "100644",
            Entry::Symlink { .. } => "120000",
        }
    }
    pub fn bytes(&self) -> &[u8] {
        match self {
            Entry::File { data, .. } => data,
            Entry::Symlink { target } => target,
        }
    }
    /// The git blob id of the entry's content.
    pub fn blob_id(&self) -> String {
        use sha1::Digest;
        let b = self.bytes();
        let mut h = sha1::Sha1::new();
        h.update(format!("blob {}\0", b.len()).as_bytes());
        h.update(b);
        hex::encode(h.finalize())
    }
}

/// Path (relative, `/`-separated) → entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub entries: BTreeMap<String, Entry>,
    /// Paths left out, with why (too large, a name git refuses, …).
    pub skipped: Vec<(String, String)>,
}

/// A path component git accepts in a tree on every platform it protects
/// (`.git` in any case, NTFS/HFS aliases of it, `.`/`..`, separators).
pub fn valid_component(name: &[u8]) -> bool {
    let lower = name.to_ascii_lowercase();
    let trimmed: &[u8] = {
        let mut t = &lower[..];
        while let Some((last, rest)) = t.split_last() {
            if *last == b'.' || *last == b' ' {
                t = rest;
            } else {
                break;
            }
        }
        t
    };
    !(name.is_empty()
        || name == b"."
        || name == b".."
        || trimmed == b".git"
        || lower.starts_with(b"git~")
        || name.iter().any(|b| *b == b'/' || *b == b'\\' || *b == 0 || *b == b'\n' || *b == b'\r')
        || lower.ends_with(b".")
        || lower.ends_with(b" "))
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

fn open_beneath(dir: &impl AsFd, name: &[u8], flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let name = std::ffi::OsStr::from_encoded_bytes_unchecked_safe(name);
    rustix::fs::openat2(dir, name, flags | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty(), RESOLVE)
}

/// Small shim: `OsStr` from raw bytes (Unix), without unsafe.
trait FromBytes {
    fn from_encoded_bytes_unchecked_safe(b: &[u8]) -> &std::ffi::OsStr;
}
impl FromBytes for std::ffi::OsStr {
    fn from_encoded_bytes_unchecked_safe(b: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}

/// Reads every versioned file under `root`.
pub fn take(root: &Path) -> Result<Snapshot, VersionsError> {
    let dir = rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| VersionsError::Io(format!("opening {}", root.display()), e.into()))?;
    let mut snap = Snapshot::default();
    let mut total = 0u64;
    walk(&dir, "", &mut snap, &mut total, 0)?;
    Ok(snap)
}

fn walk(dir: &OwnedFd, prefix: &str, snap: &mut Snapshot, total: &mut u64, depth: usize) -> Result<(), VersionsError> {
    if depth > 64 {
        snap.skipped.push((prefix.to_owned(), "nested more than 64 directories deep".into()));
        return Ok(());
    }
    let io = |what: &str, e: rustix::io::Errno| VersionsError::Io(format!("{what} {prefix:?}"), e.into());
    let mut entries = Vec::new();
    for ent in Dir::read_from(dir).map_err(|e| io("listing", e))? {
        let ent = ent.map_err(|e| io("listing", e))?;
        let name = ent.file_name().to_bytes().to_vec();
        if name == b"." || name == b".." {
            continue;
        }
        let mut ft = ent.file_type();
        if ft == FileType::Unknown {
            let os = std::ffi::OsStr::from_encoded_bytes_unchecked_safe(&name);
            ft = rustix::fs::statat(dir, os, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                .map_or(FileType::Unknown, |st| FileType::from_raw_mode(st.st_mode));
        }
        entries.push((name, ft));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, ft) in entries {
        let shown = String::from_utf8_lossy(&name).into_owned();
        let path = if prefix.is_empty() { shown.clone() } else { format!("{prefix}/{shown}") };
        if SKIP_DIRS.contains(&shown.as_str()) && ft != FileType::RegularFile {
            continue;
        }
        if !valid_component(&name) || std::str::from_utf8(&name).is_err() {
            snap.skipped.push((path, "a file name git does not accept (or not UTF-8)".into()));
            continue;
        }
        match ft {
            FileType::Directory => match open_beneath(dir, &name, OFlags::RDONLY | OFlags::DIRECTORY) {
                Ok(sub) => walk(&sub, &path, snap, total, depth + 1)?,
                Err(e) => snap.skipped.push((path, format!("cannot open: {e}"))),
            },
            FileType::Symlink => {
                let target =
                    rustix::fs::readlinkat(dir, std::ffi::OsStr::from_encoded_bytes_unchecked_safe(&name), Vec::new())
                        .map_err(|e| io("reading link in", e))?;
                snap.entries.insert(path, Entry::Symlink { target: target.into_bytes() });
            }
            FileType::RegularFile => {
                // O_NONBLOCK: if the name was swapped for a FIFO since the
                // listing, opening it must not hang; fstat tells.
                let fd = match open_beneath(dir, &name, OFlags::RDONLY | OFlags::NONBLOCK) {
                    Ok(fd) => fd,
                    Err(e) => {
                        snap.skipped.push((path, format!("cannot open: {e}")));
                        continue;
                    }
                };
                let st = rustix::fs::fstat(&fd).map_err(|e| io("stat in", e))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                    snap.skipped.push((path, "not a regular file".into()));
                    continue;
                }
                let size = st.st_size as u64;
                if size > MAX_FILE {
                    snap.skipped.push((path, format!("{size} bytes is over the {MAX_FILE}-byte limit")));
                    continue;
                }
                *total += size;
                if *total > MAX_TOTAL || snap.entries.len() >= MAX_FILES {
                    return Err(VersionsError::TooLarge);
                }
                let mut data = Vec::with_capacity(size as usize);
                let mut f = std::fs::File::from(fd);
                std::io::Read::by_ref(&mut f)
                    .take(MAX_FILE + 1)
                    .read_to_end(&mut data)
                    .map_err(|e| VersionsError::Io(format!("reading {path}"), e))?;
                let executable = st.st_mode & 0o111 != 0;
                snap.entries.insert(path, Entry::File { data, executable });
            }
            _ => snap.skipped.push((path, "not a regular file, directory or symlink".into())),
        }
    }
    Ok(())
}

use std::io::Read as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_metadata_names_are_refused_in_every_spelling() {
        for bad in [".git", ".GIT", ".Git.", ".git ", "git~1", "a/b", "..", "", "x\0"] {
            assert!(!valid_component(bad.as_bytes()), "{bad:?} accepted");
        }
        for ok in [".gitattributes", ".github", "src", "index.html", ".gitignore"] {
            assert!(valid_component(ok.as_bytes()), "{ok:?} refused");
        }
    }

    #[test]
    fn blob_ids_match_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        let e = Entry::File { data: b"hello\n".to_vec(), executable: false };
        assert_eq!(e.blob_id(), "ce013625030ba8dba906f756967f9e9ca394464a");
    }
}
