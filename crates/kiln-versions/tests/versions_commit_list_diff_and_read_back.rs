//! Commit only when something changed, list newest first with the changed
//! files, diff against the parent, and read any version back exactly.

use std::path::Path;

use kiln_versions::{AppRepo, Entry, snapshot};

fn write(p: &Path, s: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, s).unwrap();
}

#[test]
fn versions_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app");
    write(&app.join("index.html"), "<div id=root></div>\n");
    write(&app.join("src/App.tsx"), "v1\n");
    write(&app.join("node_modules/react/index.js"), "ignored\n");
    write(&app.join("dist/x.js"), "ignored\n");
    write(&app.join("weird \"name\" x.txt"), "quoted\n");
    let repo = AppRepo::open(tmp.path(), "a-1").unwrap();
    assert_eq!(repo.head().unwrap(), None);
    assert!(repo.list().unwrap().is_empty());

    let v1 = repo.commit(&snapshot::take(&app).unwrap(), "Make a todo app\nwith details").unwrap().unwrap();
    assert_eq!(v1.parent, None);
    assert_eq!(v1.message, "Make a todo app");
    assert_eq!(v1.files, vec!["index.html", "src/App.tsx", "weird \"name\" x.txt"]);
    // Nothing changed: no commit.
    assert_eq!(repo.commit(&snapshot::take(&app).unwrap(), "again").unwrap(), None);

    write(&app.join("src/App.tsx"), "v2\n");
    std::fs::remove_file(app.join("index.html")).unwrap();
    write(&app.join("src/new.ts"), "export {}\n");
    let v2 = repo.commit(&snapshot::take(&app).unwrap(), "Edit").unwrap().unwrap();
    assert_eq!(v2.parent.as_deref(), Some(v1.sha.as_str()));
    assert_eq!(v2.files, vec!["index.html", "src/App.tsx", "src/new.ts"]);

    let list = repo.list().unwrap();
    assert_eq!(list.iter().map(|v| v.sha.as_str()).collect::<Vec<_>>(), [v2.sha.as_str(), v1.sha.as_str()]);
    assert_eq!(list[0].files, v2.files);
    assert_eq!(list[1].message, "Make a todo app");
    assert!(list[0].time > 0);

    let d = repo.diff(&v2.sha).unwrap();
    assert!(d.contains("-v1") && d.contains("+v2") && d.contains("deleted file mode"), "{d}");
    let old = repo.files_at(&v1.sha).unwrap();
    assert_eq!(old.entries["src/App.tsx"], Entry::File { data: b"v1\n".to_vec(), executable: false });
    assert_eq!(old.entries.len(), 3);
    assert!(repo.files_at("0000000").is_err());
    assert!(repo.diff("not-a-sha; rm -rf /").is_err());
    // Reopening finds the same history.
    assert_eq!(AppRepo::open(tmp.path(), "a-1").unwrap().head().unwrap(), Some(v2.sha));
}
