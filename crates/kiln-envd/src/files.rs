//! The file API, confined to the app directory by the kernel.
//!
//! Every path is resolved with `openat2(RESOLVE_BENEATH)` relative to an open
//! handle on `/app`: the kernel refuses `..` that climbs out, absolute
//! symlinks and relative symlinks that leave the tree, with no window between
//! check and use. A textual pre-check gives clear errors for the obvious
//! cases (absolute paths, `..`) before the kernel is asked.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use kiln_types::envd::{FileEntry, FileKind, FileList, MAX_FILE_BYTES, MAX_LIST_ENTRIES, WriteResult};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::EnvdError;

/// Directories a recursive listing does not descend into: they are large,
/// generated, and never what an agent or a person means by "the app's files".
const SKIP_IN_RECURSIVE: &[&str] = &["node_modules", ".git", "dist"];

/// The app directory, held open so every lookup is relative to it.
#[derive(Debug)]
pub struct AppDir {
    root: OwnedFd,
    path: PathBuf,
    /// When each file was last written (see [`WRITE_SPACING`]).
    last_write: std::sync::Mutex<std::collections::HashMap<PathBuf, std::time::Instant>>,
    /// Told about every write and delete (the dev server's watcher).
    on_change: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<Change>>>,
}

/// A file the API changed: `event` is `add`, `change` or `unlink` (the
/// names of Vite's watcher events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub event: &'static str,
    pub path: String,
}

/// Least time between two writes of one file. Vite's watcher (chokidar)
/// drops a second change event for the same file within 50 ms without
/// re-emitting it, so a quick second write would never reach the preview.
pub const WRITE_SPACING: std::time::Duration = std::time::Duration::from_millis(60);

/// A path that passed the textual check: relative, no `..`, no NUL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelPath(PathBuf);

impl RelPath {
    /// `allow_root` admits the empty path (meaning `/app` itself), for listings.
    pub fn parse(raw: &str, allow_root: bool) -> Result<RelPath, EnvdError> {
        if raw.contains('\0') {
            return Err(EnvdError::BadRequest("path contains a NUL byte".into()));
        }
        let trimmed = raw.strip_prefix("/app/").unwrap_or(raw);
        let p = Path::new(trimmed);
        let mut clean = PathBuf::new();
        for c in p.components() {
            match c {
                Component::Normal(s) => clean.push(s),
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(EnvdError::PathEscapes(raw.to_owned()));
                }
            }
        }
        if clean.as_os_str().is_empty() && !allow_root {
            return Err(EnvdError::BadRequest("path is empty: name a file under /app".into()));
        }
        Ok(RelPath(clean))
    }

    pub fn as_path(&self) -> &Path {
        &self.0
    }

    pub fn display(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

fn resolve() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
}

fn map_errno(e: Errno, rel: &RelPath) -> EnvdError {
    match e {
        Errno::XDEV | Errno::LOOP => EnvdError::PathEscapes(rel.display()),
        Errno::NOENT | Errno::NOTDIR => EnvdError::NotFound(rel.display()),
        Errno::ISDIR => EnvdError::IsDirectory(rel.display()),
        other => EnvdError::Io(std::io::Error::from(other)),
    }
}

