//! Every Lua script of every pinned asynq version is in asynq-guard's
//! catalog. The script bodies are read from the asynq sources in the Go
//! module cache (downloaded from the Go module proxy if missing), hashed
//! as go-redis hashes them, and looked up; a new asynq release with a
//! changed script fails here instead of being refused in production.

use std::path::Path;
use std::process::Command;

use asynq_guard::asynq::catalog;

/// asynq versions whose scripts the catalog must hold.
const VERSIONS: &[&str] = &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"];

fn harness_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/harness"))
}

/// The directory of asynq `version` in the Go module cache.
fn asynq_source(version: &str) -> String {
    let out = Command::new("go")
        .args(["mod", "download", "-json"])
        .arg(format!("github.com/hibiken/asynq@{version}"))
        .current_dir(harness_dir())
        .output()
        .expect("run go mod download (is Go installed?)");
    assert!(
        out.status.success(),
        "go mod download asynq@{version}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("go mod JSON");
    info["Dir"].as_str().expect("module directory").to_string()
}

/// `(sha1, variable name, file)` of every script in asynq `version`.
fn scripts_of(version: &str) -> Vec<(String, String, String)> {
    let out = Command::new("go")
        .args(["run", "./cmd/scriptshas"])
        .arg(asynq_source(version))
        .current_dir(harness_dir())
        .output()
        .expect("run scriptshas");
    assert!(
        out.status.success(),
        "scriptshas for asynq {version}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let mut next = || parts.next().unwrap_or_default().to_string();
            (next(), next(), next())
        })
        .collect()
}

#[test]
fn every_script_of_every_pinned_asynq_version_is_catalogued() {
    let mut missing = Vec::new();
    for version in VERSIONS {
        let scripts = scripts_of(version);
        // asynq has defined between 40 and 60 scripts in every release;
        // far fewer means the scan missed them, not that they went away.
        assert!(
            scripts.len() >= 40,
            "only {} scripts in asynq {version}",
            scripts.len()
        );
        for (sha, name, file) in scripts {
            match catalog::by_sha(sha.as_bytes()) {
                Some(s) if s.versions.contains(version) => {}
                Some(s) => missing.push(format!(
                    "{version}: {name} ({file}) {sha} is catalogued as {} but not for {version}",
                    s.op
                )),
                None => missing.push(format!(
                    "{version}: {name} ({file}) {sha} is not catalogued"
                )),
            }
        }
    }
    assert!(
        missing.is_empty(),
        "catalog incomplete:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_catalogued_script_exists_in_a_pinned_version() {
    let mut seen = std::collections::HashSet::new();
    for version in VERSIONS {
        for (sha, _, _) in scripts_of(version) {
            seen.insert(sha);
        }
    }
    let stale: Vec<_> = catalog::SCRIPTS
        .iter()
        .filter(|s| !seen.contains(s.sha))
        .map(|s| format!("{} {}", s.sha, s.op))
        .collect();
    assert!(
        stale.is_empty(),
        "catalogued but in no pinned version:\n{}",
        stale.join("\n")
    );
}
