//! Load from an external client: `wrk` (Debian's `wrk` package), a light C client that
//! leaves more of the machine to the server than the benchmarks' own Rust client, with
//! the server's CPU time per request read from `/proc/PID/stat` over the same run.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// One wrk run against one URL.
#[derive(Debug, Clone, Copy, Default)]
pub struct WrkRun {
    /// Requests completed.
    pub requests: u64,
    /// Requests that failed (connection errors, timeouts, non-2xx answers).
    pub errors: u64,
    /// Requests per second.
    pub per_second: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th-percentile latency, microseconds.
    pub p99_us: f64,
    /// The server process's CPU time (user + system) over the run, seconds.
    pub server_cpu_secs: f64,
    /// How long the run (or the pooled runs together) lasted, seconds.
    pub seconds: f64,
    /// CPU time the whole machine left idle over the run (every core, from `/proc/stat`),
    /// seconds: what neither the server nor the client could use.
    pub machine_idle_secs: f64,
    /// Minor page faults the server process took over the run (`/proc/PID/stat`).
    pub server_minor_faults: u64,
    /// Context switches of the server's threads over the run, voluntary and not (summed
    /// over `/proc/PID/task/*/status`; a thread that exits mid-run takes its count along).
    pub server_context_switches: u64,
    /// The server's CPU time in the kernel over the run, seconds (part of `server_cpu_secs`).
    pub server_system_secs: f64,
    /// Inter-processor interrupts over the run, whole machine (`/proc/interrupts`): TLB
    /// shootdowns, rescheduling and function-call interrupts, in that order. On a VM each
    /// is an exit to the hypervisor.
    pub machine_ipis: [u64; 3],
}

impl WrkRun {
    /// The server's CPU time per completed request, microseconds.
    pub fn cpu_us_per_request(&self) -> f64 {
        self.server_cpu_secs * 1e6 / self.requests.max(1) as f64
    }

    /// The server's minor page faults per completed request.
    pub fn minor_faults_per_request(&self) -> f64 {
        self.server_minor_faults as f64 / self.requests.max(1) as f64
    }

    /// The server's kernel CPU time per completed request, microseconds.
    pub fn system_us_per_request(&self) -> f64 {
        self.server_system_secs * 1e6 / self.requests.max(1) as f64
    }

    /// Inter-processor interrupts per completed request (see [`WrkRun::machine_ipis`]).
    pub fn ipis_per_request(&self) -> [f64; 3] {
        self.machine_ipis
            .map(|count| count as f64 / self.requests.max(1) as f64)
    }

    /// The server threads' context switches per completed request.
    pub fn context_switches_per_request(&self) -> f64 {
        self.server_context_switches as f64 / self.requests.max(1) as f64
    }

    /// The share of the machine's CPU time left idle over the run (0 to 1): with every
    /// core busy the throughput follows the CPU per request; idle time means the server
    /// waited (for a batch to fill, a thread, the client).
    pub fn machine_idle_share(&self) -> f64 {
        let available = self.seconds * machine_cpus() as f64;
        (self.machine_idle_secs / available.max(f64::MIN_POSITIVE)).clamp(0.0, 1.0)
    }

    /// Pools two runs (counts, CPU and time add up; latencies are weighted by requests).
    pub fn pooled(self, other: WrkRun) -> WrkRun {
        let total = (self.requests + other.requests).max(1) as f64;
        let weight =
            |a: f64, b: f64| (a * self.requests as f64 + b * other.requests as f64) / total;
        WrkRun {
            requests: self.requests + other.requests,
            errors: self.errors + other.errors,
            per_second: (self.requests + other.requests) as f64
                / (self.seconds + other.seconds).max(f64::MIN_POSITIVE),
            p50_us: weight(self.p50_us, other.p50_us),
            p99_us: weight(self.p99_us, other.p99_us),
            server_cpu_secs: self.server_cpu_secs + other.server_cpu_secs,
            seconds: self.seconds + other.seconds,
            machine_idle_secs: self.machine_idle_secs + other.machine_idle_secs,
            server_minor_faults: self.server_minor_faults + other.server_minor_faults,
            server_context_switches: self.server_context_switches + other.server_context_switches,
            server_system_secs: self.server_system_secs + other.server_system_secs,
            machine_ipis: [0, 1, 2].map(|i| self.machine_ipis[i] + other.machine_ipis[i]),
        }
    }
}