impl AppDir {
    pub fn open(path: &Path) -> std::io::Result<AppDir> {
        let root = rustix::fs::open(path, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(AppDir { root, path: path.to_owned(), last_write: Default::default(), on_change: Default::default() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_beneath(&self, rel: &Path, flags: OFlags, mode: Mode) -> Result<OwnedFd, Errno> {
        let target: &Path = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
        rustix::fs::openat2(&self.root, target, flags | OFlags::CLOEXEC, mode, resolve())
    }

    pub fn read(&self, rel: &RelPath) -> Result<Vec<u8>, EnvdError> {
        let fd = self.open_beneath(rel.as_path(), OFlags::RDONLY, Mode::empty()).map_err(|e| map_errno(e, rel))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| map_errno(e, rel))?;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            return Err(EnvdError::IsDirectory(rel.display()));
        }
        if st.st_size as u64 > MAX_FILE_BYTES as u64 {
            return Err(EnvdError::TooLarge { got: st.st_size as u64, max: MAX_FILE_BYTES as u64 });
        }
        let mut buf = Vec::with_capacity(st.st_size as usize);
        File::from(fd).read_to_end(&mut buf)?;
        Ok(buf)
    }

    /// Opens (creating as needed) each parent directory of `rel`, one
    /// component at a time, each step confined beneath the previous one.
    fn parent_dir(&self, rel: &RelPath) -> Result<OwnedFd, EnvdError> {
        let mut cur = rustix::io::dup(&self.root).map_err(std::io::Error::from)?;
        let Some(parent) = rel.as_path().parent() else {
            return Ok(cur);
        };
        for comp in parent.components() {
            let name = comp.as_os_str();
            let dir_flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
            let next = match rustix::fs::openat2(&cur, name, dir_flags, Mode::empty(), resolve()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&cur, name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(map_errno(e, rel)),
                    }
                    rustix::fs::openat2(&cur, name, dir_flags, Mode::empty(), resolve())
                        .map_err(|e| map_errno(e, rel))?
                }
                Err(e) => return Err(map_errno(e, rel)),
            };
            cur = next;
        }
        Ok(cur)
    }

    /// Sends every later write and delete to `tx`.
    pub fn set_change_hook(&self, tx: tokio::sync::mpsc::UnboundedSender<Change>) {
        *self.on_change.lock().unwrap() = Some(tx);
    }

    fn changed(&self, event: &'static str, rel: &RelPath) {
        if let Some(tx) = self.on_change.lock().unwrap().as_ref() {
            let _ = tx.send(Change { event, path: rel.display() });
        }
    }

