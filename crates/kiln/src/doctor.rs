//! `kiln doctor`: one line per prerequisite, the fix for each failure, and a
//! non-zero exit when the main job cannot run.

use kiln_sandbox::prereq::{self, Status};

pub fn run(json: bool) -> anyhow::Result<u8> {
    let cfg = crate::cli::config()?;
    let checks =
        prereq::run_all(&prereq::Inputs { data_dir: &cfg.data_dir, envd_bin: cfg.envd_bin(), uid: cfg.sandbox.uid });
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    if json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for c in &checks {
            let mark = match c.status {
                Status::Ok => "ok  ",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            if c.fix.is_empty() {
                println!("{mark} {:<14} {}", c.name, c.detail);
            } else {
                println!("{mark} {:<14} {} — fix: {}", c.name, c.detail, c.fix);
            }
        }
        println!(
            "{}",
            if failed { "kiln cannot run until the FAIL items are fixed." } else { "All required checks pass." }
        );
    }
    Ok(u8::from(failed))
}
