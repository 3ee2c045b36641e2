//! A real PostgreSQL server for the cluster-mode tests: `initdb` into a temporary folder,
//! `pg_ctl start` on a free loopback port, stopped (immediately) when dropped. The server
//! binaries come from Debian's `postgresql` package (`/usr/lib/postgresql/<major>/bin`, or
//! `SANDSERVE_TEST_PG_BIN`). PostgreSQL refuses to run as root, so under root every server
//! command runs as the `postgres` user the Debian package creates, on a folder it owns.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The database role every test connects as (a superuser, trust authentication on loopback).
pub const ROLE: &str = "sandserve";

/// A running PostgreSQL server of the test's own.
pub struct Postgres {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    run_as: Option<String>,
}

impl Postgres {
    /// Creates a cluster and starts it; panics with the server's output when it cannot.
    pub fn start() -> Postgres {
        let bin = server_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("sandserve-pg-")
            .tempdir()
            .expect("temporary folder for PostgreSQL");
        let data = dir.path().join("data");
        let run_as = running_as_root().then(|| "postgres".to_string());
        if let Some(user) = &run_as {
            // The server user must own its folder and be able to reach it.
            set_mode(dir.path(), 0o755);
            chown(dir.path(), user);
        }
        let pg = Postgres {
            _dir: dir,
            data,
            bin,
            port: free_port(),
            run_as,
        };
        pg.server_command(
            "initdb",
            &[
                "-D",
                path_str(&pg.data),
                "-U",
                ROLE,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
        );
        pg.start_server();
        pg.wait_ready();
        pg
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `database` (`postgres` always exists).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a database and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.server_command(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                ROLE,
                name,
            ],
        );
        self.url(name)
    }

    /// Runs `sql` in `database` with `psql`; its output, trimmed.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = std::process::Command::new(server_bin_dir().join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port().to_string(),
                "-U",
                ROLE,
            ])
            .args(["-d", database, "-tAc", sql])
            .output()
            .expect("psql runs");
        assert!(out.status.success(), "psql: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Stops the server (fast shutdown: connections are closed, nothing is lost).
    pub fn stop(&self) {
        self.server_command(
            "pg_ctl",
            &["-D", path_str(&self.data), "-m", "fast", "-w", "stop"],
        );
    }

    /// Starts the server again after [`Postgres::stop`], on the same port and data.
    pub fn restart(&self) {
        self.start_server();
        self.wait_ready();
    }

    fn start_server(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            self.port,
            path_str(&self.data)
        );
        let log = self.data.join("server.log");
        self.server_command(
            "pg_ctl",
            &[
                "-D",
                path_str(&self.data),
                "-o",
                &options,
                "-l",
                path_str(&log),
                "-w",
                "start",
            ],
        );
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self.command(
                "pg_isready",
                &["-h", "127.0.0.1", "-p", &self.port.to_string()],
            );
            if ready.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not become ready: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("server.log")).unwrap_or_default()
    }

    fn server_command(&self, program: &str, args: &[&str]) {
        let output = self.command(program, args);
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn command(&self, program: &str, args: &[&str]) -> Output {
        let program = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        command
            .args(args)
            .current_dir("/")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.command(
            "pg_ctl",
            &["-D", path_str(&self.data), "-m", "immediate", "-w", "stop"],
        );
    }
}

/// Where the PostgreSQL server binaries are: `SANDSERVE_TEST_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<major>/bin`.
pub fn server_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SANDSERVE_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries (Debian package `postgresql`) are not installed")
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let major = entry.file_name().to_str()?.parse().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    majors.sort();
    majors
        .pop()
        .map(|(_, bin)| bin)
        .expect("no /usr/lib/postgresql/<major>/bin/initdb")
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn chown(path: &Path, user: &str) {
    let status = Command::new("chown")
        .arg(user)
        .arg(path)
        .status()
        .expect("chown");
    assert!(status.success(), "chown {user} {}", path.display());
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_starts_answers_restarts_and_stops() {
        let pg = Postgres::start();
        let url = pg.create_database("smoke");
        assert!(url.ends_with("/smoke"), "{url}");
        let psql = |sql: &str| {
            pg.command(
                "psql",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &pg.port().to_string(),
                    "-U",
                    ROLE,
                    "-d",
                    "smoke",
                    "-tAc",
                    sql,
                ],
            )
        };
        let out = psql("select 40 + 2");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42", "{out:?}");
        pg.stop();
        assert!(
            !psql("select 1").status.success(),
            "the server answered while stopped"
        );
        pg.restart();
        assert_eq!(
            String::from_utf8_lossy(&psql("select 1").stdout).trim(),
            "1"
        );
    }
}
