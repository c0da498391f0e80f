//! The agent's own tools, and the workspace they act on.
//!
//! File tools go through ACP `fs/*` when the client offers them (in a Kiln
//! sandbox: envd, which confines them to `/app` and reports each write to
//! the chat stream) and `run` through ACP `terminal/*`. Listing and
//! searching have no ACP method; they read the workspace directly (the
//! agent runs next to it), skipping dependencies and build output.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::model::ToolSpec;

/// Longest output of `run` given back to the model (the end is kept).
pub const MAX_RUN_OUTPUT: usize = 32 * 1024;
/// Most entries `list_files` returns, and matches `search` returns.
pub const MAX_LIST: usize = 500;
pub const MAX_MATCHES: usize = 200;
/// Default and longest `run` timeout.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);
pub const MAX_RUN_TIMEOUT: Duration = Duration::from_secs(600);
const SKIP: &[&str] = &["node_modules", ".git", "dist", ".vite"];

/// Where tools act.
#[async_trait]
pub trait Workspace: Send + Sync {
    /// The workspace root (`/app` in a Kiln sandbox).
    fn root(&self) -> &Path;
    async fn read(&self, path: &Path) -> Result<String, String>;
    async fn write(&self, path: &Path, content: &str) -> Result<(), String>;
    /// Runs a shell command; returns its output and exit code.
    async fn run(&self, command: &str, timeout: Duration) -> Result<(String, Option<i32>), String>;
}

pub fn specs() -> Vec<ToolSpec> {
    let t = |name: &str, description: &str, schema: Value| ToolSpec {
        name: name.into(),
        description: description.into(),
        input_schema: schema,
    };
    let path = json!({"type": "string", "description": "Path relative to the app root, e.g. src/App.tsx"});
    vec![
        t(
            "read_file",
            "Read a text file of the app.",
            json!({"type": "object", "properties": {"path": path}, "required": ["path"]}),
        ),
        t(
            "write_file",
            "Create or overwrite a file with the given content. Prefer edit_file for changes to an existing file.",
            json!({"type": "object", "properties": {"path": path, "content": {"type": "string"}}, "required": ["path", "content"]}),
        ),
        t(
            "edit_file",
            "Replace one exact occurrence of old_string with new_string in a file. old_string must appear exactly once: include enough surrounding lines to make it unique.",
            json!({"type": "object", "properties": {"path": path, "old_string": {"type": "string"}, "new_string": {"type": "string"}}, "required": ["path", "old_string", "new_string"]}),
        ),
        t(
            "list_files",
            "List the app's files (recursively; node_modules, .git and dist are left out).",
            json!({"type": "object", "properties": {"path": {"type": "string", "description": "Directory relative to the app root; default the root"}}}),
        ),
        t(
            "search",
            "Search the app's files for a literal text; returns path:line: text for each match.",
            json!({"type": "object", "properties": {"pattern": {"type": "string"}, "path": {"type": "string"}}, "required": ["pattern"]}),
        ),
        t(
            "run",
            "Run a shell command in the app directory (no network; do not start the dev server, it is already running).",
            json!({"type": "object", "properties": {"command": {"type": "string"}, "timeout_ms": {"type": "integer"}}, "required": ["command"]}),
        ),
    ]
}

pub fn is_builtin(name: &str) -> bool {
    matches!(name, "read_file" | "write_file" | "edit_file" | "list_files" | "search" | "run")
}

/// ACP tool kind and a short title for a call.
pub fn describe(name: &str, input: &Value) -> (&'static str, String) {
    let s = |k: &str| input.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    match name {
        "read_file" => ("read", format!("Read {}", s("path"))),
        "write_file" => ("edit", format!("Write {}", s("path"))),
        "edit_file" => ("edit", format!("Edit {}", s("path"))),
        "list_files" => ("search", "List files".to_owned()),
        "search" => ("search", format!("Search for {:?}", s("pattern"))),
        "run" => ("execute", format!("Run `{}`", s("command"))),
        n if n.starts_with("browser_") => ("fetch", format!("Browser: {}", &n["browser_".len()..].replace('_', " "))),
        n => ("other", n.replace('_', " ")),
    }
}