    /// Waits until [`WRITE_SPACING`] has passed since the file's last write.
    fn space_writes(&self, rel: &Path) {
        let now = std::time::Instant::now();
        let wait = {
            let mut m = self.last_write.lock().unwrap();
            if m.len() > 1024 {
                m.retain(|_, t| now.duration_since(*t) < WRITE_SPACING);
            }
            let since = |t: &std::time::Instant| WRITE_SPACING.saturating_sub(now.saturating_duration_since(*t));
            let wait = m.get(rel).map_or(std::time::Duration::ZERO, since);
            m.insert(rel.to_owned(), now + wait);
            wait
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }

    /// Writes a file. An existing regular file is rewritten in place (one
    /// `pwrite`, then a truncate only if it shrank): its inode stays, which
    /// is what file watchers follow — replacing it by rename makes Vite's
    /// watcher juggle a temporary file and a new inode, and under load it
    /// then misses changes. New files, and names that are symlinks or
    /// special files, are written to a temporary file and renamed into
    /// place, so a symlink is replaced, never followed. Writes of one file
    /// are spaced by [`WRITE_SPACING`].
    pub fn write(&self, rel: &RelPath, data: &[u8]) -> Result<WriteResult, EnvdError> {
        if data.len() > MAX_FILE_BYTES {
            return Err(EnvdError::TooLarge { got: data.len() as u64, max: MAX_FILE_BYTES as u64 });
        }
        self.space_writes(rel.as_path());
        let dir = self.parent_dir(rel)?;
        let name = rel.as_path().file_name().ok_or_else(|| EnvdError::BadRequest("path names no file".into()))?;
        // O_NOFOLLOW: a symlink fails here (ELOOP) and is replaced below;
        // O_NONBLOCK: a FIFO without a reader fails (ENXIO) instead of hanging.
        let flags = OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        if let Ok(fd) = rustix::fs::openat2(&dir, name, flags, Mode::empty(), resolve())
            && let Ok(st) = rustix::fs::fstat(&fd)
            && st.st_mode & libc::S_IFMT == libc::S_IFREG
        {
            let mut off = 0usize;
            while off < data.len() {
                off += rustix::io::pwrite(&fd, &data[off..], off as u64).map_err(|e| map_errno(e, rel))?;
            }
            if st.st_size as u64 > data.len() as u64 {
                rustix::fs::ftruncate(&fd, data.len() as u64).map_err(|e| map_errno(e, rel))?;
            }
            self.changed("change", rel);
            return Ok(WriteResult { path: rel.display(), bytes: data.len() as u64, created: false });
        }
        let created = match rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                return Err(EnvdError::IsDirectory(rel.display()));
            }
            Ok(_) => false,
            Err(Errno::NOENT) => true,
            Err(e) => return Err(map_errno(e, rel)),
        };
        let tmp_name = format!(".{}.kiln-{:016x}", name.to_string_lossy(), rand_u64());
        let tmp = OsStr::new(&tmp_name);
        let fd = rustix::fs::openat2(
            &dir,
            tmp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
            resolve(),
        )
        .map_err(|e| map_errno(e, rel))?;
        let mut f = File::from(fd);
        let written = f.write_all(data).and_then(|()| f.flush());
        drop(f);
        if let Err(e) = written {
            let _ = rustix::fs::unlinkat(&dir, tmp, rustix::fs::AtFlags::empty());
            return Err(e.into());
        }
        if let Err(e) = rustix::fs::renameat(&dir, tmp, &dir, name) {
            let _ = rustix::fs::unlinkat(&dir, tmp, rustix::fs::AtFlags::empty());
            return Err(map_errno(e, rel));
        }
        self.changed(if created { "add" } else { "change" }, rel);
        Ok(WriteResult { path: rel.display(), bytes: data.len() as u64, created })
    }

    /// Deletes a file, a symlink (not its target) or, with `recursive`, a
    /// directory tree.
    pub fn delete(&self, rel: &RelPath, recursive: bool) -> Result<(), EnvdError> {
        let name =
            rel.as_path().file_name().ok_or_else(|| EnvdError::BadRequest("refusing to delete /app itself".into()))?;
        let parent = rel.as_path().parent().unwrap_or(Path::new(""));
        let dir = self
            .open_beneath(parent, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty())
            .map_err(|e| map_errno(e, rel))?;
        let st =
            rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).map_err(|e| map_errno(e, rel))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::empty()).map_err(|e| map_errno(e, rel))?;
            self.changed("unlink", rel);
            return Ok(());
        }
        if !recursive {
            return rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::REMOVEDIR).map_err(|e| match e {
                Errno::NOTEMPTY => {
                    EnvdError::BadRequest(format!("{:?} is a non-empty directory: pass recursive=true", rel.display()))
                }
                other => map_errno(other, rel),
            });
        }
        remove_tree(&dir, name).map_err(|e| map_errno(e, rel))
    }

    pub fn list(&self, rel: &RelPath, recursive: bool) -> Result<FileList, EnvdError> {
        let fd = self
            .open_beneath(rel.as_path(), OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty())
            .map_err(|e| map_errno(e, rel))?;
        let mut out = FileList { entries: Vec::new(), truncated: false };
        list_into(&fd, rel.as_path(), recursive, &mut out).map_err(|e| map_errno(e, rel))?;
        out.entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}