/// Whether the benchmarks' wrk rows run: `wrk` is installed and `SANDSERVE_BENCH_WRK` is
/// not `0`. Says why on stderr when not.
pub fn enabled() -> bool {
    if std::env::var("SANDSERVE_BENCH_WRK").as_deref() == Ok("0") {
        return false;
    }
    let found = available();
    if !found {
        eprintln!("wrk not found (apt-get install wrk): skipping the external-client rows");
    }
    found
}

/// How long each wrk run lasts (`SANDSERVE_BENCH_WRK_SECS`, default 3).
pub fn seconds() -> Duration {
    Duration::from_secs(crate::load::env_number("SANDSERVE_BENCH_WRK_SECS", 3))
}

/// How many alternating pairs of wrk runs a row takes: half of `SANDSERVE_BENCH_ROUNDS`
/// (default 6), at least one.
pub fn rounds() -> u64 {
    crate::load::env_number("SANDSERVE_BENCH_ROUNDS", 6)
        .div_ceil(2)
        .max(1)
}

/// Whether `wrk` can be run here.
pub fn available() -> bool {
    Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok_and(|o| !o.stdout.is_empty() || !o.stderr.is_empty())
}

/// A server process's counters at one moment: `/proc/PID/stat` read once, and the
/// context switches of its live threads.
#[derive(Debug, Clone, Copy, Default)]
struct ServerCounters {
    /// CPU time, user + system, seconds.
    cpu_secs: f64,
    /// CPU time in the kernel, seconds.
    system_secs: f64,
    /// Minor page faults of every thread.
    minor_faults: u64,
    /// Context switches of the live threads, voluntary and not.
    context_switches: u64,
}

impl ServerCounters {
    /// Reads `pid`'s counters (zeros for what cannot be read).
    fn read(pid: u32) -> Self {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces) end at the last ')'.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // Counted after the name: minflt is field 10 of the whole line (7 here), utime and
        // stime fields 14 and 15 (11 and 12).
        let ticks = clock_ticks_per_second();
        Self {
            cpu_secs: (field(11) + field(12)) / ticks,
            system_secs: field(12) / ticks,
            minor_faults: field(7) as u64,
            context_switches: thread_context_switches(pid),
        }
    }
}

/// Context switches of a process's live threads so far, voluntary and not (from
/// `/proc/PID/task/*/status`).
fn thread_context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// Inter-processor interrupts so far, every CPU: TLB shootdowns, rescheduling and
/// function-call interrupts (the `TLB`, `RES` and `CAL` lines of `/proc/interrupts`).
fn machine_ipis() -> [u64; 3] {
    let text = std::fs::read_to_string("/proc/interrupts").unwrap_or_default();
    let count = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.trim_start().starts_with(name))
            .map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .map_while(|f| f.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0)
    };
    [count("TLB:"), count("RES:"), count("CAL:")]
}

/// CPU time the whole machine has spent idle so far (idle + iowait of every core, from
/// the first line of `/proc/stat`), seconds.
pub fn machine_idle_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait ...: idle is the 4th, iowait the 5th.
    (fields.get(3).unwrap_or(&0.0) + fields.get(4).unwrap_or(&0.0)) / clock_ticks_per_second()
}