/// A path inside the workspace (no absolute paths outside it, no `..`).
pub fn resolve(root: &Path, raw: &str) -> Result<PathBuf, String> {
    let p = Path::new(raw.trim());
    let rel = match p.strip_prefix(root) {
        Ok(r) => r.to_owned(),
        Err(_) if p.is_absolute() => return Err(format!("{raw} is outside the app ({})", root.display())),
        Err(_) => p.to_owned(),
    };
    if rel.components().any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir)) {
        return Err(format!("{raw}: use a path inside the app, without .."));
    }
    Ok(root.join(rel))
}

fn arg<'a>(input: &'a Value, k: &str) -> Result<&'a str, String> {
    input.get(k).and_then(Value::as_str).ok_or_else(|| format!("missing string argument `{k}`"))
}

/// Runs a built-in tool; `Err` is reported to the model as a failed call.
pub async fn run_builtin(ws: &dyn Workspace, name: &str, input: &Value) -> Result<String, String> {
    let root = ws.root().to_owned();
    match name {
        "read_file" => ws.read(&resolve(&root, arg(input, "path")?)?).await,
        "write_file" => {
            let (p, content) = (arg(input, "path")?, arg(input, "content")?);
            ws.write(&resolve(&root, p)?, content).await?;
            Ok(format!("wrote {p} ({} bytes)", content.len()))
        }
        "edit_file" => {
            let (p, old, new) = (arg(input, "path")?, arg(input, "old_string")?, arg(input, "new_string")?);
            if old.is_empty() {
                return Err("old_string is empty; use write_file to create a file".into());
            }
            let path = resolve(&root, p)?;
            let text = ws.read(&path).await?;
            match text.matches(old).count() {
                0 => Err(format!("old_string was not found in {p}; read the file and copy the text exactly")),
                1 => {
                    ws.write(&path, &text.replacen(old, new, 1)).await?;
                    Ok(format!("edited {p}"))
                }
                n => {
                    Err(format!("old_string appears {n} times in {p}; include more surrounding lines so it is unique"))
                }
            }
        }
        "list_files" => {
            let dir = resolve(&root, input.get("path").and_then(Value::as_str).unwrap_or(""))?;
            let root2 = root.clone();
            tokio::task::spawn_blocking(move || list(&root2, &dir)).await.map_err(|e| e.to_string())?
        }
        "search" => {
            let pattern = arg(input, "pattern")?.to_owned();
            if pattern.is_empty() {
                return Err("pattern is empty".into());
            }
            let dir = resolve(&root, input.get("path").and_then(Value::as_str).unwrap_or(""))?;
            let root2 = root.clone();
            tokio::task::spawn_blocking(move || search(&root2, &dir, &pattern)).await.map_err(|e| e.to_string())?
        }
        "run" => {
            let cmd = arg(input, "command")?;
            let timeout = input
                .get("timeout_ms")
                .and_then(Value::as_u64)
                .map_or(RUN_TIMEOUT, Duration::from_millis)
                .min(MAX_RUN_TIMEOUT);
            let (out, code) = ws.run(cmd, timeout).await?;
            let out = keep_end(&out, MAX_RUN_OUTPUT);
            Ok(match code {
                Some(c) => format!("{out}\n[exit code {c}]"),
                None => format!("{out}\n[killed: timed out after {} s]", timeout.as_secs()),
            })
        }
        other => Err(format!("no tool named {other}")),
    }
}

/// The end of `s`, at most `max` bytes, on a character boundary.
pub fn keep_end(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut cut = s.len() - max;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    format!("[… {cut} bytes cut …]{}", &s[cut..])
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if out.len() >= MAX_LIST * 20 {
            return;
        }
        let name = e.file_name();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            if !SKIP.contains(&name.to_string_lossy().as_ref()) {
                walk(&e.path(), out);
            }
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}

fn list(root: &Path, dir: &Path) -> Result<String, String> {
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let mut files = Vec::new();
    walk(dir, &mut files);
    let total = files.len();
    let mut out: Vec<String> =
        files.iter().take(MAX_LIST).map(|p| p.strip_prefix(root).unwrap_or(p).display().to_string()).collect();
    if total > MAX_LIST {
        out.push(format!("[… {} more files]", total - MAX_LIST));
    }
    Ok(out.join("\n"))
}

