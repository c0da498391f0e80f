//! Prompt → version in a real sandbox: a turn that writes files ends in one
//! commit and a `version` event (none when nothing changed); a version is
//! restored into the running sandbox and the dev server serves it; after the
//! sandbox is killed, a brand-new sandbox gets the newest version back.

mod common;
#[path = "../../kiln-sandbox/tests/support/mod.rs"]
mod support;

use kiln_bridge::{AcpWarmUp, AgentSession, AgentSetup, restore_latest, restore_version};
use kiln_pool::{WarmCtx, WarmUp};
use kiln_sandbox::SandboxProvider;
use kiln_types::chat::{EventBody, FileOp, StopReason};

fn app_tsx(heading: &str) -> String {
    format!("export default function App() {{\\n  return <h1 className='text-3xl'>{heading}</h1>\\n}}\\n")
}

async fn served(g: &support::Guard, needle: &str) -> bool {
    let mut last = String::new();
    for i in 0..100 {
        let (status, body) = kiln_sandbox::graph::proxy_get(&g.client(), 5173, "/src/App.tsx").await.unwrap();
        last = format!("{status} {}", String::from_utf8_lossy(&body));
        if status == 200 && last.contains(needle) {
            eprintln!("served {needle:?} after {i} polls");
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    eprintln!("last answer for /src/App.tsx: {last}");
    if let Ok(st) = g.client().dev_server().await {
        eprintln!("dev server log:\n{}", st.log_tail.join("\n"));
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_commits_a_version_which_restores_here_and_into_a_new_sandbox() {
    let env = require_env!();
    let g = common::sandbox(env).await;
    let warm = AcpWarmUp::new(
        AgentSetup {
            system_prompt: Some("You build apps.".into()),
            model: Some("testy-large".into()),
            ..Default::default()
        },
        None,
    );
    let ctx = WarmCtx { sandbox_id: g.id(), host_socket: None, session_key: None };
    let meta = warm.prewarm(&g.client(), &ctx).await.unwrap();
    let session = AgentSession::parse(meta.as_deref()).unwrap();
    assert_eq!(session.config_options[0]["currentValue"], "testy-large");
    let sid = session.session_id;

    let repo_dir = tempfile::tempdir().unwrap();
    let v = common::versions(env, &g, repo_dir.path(), "app-1");
    let events =
        common::turn(&g, &sid, &format!("write src/App.tsx {}\nsay Built it.", app_tsx("First heading")), Some(&v))
            .await;
    assert!(events.contains(&EventBody::File { path: "src/App.tsx".into(), op: FileOp::Write }));
    let versions: Vec<_> =
        events.iter().filter_map(|e| if let EventBody::Version(v) = e { Some(v.clone()) } else { None }).collect();
    assert_eq!(versions.len(), 1, "{events:?}");
    let v1 = &versions[0];
    assert_eq!(v1.files, vec!["src/App.tsx"]);
    assert!(v1.message.starts_with("write src/App.tsx"));
    assert!(matches!(events.last(), Some(EventBody::Done { stop_reason: StopReason::EndTurn })));
    // The version event comes right before done.
    assert!(matches!(events[events.len() - 2], EventBody::Version(_)));
    assert!(served(&g, "First heading").await, "the dev server serves the new file");
    let list = v.repo.list().unwrap();
    assert_eq!(list.len(), 2, "the template and the turn");
    assert_eq!(list[1].message, "Start from the template");
    assert_eq!(v1.parent.as_deref(), Some(list[1].sha.as_str()));

    // No change, no commit.
    let events = common::turn(&g, &sid, "say Nothing to change.", Some(&v)).await;
    assert!(!events.iter().any(|e| matches!(e, EventBody::Version(_))));
    assert_eq!(v.repo.list().unwrap().len(), 2);

    // A change made by a command (not an fs call) is versioned too.
    let events = common::turn(
        &g,
        &sid,
        &format!("write src/App.tsx {}\nrun echo 'body {{ margin: 0 }}' > src/extra.css", app_tsx("Second heading")),
        Some(&v),
    )
    .await;
    let v2 = events.iter().find_map(|e| if let EventBody::Version(v) = e { Some(v.clone()) } else { None }).unwrap();
    assert_eq!(v2.files, vec!["src/App.tsx", "src/extra.css"]);
    assert!(served(&g, "Second heading").await);
    assert!(v.repo.diff(&v2.sha).unwrap().contains("+  return <h1 className='text-3xl'>Second heading</h1>"));

    // Restore the first version into the running sandbox.
    let r = restore_version(&g.client(), &v, &v1.sha).await.unwrap().expect("the restore is a version");
    assert_eq!(r.files, vec!["src/App.tsx", "src/extra.css"]);
    assert!(r.message.starts_with("Restore version"));
    assert!(served(&g, "First heading").await, "the restored file is served");
    assert!(g.client().read_file("src/extra.css").await.is_err(), "files the version lacks are deleted");

    // The sandbox goes away; a brand-new one gets the newest version back.
    let provider = common::provider(env);
    let old = g.id().clone();
    drop(g);
    assert!(provider.connect(&old).await.is_err() || support::leftovers(env, &old).is_empty());
    let g2 = common::sandbox(env).await;
    let v_new = common::versions(env, &g2, repo_dir.path(), "app-1");
    let written = restore_latest(&g2.client(), &v_new).await.unwrap();
    assert_eq!(written, vec!["src/App.tsx"]);
    assert!(served(&g2, "First heading").await);
    // The new sandbox now equals the newest version: nothing to commit.
    assert_eq!(v_new.commit("no-op").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_files_written_by_the_agent_never_run_or_leak_on_the_host() {
    let env = require_env!();
    let g = common::sandbox(env).await;
    let warm = AcpWarmUp::new(AgentSetup::default(), None);
    let ctx = WarmCtx { sandbox_id: g.id(), host_socket: None, session_key: None };
    let sid = AgentSession::parse(warm.prewarm(&g.client(), &ctx).await.unwrap().as_deref()).unwrap().session_id;
    let marker = format!("/tmp/kiln-pwned-{}", g.id());
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "HOST-SECRET-DO-NOT-COPY").unwrap();
    let cmd = format!("touch {marker}");
    let script = [
        format!("write .git/config [core]\\n\\tfsmonitor = {cmd}\\n\\thooksPath = .git/hooks\\n[filter \\\"x\\\"]\\n\\tclean = {cmd}\\n"),
        "write .git/HEAD ref: refs/heads/main\\n".into(),
        format!("write .git/hooks/post-commit #!/bin/sh\\n{cmd}\\n"),
        "write .gitattributes * filter=x diff=x\\n".into(),
        format!("write nested/.git gitdir: {}\\n", secret.path().parent().unwrap().display()),
        format!("run chmod +x .git/hooks/post-commit && ln -s {} leak && ln -s / root && mkfifo pipe", secret.path().display()),
    ]
    .join("\n");
    let repo_dir = tempfile::tempdir().unwrap();
    let v = common::versions(env, &g, repo_dir.path(), "hostile");
    let events = common::turn(&g, &sid, &script, Some(&v)).await;
    let ver = events.iter().find_map(|e| if let EventBody::Version(v) = e { Some(v.clone()) } else { None }).unwrap();
    // Restore and list: more git commands over the same history.
    restore_version(&g.client(), &v, &ver.sha).await.unwrap();
    v.repo.list().unwrap();
    v.repo.diff(&ver.sha).unwrap();

    assert!(!std::path::Path::new(&marker).exists(), "the host ran a command the agent planted");
    let files = v.repo.files_at(&ver.sha).unwrap();
    assert!(files.entries.keys().all(|p| !p.split('/').any(|c| c == ".git")), "{:?}", files.entries.keys());
    assert!(files.entries.contains_key(".gitattributes"));
    assert_eq!(
        files.entries["leak"],
        kiln_versions::Entry::Symlink { target: secret.path().to_string_lossy().as_bytes().to_vec() }
    );
    assert!(!files.entries.keys().any(|p| p.starts_with("root/")), "a link to / was not walked");
    assert!(!files.entries.contains_key("pipe"));
    for (p, e) in &files.entries {
        assert!(!String::from_utf8_lossy(e.bytes()).contains("HOST-SECRET"), "{p} holds the host's secret");
    }
}
