//! docs/quickstart.md, followed literally: its shell blocks run in order, in one bash
//! session, in a fresh folder outside the repository (a fresh data folder, a fresh config
//! folder), with this build's `sandserve` first on PATH; every command must succeed, and
//! each one's output is checked. The one change to the text: the doc's port 8080 becomes a
//! free one, so that the test does not collide with a server already on 8080.

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use sandserve_tests::doc_script::{commands, run, Ran};
use sandserve_tests::repo_root;
use sandserve_tests::server::sandserve_bin;
use std::time::Duration;

/// Text with all whitespace removed (pretty JSON compared as compact).
fn compact(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What each command (found by a part of its text) must print.
const EXPECT: &[(&str, &[&str])] = &[
    ("sandserve tenants create acme", &["created tenant acme"]),
    (
        "sandserve tokens create",
        &["for tenant acme (CAN_MANAGE)", "shown only once"],
    ),
    ("sandserve new hello", &["created hello"]),
    ("cargo test", &["test result: ok. 3 passed"]),
    (
        "\"params\": {\"scale\": 2}",
        &["\"predictions\":[[2.0,4.0,6.0]]"],
    ),
    (
        "\"datatype\": \"FP32\"",
        &["\"model_name\":\"hello\"", "\"data\":[1.0,2.0,3.0]"],
    ),
    (
        "sandserve deploy hello.tar.gz",
        &["creatingendpointhello", "READY", "hello:1=100%"],
    ),
    (
        "dataframe_split",
        &["\"predictions\":[[10.0,20.0,30.0]]", "servedbyhello-1"],
    ),
    (
        "sandserve endpoints list",
        &["hello", "READY", "hello:1=100%"],
    ),
    ("sandserve push hello.tar.gz", &["MODELVERSION", "hello2"]),
    ("sandserve endpoints update", &["hello:1=50%hello:2=50%"]),
    ("for i in", &["servedbyhello-1", "servedbyhello-2"]),
    ("sandserve models get hello", &["hello1", "hello2"]),
    ("--lang python", &["created hello-py"]),
    (
        "sandserve invoke hello-py.tar.gz",
        &["\"model_name\":\"hello-py\"", "\"data\":[2.0,4.0,6.0]"],
    ),
    (
        "sandserve deploy hello-py.tar.gz",
        &["READY", "hello-py:1=100%"],
    ),
    (
        "--endpoint hello-py",
        &["[2.0,4.0,6.0]", "servedbyhello-py-1"],
    ),
];

#[test]
fn the_quickstart_works_as_written() {
    let doc = std::fs::read_to_string(repo_root().join("docs/quickstart.md")).unwrap();
    let port = free_port();
    let doc = doc.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    let commands = commands(&doc);
    assert!(commands.len() >= 15, "{commands:?}");
    for (part, _) in EXPECT {
        assert!(
            commands.iter().any(|c| c.contains(part)),
            "docs/quickstart.md has no command with `{part}`"
        );
    }

    // Outside the repository, with nothing of a previous run.
    let home = tempfile::Builder::new()
        .prefix("sandserve-quickstart-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    assert!(!home.path().starts_with(repo_root()));
    let bin_dir = sandserve_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // What cargo sets for this test process is not the user's (a nested cargo would read
    // it); nor are client settings this shell may have.
    let remove: Vec<String> = std::env::vars()
        .map(|(name, _)| name)
        .filter(|name| {
            (name.starts_with("CARGO_") && name != "CARGO_HOME" && name != "CARGO_TARGET_DIR")
                || name == "OUT_DIR"
                || (name.starts_with("SANDSERVE_") && name != "SANDSERVE_COMPONENTIZE_PY")
        })
        .collect();
    // The project's builds go to a folder of this target (kept between runs, so a rerun
    // compiles only what changed), unless the caller chose one.
    let project_target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| {
        bin_dir
            .parent()
            .unwrap()
            .join("quickstart-projects")
            .display()
            .to_string()
    });
    let env = [
        ("PATH", path),
        ("CARGO_TARGET_DIR", project_target),
        (
            "XDG_CONFIG_HOME",
            home.path().join("config").display().to_string(),
        ),
    ];
    let ran = run(
        &commands,
        home.path(),
        &env,
        &remove,
        Duration::from_secs(900),
    );
    let transcript = |ran: &[Ran]| {
        ran.iter()
            .map(|r| format!("$ {}\n{}[status {:?}]\n", r.command, r.output, r.status))
            .collect::<String>()
    };
    assert_eq!(
        ran.len(),
        commands.len(),
        "not every command ran:\n{}",
        transcript(&ran)
    );
    for r in &ran {
        assert_eq!(r.status, Some(0), "failed:\n{}", transcript(&ran));
    }
    for (part, wanted) in EXPECT {
        let r = ran.iter().find(|r| r.command.contains(part)).unwrap();
        let out = compact(&r.output);
        for want in *wanted {
            assert!(
                out.contains(&compact(want)),
                "`{}` printed no `{want}`:\n{}",
                r.command,
                r.output
            );
        }
    }
    // The login was saved for this user only.
    let config = home.path().join("config/sandserve/config.toml");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&config).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let saved = std::fs::read_to_string(&config).unwrap();
    assert!(
        saved.contains(&format!("url = \"http://127.0.0.1:{port}\"")),
        "{saved}"
    );
    assert!(
        !saved.contains("quickstart-admin-token"),
        "the tenant token replaced the admin's"
    );
}
