//! Everything the agent can put in `/app` — a `.git` directory with hooks
//! and an fsmonitor command, `.gitattributes` naming filter drivers, a nested
//! repository pointing at `/etc`, symlinks out of the tree, a FIFO — is
//! versioned as inert data or skipped: the host runs nothing from it and
//! reads nothing outside the work tree.

use std::os::unix::fs::symlink;
use std::path::Path;

use kiln_versions::{AppRepo, Entry, snapshot};

fn write(p: &Path, s: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, s).unwrap();
}

#[test]
fn hostile_app_files_are_inert() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    write(&outside.join("secret.txt"), "TOP-SECRET-HOST-DATA");
    let pwned = tmp.path().join("pwned");
    let app = tmp.path().join("app");
    write(&app.join("src/App.tsx"), "export default function App() { return null }\n");
    let cmd = format!("touch {}", pwned.display());
    // A git directory of the agent's own, with every way git runs commands.
    write(
        &app.join(".git/config"),
        &format!(
            "[core]\n\tfsmonitor = {cmd}\n\thooksPath = hooks\n[filter \"evil\"]\n\tclean = {cmd}\n\tsmudge = {cmd}\n[diff \"evil\"]\n\ttextconv = {cmd}\n\tcommand = {cmd}\n"
        ),
    );
    write(&app.join(".git/HEAD"), "ref: refs/heads/main\n");
    for hook in ["pre-commit", "post-commit", "post-checkout", "reference-transaction", "pre-auto-gc"] {
        write(&app.join(format!(".git/hooks/{hook}")), &format!("#!/bin/sh\n{cmd}\n"));
        write(&app.join(format!("hooks/{hook}")), &format!("#!/bin/sh\n{cmd}\n"));
    }
    write(&app.join(".gitattributes"), "* filter=evil diff=evil\n");
    write(&app.join(".gitmodules"), "[submodule \"x\"]\n\tpath = sub\n\turl = /etc\n");
    // A nested repository whose gitfile points outside the tree.
    write(&app.join("sub/.git"), &format!("gitdir: {}\n", outside.display()));
    write(&app.join("sub/readme.md"), "nested\n");
    // Symlinks out of the tree, to a file and to a directory.
    symlink(outside.join("secret.txt"), app.join("leak.txt")).unwrap();
    symlink(&outside, app.join("outdir")).unwrap();
    symlink("/etc/shadow", app.join("shadow")).unwrap();
    // A FIFO: opening it for reading would block forever.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        app.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();

    let repo = AppRepo::open(&tmp.path().join("data"), "app1").unwrap();
    let snap = snapshot::take(&app).unwrap();
    let v1 = repo.commit(&snap, "Build it").unwrap().expect("a first version");
    // Change something and commit again, list, diff, read back.
    write(&app.join("src/App.tsx"), "export default function App() { return 'v2' }\n");
    let v2 = repo.commit(&snapshot::take(&app).unwrap(), "Edit it").unwrap().expect("a second version");
    let versions = repo.list().unwrap();
    let diff = repo.diff(&v2.sha).unwrap();
    let files = repo.files_at(&v1.sha).unwrap();

    assert!(!pwned.exists(), "the host ran a command from the app's files");
    assert_eq!(versions.len(), 2);
    assert!(diff.contains("+export default function App() { return 'v2' }"), "{diff}");
    // No .git paths anywhere in the history.
    assert!(
        files.entries.keys().all(|p| !p.split('/').any(|c| c.eq_ignore_ascii_case(".git"))),
        "{:?}",
        files.entries.keys()
    );
    // The hostile-but-harmless files are versioned as data.
    assert!(files.entries.contains_key(".gitattributes"));
    assert!(files.entries.contains_key("hooks/pre-commit"));
    assert!(files.entries.contains_key("sub/readme.md"));
    // Symlinks are links, with their target as text; nothing behind them was read.
    assert_eq!(
        files.entries["leak.txt"],
        Entry::Symlink { target: outside.join("secret.txt").to_string_lossy().as_bytes().to_vec() }
    );
    assert_eq!(files.entries["shadow"], Entry::Symlink { target: b"/etc/shadow".to_vec() });
    assert!(!files.entries.keys().any(|p| p.starts_with("outdir/")));
    for (path, e) in &files.entries {
        let content = String::from_utf8_lossy(e.bytes());
        assert!(!content.contains("TOP-SECRET"), "{path} holds the secret");
        assert!(!content.contains("root:"), "{path} holds a host file");
    }
    assert!(!files.entries.contains_key("fifo"));
    assert!(snap.skipped.iter().any(|(p, _)| p == "fifo"));
    // The git directory is the host's: no hooks, no config from the app.
    let hooks = repo.git_dir().join("hooks");
    assert!(!hooks.exists() || std::fs::read_dir(&hooks).unwrap().next().is_none());
    let config = std::fs::read_to_string(repo.git_dir().join("config")).unwrap();
    assert!(!config.contains("evil") && !config.contains("fsmonitor"), "{config}");
}

#[test]
fn a_file_swapped_for_a_symlink_is_never_followed() {
    // The race the snapshot must survive: a name listed as a regular file is
    // replaced with a symlink before it is opened. openat2(NO_SYMLINKS)
    // refuses it; simulate by snapshotting a tree where the swap happened.
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app");
    write(&app.join("a/b.txt"), "fine");
    write(&tmp.path().join("secret"), "TOP-SECRET");
    std::fs::remove_file(app.join("a/b.txt")).unwrap();
    symlink(tmp.path().join("secret"), app.join("a/b.txt")).unwrap();
    std::fs::rename(app.join("a"), app.join("a2")).unwrap();
    symlink(tmp.path(), app.join("a")).unwrap();
    let snap = snapshot::take(&app).unwrap();
    for e in snap.entries.values() {
        assert!(!String::from_utf8_lossy(e.bytes()).contains("TOP-SECRET"));
    }
    assert!(matches!(snap.entries["a"], Entry::Symlink { .. }));
}