/// The CPUs this process may run on.
fn machine_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Runs `wrk` POSTing `body` (JSON) to `url` with `connections` connections on 2 threads
/// for `duration`, measuring the CPU time of process `server_pid` meanwhile. `scratch` is a
/// folder for the request script.
pub fn post(
    scratch: &Path,
    url: &str,
    token: &str,
    body: &[u8],
    connections: usize,
    duration: Duration,
    server_pid: u32,
) -> WrkRun {
    let body_path = scratch.join("wrk-body.json");
    std::fs::write(&body_path, body).expect("write the wrk body");
    let script = scratch.join("wrk-post.lua");
    std::fs::write(
        &script,
        format!(
            r#"local f = io.open("{body}", "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("SANDSERVE_WRK %d %d %d %.1f %.1f\n", summary.requests,
    e.connect + e.read + e.write + e.timeout + e.status, summary.duration,
    latency:percentile(50), latency:percentile(99)))
end
"#,
            body = body_path.display()
        ),
    )
    .expect("write the wrk script");
    let threads = connections.clamp(1, 2);
    let server_before = ServerCounters::read(server_pid);
    let ipis_before = machine_ipis();
    let idle_before = machine_idle_secs();
    let output = Command::new("wrk")
        .args(["-t", &threads.to_string(), "-c", &connections.to_string()])
        .args(["-d", &format!("{}s", duration.as_secs().max(1))])
        .args(["--timeout", "10s", "-s"])
        .arg(&script)
        .arg(url)
        .output()
        .expect("run wrk (apt-get install wrk)");
    let server_after = ServerCounters::read(server_pid);
    let ipis_after = machine_ipis();
    let ipis = [0, 1, 2].map(|i| ipis_after[i].saturating_sub(ipis_before[i]));
    let idle = machine_idle_secs() - idle_before;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("SANDSERVE_WRK "))
        .unwrap_or_else(|| panic!("wrk printed no summary: {text}"));
    let f: Vec<f64> = line
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let (requests, errors, seconds) = (f[0] as u64, f[1] as u64, f[2] / 1e6);
    WrkRun {
        requests,
        errors,
        per_second: requests as f64 / seconds.max(f64::MIN_POSITIVE),
        p50_us: f[3],
        p99_us: f[4],
        server_cpu_secs: server_after.cpu_secs - server_before.cpu_secs,
        seconds,
        // Read around the whole wrk process, whose start and exit fall outside its timed
        // part: a few milliseconds of idle too many, at most.
        machine_idle_secs: idle.max(0.0),
        server_minor_faults: server_after
            .minor_faults
            .saturating_sub(server_before.minor_faults),
        server_context_switches: server_after
            .context_switches
            .saturating_sub(server_before.context_switches),
        server_system_secs: server_after.system_secs - server_before.system_secs,
        machine_ipis: ipis,
    }
}

/// One side of an A/B run: where to send, and which process serves it (whose CPU is read).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The URL POSTed to.
    pub url: &'a str,
    /// The serving process.
    pub pid: u32,
}

/// Drives `a` and `b` with the same wrk load in `rounds` alternating pairs (`a` first in
/// even rounds, `b` first in odd ones, so that a slow spell of a shared machine hits
/// both), `seconds` each, and pools each side's runs.
#[allow(clippy::too_many_arguments)]
pub fn alternate(
    scratch: &Path,
    a: Target<'_>,
    b: Target<'_>,
    token: &str,
    body: &[u8],
    connections: usize,
    seconds: Duration,
    rounds: u64,
) -> (WrkRun, WrkRun) {
    let runs = rotate(scratch, &[a, b], token, body, connections, seconds, rounds);
    (runs[0], runs[1])
}

/// Drives every target with the same wrk load, `seconds` each, in `rounds` rounds; each
/// round starts one target later than the one before (round 0: 0, 1, 2; round 1: 1, 2,
/// 0; ...), so that a slow spell of a shared machine hits all of them. Pools each
/// target's runs, in the order of `targets`.
#[allow(clippy::too_many_arguments)]
pub fn rotate(
    scratch: &Path,
    targets: &[Target<'_>],
    token: &str,
    body: &[u8],
    connections: usize,
    seconds: Duration,
    rounds: u64,
) -> Vec<WrkRun> {
    let mut pooled: Vec<Option<WrkRun>> = vec![None; targets.len()];
    for round in 0..rounds.max(1) as usize {
        for step in 0..targets.len() {
            let at = (round + step) % targets.len();
            let side = targets[at];
            let run = post(
                scratch,
                side.url,
                token,
                body,
                connections,
                seconds,
                side.pid,
            );
            pooled[at] = Some(pooled[at].map_or(run, |acc| acc.pooled(run)));
        }
    }
    pooled.into_iter().map(Option::unwrap_or_default).collect()
}
