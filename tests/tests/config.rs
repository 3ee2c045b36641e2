//! The server's settings end to end, against the real binary: `sandserve serve --help`
//! documents every flag and environment variable the docs name, and a setting given in the
//! config file, its environment variable and its flag is layered file < environment < flag;
//! an unknown key in the file stops the server before it listens.

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use sandserve_tests::repo_root;
use sandserve_tests::server::{reason, sandserve_bin, TestServer};
use std::collections::BTreeSet;
use std::process::Command;

/// Flags the docs name that belong to other commands and tools.
const NOT_SERVE: &[&str] = &[
    "--path",
    "--self-signed",
    "--host",
    "--cert",
    "--key",
    "--output",
    "--input",
    "--release",
    "--target",
    "--workspace",
    "--locked",
    "--check",
    "--bench",
    "--no-run",
    "--help",
    "--data-binary",
    "--cacert",
    "--call-graph",
    "--features",
    "--model",
    "--signature",
    "--name",
    "--lang",
    "--test",
];

/// Environment variables the docs name that are not `serve` flags.
const NOT_FLAGS: &[&str] = &[
    "SANDSERVE_ADMIN_TOKEN",
    "SANDSERVE_LOG",
    "SANDSERVE_OPENVINO_LIB",
    "SANDSERVE_BIN",
    "SANDSERVE_COMPONENTIZE_PY",
    // The test harness: the log level of the servers the end-to-end tests start.
    "SANDSERVE_TEST_LOG",
];

/// Variables of the benchmarks (`SANDSERVE_BENCH_*`), not of the server.
const BENCH_VARIABLES: &str = "SANDSERVE_BENCH_";

/// Variables of the client commands (docs/cli.md), not of the server: `login --help`
/// documents them.
const CLIENT_VARIABLES: [&str; 4] = [
    "SANDSERVE_URL",
    "SANDSERVE_TOKEN",
    "SANDSERVE_CACERT",
    "SANDSERVE_CLI_CONFIG",
];

/// The other commands whose flags the docs name (their `--help` must list them).
const OTHER_COMMANDS: [&[&str]; 12] = [
    &["new"],
    &["build"],
    &["invoke"],
    &["login"],
    &["push"],
    &["deploy"],
    &["endpoints", "create"],
    &["endpoints", "update"],
    &["tokens", "create"],
    &["tokens", "list"],
    &["cert"],
    &["completions"],
];

fn help_of(command: &[&str]) -> String {
    let out = Command::new(sandserve_bin())
        .args(command)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "sandserve {command:?} --help");
    String::from_utf8(out.stdout).unwrap()
}

/// Whether `flag` is an option line of `help`.
fn lists(help: &str, flag: &str) -> bool {
    help.lines().any(|line| {
        line.trim_start()
            .split([' ', '<', ','])
            .any(|word| word == flag)
            && line.trim_start().starts_with('-')
    })
}

/// Every `--flag` and `SANDSERVE_*` word in README.md and docs/*.md.
fn documented() -> (BTreeSet<String>, BTreeSet<String>) {
    let mut files = vec![repo_root().join("README.md")];
    for entry in std::fs::read_dir(repo_root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let (mut flags, mut vars) = (BTreeSet::new(), BTreeSet::new());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let words = text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        for word in words {
            let flag = word
                .strip_prefix("--")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_lowercase()));
            if flag && !NOT_SERVE.contains(&word) {
                flags.insert(word.to_string());
            }
            if word.starts_with("SANDSERVE_")
                && word.len() > 10
                && !NOT_FLAGS.contains(&word)
                && !word.starts_with(BENCH_VARIABLES)
                && !CLIENT_VARIABLES.contains(&word)
            {
                vars.insert(word.to_string());
            }
        }
    }
    (flags, vars)
}

