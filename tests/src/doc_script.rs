//! Running a doc's shell blocks as a user would: every ```` ```sh ```` block of a Markdown
//! file, command by command, in one bash session (so `cd`, `export` and `&` jobs carry
//! over), in a given folder, each command's output and exit status captured apart.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One command of the doc and what it did.
#[derive(Debug)]
pub struct Ran {
    /// The command, as written in the doc.
    pub command: String,
    /// Its standard output and error, interleaved.
    pub output: String,
    /// Its exit status (`None`: the session ended before it finished).
    pub status: Option<i32>,
}

/// The commands of every ```` ```sh ```` block of `markdown`, in order (comment lines
/// left out; a line ending in `\` continues on the next).
pub fn commands(markdown: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in markdown.lines() {
        let trimmed = line.trim();
        if !in_block {
            in_block = trimmed == "```sh";
            continue;
        }
        if trimmed == "```" {
            in_block = false;
            continue;
        }
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(line);
        commands.push(std::mem::take(&mut pending));
    }
    commands
}

const MARK: &str = "@@doc-script@@";

/// Runs `commands` in one `bash` in `dir` with `env` set (and `remove` unset), in a process
/// group of its own that is killed afterwards (a server the doc starts with `&` goes too).
pub fn run(
    commands: &[String],
    dir: &Path,
    env: &[(&str, String)],
    remove: &[String],
    limit: Duration,
) -> Vec<Ran> {
    let mut script = String::new();
    for (i, command) in commands.iter().enumerate() {
        script.push_str(&format!(
            "echo '{MARK} start {i}'\n{command}\necho \"{MARK} end {i} $?\"\n"
        ));
    }
    let log = dir.join(".doc-script.log");
    let mut bash = Command::new("bash");
    bash.arg("-c")
        .arg(format!("exec > '{}' 2>&1\n{script}", log.display()))
        .current_dir(dir)
        .stdin(Stdio::null())
        .process_group(0);
    for name in remove {
        bash.env_remove(name);
    }
    for (name, value) in env {
        bash.env(name, value);
    }
    let mut child = bash.spawn().expect("bash runs");
    let started = Instant::now();
    while child.try_wait().expect("waiting for bash").is_none() && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(200));
    }
    // The whole group: bash if it is still running, and anything the doc left behind.
    kill_group(child.id());
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    split(commands, &text)
}

fn kill_group(pgid: u32) {
    // `kill -- -PGID` signals the whole process group.
    let _ = Command::new("kill")
        .args(["-TERM", "--", &format!("-{pgid}")])
        .status();
}

fn split(commands: &[String], text: &str) -> Vec<Ran> {
    let mut ran: Vec<Ran> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(MARK) {
            let words: Vec<&str> = rest.split_whitespace().collect();
            match words.as_slice() {
                ["start", i] => {
                    let i: usize = i.parse().unwrap_or(usize::MAX);
                    ran.push(Ran {
                        command: commands.get(i).cloned().unwrap_or_default(),
                        output: String::new(),
                        status: None,
                    });
                }
                ["end", _, status] => {
                    if let Some(last) = ran.last_mut() {
                        last.status = status.parse().ok();
                    }
                }
                _ => {}
            }
        } else if let Some(last) = ran.last_mut() {
            last.output.push_str(line);
            last.output.push('\n');
        }
    }
    ran
}