fn kind_of(mode: u32) -> FileKind {
    match mode & libc::S_IFMT {
        libc::S_IFREG => FileKind::File,
        libc::S_IFDIR => FileKind::Dir,
        libc::S_IFLNK => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

fn list_into(dir: &OwnedFd, prefix: &Path, recursive: bool, out: &mut FileList) -> Result<(), Errno> {
    let mut subdirs = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        if out.entries.len() >= MAX_LIST_ENTRIES {
            out.truncated = true;
            return Ok(());
        }
        let name_os = OsStr::from_bytes(name).to_owned();
        let st = rustix::fs::statat(dir, name_os.as_os_str(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
        let kind = kind_of(st.st_mode);
        let path = prefix.join(&name_os);
        out.entries.push(FileEntry { path: path.to_string_lossy().into_owned(), kind, size: st.st_size as u64 });
        if recursive && kind == FileKind::Dir && !SKIP_IN_RECURSIVE.iter().any(|s| s.as_bytes() == name) {
            subdirs.push((name_os, path));
        }
    }
    for (name, path) in subdirs {
        let sub = rustix::fs::openat2(
            dir,
            &name,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            resolve(),
        )?;
        list_into(&sub, &path, recursive, out)?;
        if out.truncated {
            break;
        }
    }
    Ok(())
}

/// Removes `name` under `dir` without ever following a symlink.
fn remove_tree(dir: &impl AsFd, name: &OsStr) -> Result<(), Errno> {
    let sub = rustix::fs::openat2(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        resolve(),
    )?;
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(&sub)? {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_owned());
        }
    }
    for n in names {
        let st = rustix::fs::statat(&sub, n.as_os_str(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            remove_tree(&sub, &n)?;
        } else {
            rustix::fs::unlinkat(&sub, n.as_os_str(), rustix::fs::AtFlags::empty())?;
        }
    }
    rustix::fs::unlinkat(dir, name, rustix::fs::AtFlags::REMOVEDIR)
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    // getrandom never fails on Linux ≥ 3.17 for 8 bytes.
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    u64::from_ne_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> (tempfile::TempDir, AppDir) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("app");
        std::fs::create_dir(&root).unwrap();
        let a = AppDir::open(&root).unwrap();
        (t, a)
    }

    #[test]
    fn textual_check_refuses_absolute_and_parent_paths() {
        for bad in ["/etc/passwd", "../x", "src/../../x", "/app/../etc"] {
            assert!(matches!(RelPath::parse(bad, false), Err(EnvdError::PathEscapes(_))), "{bad}");
        }
        assert!(RelPath::parse("", false).is_err());
        assert_eq!(RelPath::parse("/app/src/./a.ts", false).unwrap().display(), "src/a.ts");
        assert_eq!(RelPath::parse("", true).unwrap().display(), "");
    }

    #[test]
    fn write_creates_parents_then_read_and_list_see_it() {
        let (_t, a) = app();
        let r = a.write(&RelPath::parse("src/deep/x.ts", false).unwrap(), b"hello").unwrap();
        assert!(r.created);
        assert_eq!(a.read(&RelPath::parse("src/deep/x.ts", false).unwrap()).unwrap(), b"hello");
        let r = a.write(&RelPath::parse("src/deep/x.ts", false).unwrap(), b"again").unwrap();
        assert!(!r.created);
        let l = a.list(&RelPath::parse("", true).unwrap(), true).unwrap();
        let paths: Vec<_> = l.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["src", "src/deep", "src/deep/x.ts"]);
        // No temporary file is left behind.
        let l = a.list(&RelPath::parse("src/deep", true).unwrap(), false).unwrap();
        assert_eq!(l.entries.len(), 1);
    }

    #[test]
    fn symlinks_leading_outside_are_refused_by_the_kernel() {
        let (t, a) = app();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(&outside, a.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../outside", a.path().join("rel")).unwrap();
        for p in ["abs/secret", "rel/secret"] {
            let rel = RelPath::parse(p, false).unwrap();
            assert!(matches!(a.read(&rel), Err(EnvdError::PathEscapes(_))), "read {p}");
            assert!(matches!(a.write(&rel, b"x"), Err(EnvdError::PathEscapes(_))), "write {p}");
            let new = RelPath::parse(&format!("{p}-dir/new"), false).unwrap();
            let _ = a.write(&new, b"x");
        }
        let names: Vec<_> = std::fs::read_dir(&outside).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["secret"], "something was written outside the app dir");
        assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"s");
    }

    #[test]
    fn writing_over_a_symlink_replaces_the_link_not_its_target() {
        let (t, a) = app();
        let target = t.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, a.path().join("link")).unwrap();
        a.write(&RelPath::parse("link", false).unwrap(), b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert_eq!(std::fs::read(a.path().join("link")).unwrap(), b"new");
    }

    #[test]
    fn delete_removes_links_not_targets_and_needs_recursive_for_trees() {
        let (t, a) = app();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("f"), b"f").unwrap();
        a.write(&RelPath::parse("d/x", false).unwrap(), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, a.path().join("d/out")).unwrap();
        assert!(matches!(a.delete(&RelPath::parse("d", false).unwrap(), false), Err(EnvdError::BadRequest(_))));
        a.delete(&RelPath::parse("d", false).unwrap(), true).unwrap();
        assert!(!a.path().join("d").exists());
        assert!(outside.join("f").exists());
    }

    #[test]
    fn oversize_writes_are_refused() {
        let (_t, a) = app();
        let big = vec![0u8; MAX_FILE_BYTES + 1];
        assert!(matches!(a.write(&RelPath::parse("big", false).unwrap(), &big), Err(EnvdError::TooLarge { .. })));
        assert!(!a.path().join("big").exists());
    }
}