#[test]
fn help_documents_every_documented_flag_variable_and_key() {
    let out = Command::new(sandserve_bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let (flags, vars) = documented();
    assert!(flags.len() >= 15, "the docs name the settings: {flags:?}");
    let others: Vec<String> = OTHER_COMMANDS.iter().map(|c| help_of(c)).collect();
    for flag in &flags {
        let serve_flag = lists(&help, flag);
        if !serve_flag && others.iter().any(|h| lists(h, flag)) {
            continue; // a flag of another sandserve command
        }
        let listed = help
            .lines()
            .any(|line| line.trim_start().split([' ', '<']).next() == Some(flag.as_str()));
        assert!(listed, "--help lacks {flag}");
        let key = flag.trim_start_matches("--").replace('-', "_");
        let var = format!("SANDSERVE_{}", key.to_uppercase());
        assert!(
            help.contains(&format!("[env: {var}=")),
            "--help lacks {var}"
        );
        if key != "config" {
            assert!(
                help.contains(&format!(" {key},")) || help.contains(&format!(" {key})")),
                "--config's help lacks the key {key}"
            );
        }
    }
    for var in &vars {
        assert!(
            help.contains(&format!("[env: {var}=")),
            "--help lacks {var}"
        );
    }
    assert!(help.contains("SANDSERVE_ADMIN_TOKEN"), "{help}");
    let login = help_of(&["login"]);
    for var in CLIENT_VARIABLES {
        assert!(login.contains(var), "`sandserve login --help` lacks {var}");
    }
}

/// Uploads 2 MiB that are no package: 413 when the upload limit is 1 MiB, else 400.
fn upload_two_mib(server: &TestServer) -> u16 {
    let token = server.admin().tenant_with_token("acme", "CAN_MANAGE");
    let (status, body) = server.client(&token).upload("junk", &vec![b'x'; 2 << 20]);
    match status {
        413 => assert_eq!(body["error_code"], "PAYLOAD_TOO_LARGE", "{body}"),
        400 => assert_eq!(reason(&body), "not_an_archive", "{body}"),
        _ => panic!("{status} {body}"),
    }
    status
}

#[test]
fn the_file_is_under_the_environment_which_is_under_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sandserve.toml");
    let config = file.to_str().unwrap();
    let start = |n: &str, extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["--config", config];
        args.extend_from_slice(extra);
        TestServer::start_with_env(&dir.path().join(n), &args, env)
    };

    std::fs::write(&file, "max_upload_mib = 1\n").unwrap();
    assert_eq!(
        upload_two_mib(&start("a", &[], &[])),
        413,
        "the file's limit"
    );
    let server = start("b", &[], &[("SANDSERVE_MAX_UPLOAD_MIB", "4")]);
    assert_eq!(
        upload_two_mib(&server),
        400,
        "the environment over the file"
    );
    let server = start(
        "c",
        &["--max-upload-mib", "1"],
        &[("SANDSERVE_MAX_UPLOAD_MIB", "4")],
    );
    assert_eq!(
        upload_two_mib(&server),
        413,
        "the flag over the environment"
    );

    // The admin token from the file, when the environment gives none.
    std::fs::write(
        &file,
        "admin_token = \"file-admin-token-0123456789\"\nmax_upload_mib = 4\n",
    )
    .unwrap();
    let server = start("d", &[], &[("SANDSERVE_ADMIN_TOKEN", "")]);
    let (status, body) = server
        .client("file-admin-token-0123456789")
        .get("/api/2.0/tenants");
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.admin().get("/api/2.0/tenants").0, 401);
}

#[test]
fn an_unknown_key_or_a_bad_value_stops_the_server_before_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sandserve.toml");
    for (text, expected) in [
        ("lisen = \"127.0.0.1:0\"\n", "unknown field `lisen`"),
        ("config = \"other.toml\"\n", "unknown field `config`"),
        (
            "max_connections = 0\n",
            "max_connections: must be between 1",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let out = Command::new(sandserve_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&file)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("SANDSERVE_ADMIN_TOKEN", "test-admin-token-0123456789")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}: {stderr}");
        assert!(stderr.contains(expected), "{text}: {stderr}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("listening on"),
            "{text}"
        );
    }
}
