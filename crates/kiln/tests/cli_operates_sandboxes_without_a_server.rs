//! The operator CLI drives the local backend directly: template build,
//! doctor, sandbox create / ls / exec / kill, with exit codes that scripts can
//! rely on and clear errors for bad input.

mod server;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use server::prerequisites;

fn data_dir() -> PathBuf {
    static ENVD: OnceLock<PathBuf> = OnceLock::new();
    ENVD.get_or_init(server::envd_bin);
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-data")
}

fn kiln(data: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.args(args).env("KILN_DATA_DIR", data).env_remove("KILN_CONFIG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn sandbox_lifecycle_from_the_command_line() {
    if !prerequisites() {
        return;
    }
    let data = data_dir();
    let out = kiln(&data, &["template", "build"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("spec hash"));

    let out = kiln(&data, &["doctor"], &[]);
    assert_eq!(out.status.code(), Some(0), "doctor: {}", text(&out.stdout));
    let report = text(&out.stdout);
    for item in
        ["namespaces", "overlayfs", "memory limit", "pids limit", "cpu limit", "node", "chromium", "git", "template"]
    {
        assert!(report.lines().any(|l| l.starts_with("ok") && l.contains(item)), "{item} not ok in:\n{report}");
    }

    let out = kiln(&data, &["sandbox", "create"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_owned();
    assert_eq!(id.len(), 32, "{id}");

    let ls = text(&kiln(&data, &["sandbox", "ls"], &[]).stdout);
    assert!(ls.lines().any(|l| l.starts_with(&id) && l.contains("running")), "{ls}");

    let out = kiln(
        &data,
        &["sandbox", "exec", &id, "--env", "GREETING=hi", "--", "sh", "-c", "echo $GREETING; echo err >&2; exit 42"],
        &[],
    );
    assert_eq!(out.status.code(), Some(42));
    assert_eq!(text(&out.stdout), "hi\n");
    assert_eq!(text(&out.stderr), "err\n");

    let out = kiln(&data, &["sandbox", "exec", &id, "--timeout", "1", "--", "sleep", "30"], &[]);
    assert_eq!(out.status.code(), Some(137));
    assert!(text(&out.stderr).contains("timed out"));

    let out = kiln(&data, &["sandbox", "kill", &id], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ls = text(&kiln(&data, &["sandbox", "ls"], &[]).stdout);
    assert!(!ls.contains(&id));
    let out = kiln(&data, &["sandbox", "kill", &id], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no sandbox"), "{}", text(&out.stderr));
}

#[test]
fn bad_input_gets_a_clear_error_and_a_non_zero_exit() {
    if !prerequisites() {
        return;
    }
    let data = data_dir();
    let out = kiln(&data, &["sandbox", "exec", "../../etc", "--", "true"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("invalid sandbox id"));

    let out = kiln(&data, &["sandbox", "ls"], &[("KILN_SANDBOX_PIDS", "-3")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("KILN_SANDBOX_PIDS"), "{}", text(&out.stderr));

    // A data dir with no template: doctor says so, with the fix, and fails.
    let empty = tempfile::tempdir().unwrap();
    let out = kiln(empty.path(), &["doctor"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let report = text(&out.stdout);
    assert!(
        report.lines().any(|l| l.starts_with("FAIL") && l.contains("template") && l.contains("kiln template build")),
        "{report}"
    );
}