fn search(root: &Path, dir: &Path, pattern: &str) -> Result<String, String> {
    let mut files = Vec::new();
    walk(dir, &mut files);
    let mut out = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else { continue };
        for (i, line) in text.lines().enumerate() {
            if line.contains(pattern) {
                let shown: String = line.trim().chars().take(200).collect();
                out.push(format!("{}:{}: {shown}", f.strip_prefix(root).unwrap_or(&f).display(), i + 1));
                if out.len() >= MAX_MATCHES {
                    out.push(format!("[stopped at {MAX_MATCHES} matches]"));
                    return Ok(out.join("\n"));
                }
            }
        }
    }
    Ok(if out.is_empty() { format!("no matches for {pattern:?}") } else { out.join("\n") })
}

/// A workspace on the local file system (tests, and ACP clients without
/// `fs` or `terminal` capabilities).
#[derive(Debug, Clone)]
pub struct LocalWorkspace {
    pub root: PathBuf,
}

#[async_trait]
impl Workspace for LocalWorkspace {
    fn root(&self) -> &Path {
        &self.root
    }
    async fn read(&self, path: &Path) -> Result<String, String> {
        tokio::fs::read_to_string(path).await.map_err(|e| format!("cannot read {}: {e}", path.display()))
    }
    async fn write(&self, path: &Path, content: &str) -> Result<(), String> {
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(|e| e.to_string())?;
        }
        tokio::fs::write(path, content).await.map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
    async fn run(&self, command: &str, timeout: Duration) -> Result<(String, Option<i32>), String> {
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c").arg(command).current_dir(&self.root).kill_on_drop(true);
        match tokio::time::timeout(timeout, cmd.output()).await {
            Ok(Ok(o)) => {
                let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
                s.push_str(&String::from_utf8_lossy(&o.stderr));
                Ok((s, o.status.code()))
            }
            Ok(Err(e)) => Err(format!("cannot run: {e}")),
            Err(_) => Ok((String::new(), None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn edit_file_needs_exactly_one_match() {
        let dir = std::env::temp_dir().join(format!("kiln-tools-{}", std::process::id()));
        let ws = LocalWorkspace { root: dir.clone() };
        run_builtin(&ws, "write_file", &json!({"path": "src/a.ts", "content": "x = 1\ny = 1\n"})).await.unwrap();
        let e =
            run_builtin(&ws, "edit_file", &json!({"path": "src/a.ts", "old_string": "= 1", "new_string": "= 2"})).await;
        assert!(e.unwrap_err().contains("appears 2 times"));
        let e = run_builtin(&ws, "edit_file", &json!({"path": "src/a.ts", "old_string": "z", "new_string": "w"})).await;
        assert!(e.unwrap_err().contains("not found"));
        run_builtin(&ws, "edit_file", &json!({"path": "src/a.ts", "old_string": "y = 1", "new_string": "y = 2"}))
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("src/a.ts")).unwrap(), "x = 1\ny = 2\n");
        let found = run_builtin(&ws, "search", &json!({"pattern": "y = 2"})).await.unwrap();
        assert_eq!(found, "src/a.ts:2: y = 2");
        std::fs::create_dir_all(dir.join("node_modules/x")).unwrap();
        std::fs::write(dir.join("node_modules/x/i.js"), "y = 2").unwrap();
        assert_eq!(run_builtin(&ws, "list_files", &json!({})).await.unwrap(), "src/a.ts");
        assert!(run_builtin(&ws, "read_file", &json!({"path": "../etc/passwd"})).await.unwrap_err().contains(".."));
        assert!(run_builtin(&ws, "read_file", &json!({"path": "/etc/passwd"})).await.unwrap_err().contains("outside"));
        let out = run_builtin(&ws, "run", &json!({"command": "echo hi; exit 4"})).await.unwrap();
        assert_eq!(out, "hi\n\n[exit code 4]");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kinds_and_titles() {
        assert_eq!(describe("run", &json!({"command": "ls"})), ("execute", "Run `ls`".to_owned()));
        assert_eq!(describe("browser_navigate", &json!({})).0, "fetch");
        assert_eq!(keep_end("abcdef", 3), "[… 3 bytes cut …]def");
    }
}
