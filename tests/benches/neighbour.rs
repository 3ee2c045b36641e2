//! Hostile-neighbour benchmark: tenant B's latency and errors while tenant A (or a client
//! without a token) attacks the shared server at its limits, each attack in turn, against
//! B's quiet baseline measured in the same run; and the server's peak memory against its
//! configured budget throughout.
//!
//! Run: `scripts/bench-neighbour.sh` (builds the release binary first). Results go in
//! docs/benchmarks.md and docs/security.md. `SANDSERVE_BENCH_SECS` (default 5) sets how
//! long each phase measures; `SANDSERVE_BENCH_ONLY=spin` runs the quiet phase and one attack;
//! `SANDSERVE_BENCH_A_ELSEWHERE=1` gives tenant A a second server process of its own (a
//! diagnostic: what A's work costs B through the machine alone, not through the process).
//!
//! B runs `examples/echo` from two client threads, one request after the other. The attacks:
//! - `spin`: 80 concurrent infinite-loop requests (2 s timeout), resent as they end;
//! - `memory`: 8 concurrent requests each holding 400 MiB of guest memory for 0.5 s;
//! - `json`: 4 concurrent 32 MiB V2 bodies whose shape does not match their data;
//! - `slowloris`: 1,100 connections without a token, each sending half a header, reopened
//!   as the server closes them;
//! - `stalled`: 100 authenticated chunked uploads that stop after their first chunk.

use sandserve_tests::packages::{example_package, handler_package};
use sandserve_tests::server::{Client, TestServer};
use serde_json::json;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BUDGET_MIB: u64 = 2048;

fn phase_time() -> Duration {
    let secs = std::env::var("SANDSERVE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    Duration::from_secs(secs)
}

/// What B saw during one phase.
struct Seen {
    latencies: Vec<Duration>,
    errors: usize,
}

impl Seen {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[index]
    }
}

/// B's echo load for `time`, from two threads.
fn measure_b(url: &str, token: &str, time: Duration) -> Seen {
    let echo = json!({"inputs": [{"name": "x", "shape": [4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}]});
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let client = Client::new(url, token);
            let echo = echo.clone();
            std::thread::spawn(move || {
                let mut seen = Seen {
                    latencies: Vec::new(),
                    errors: 0,
                };
                let end = Instant::now() + time;
                while Instant::now() < end {
                    let started = Instant::now();
                    let (status, _) = client.post("/v2/models/echo/versions/1/infer", &echo);
                    seen.latencies.push(started.elapsed());
                    if status != 200 {
                        seen.errors += 1;
                    }
                }
                seen
            })
        })
        .collect();
    let mut all = Seen {
        latencies: Vec::new(),
        errors: 0,
    };
    for thread in threads {
        let seen = thread.join().expect("B's client thread");
        all.latencies.extend(seen.latencies);
        all.errors += seen.errors;
    }
    all
}

/// Runs `attack` on `n` threads until `stop` is set.
fn attack_threads(
    n: usize,
    stop: &Arc<AtomicBool>,
    attack: impl Fn(&AtomicBool) + Send + Sync + Clone + 'static,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let (stop, attack) = (stop.clone(), attack.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    attack(&stop);
                }
            })
        })
        .collect()
}

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

fn main() {
    let only = std::env::var("SANDSERVE_BENCH_ONLY").ok();
    let data = tempfile::tempdir().expect("temp dir");
    let budget = BUDGET_MIB.to_string();
    let server = TestServer::start(data.path(), &["--memory-budget-mib", &budget]);
    let admin = server.admin();
    let elsewhere_data = tempfile::tempdir().expect("temp dir");
    let elsewhere = std::env::var_os("SANDSERVE_BENCH_A_ELSEWHERE")
        .map(|_| TestServer::start(elsewhere_data.path(), &["--memory-budget-mib", &budget]));
    let a_server = elsewhere.as_ref().unwrap_or(&server);
    let a_token = a_server.admin().tenant_with_token("attacker", "CAN_MANAGE");
    let b_token = admin.tenant_with_token("quiet", "CAN_MANAGE");
    let a = a_server.client(&a_token);
    let b = server.client(&b_token);
    assert_eq!(b.upload("echo", &example_package("echo")).0, 201);
    let spin = handler_package(
        "spin",
        "infinite-loop",
        "[limits]\ntimeout_ms = 2000\nmax_concurrency = 200\n",
        &[],
    );
    assert_eq!(a.upload("spin", &spin).0, 201);
    let holder = handler_package(
        "holder",
        "slow-on-request",
        "[limits]\nmemory_mib = 512\ntimeout_ms = 10000\nmax_concurrency = 16\n",
        &[],
    );
    assert_eq!(a.upload("holder", &holder).0, 201);
    let time = phase_time();
    // Warm both tenants' versions up.
    measure_b(&server.url, &b_token, Duration::from_millis(500));

    server.reset_peak_memory();
    let quiet = measure_b(&server.url, &b_token, time);
    let base_rss = server.memory_kib("VmRSS");
    println!(
        "| phase | B requests | B errors | B p50 | B p99 | p99 / quiet | server peak RSS rise |"
    );
    println!("|---|---|---|---|---|---|---|");
    let row = |name: &str, seen: &Seen, peak_kib: u64| {
        println!(
            "| {name} | {} | {} | {:.2} ms | {:.2} ms | {:.2}x | {} MiB (budget {BUDGET_MIB} MiB) |",
            seen.latencies.len(),
            seen.errors,
            seen.percentile(0.5).as_secs_f64() * 1e3,
            seen.percentile(0.99).as_secs_f64() * 1e3,
            seen.percentile(0.99).as_secs_f64() / quiet.percentile(0.99).as_secs_f64().max(1e-9),
            peak_kib.saturating_sub(base_rss) >> 10,
        );
    };
    row("quiet", &quiet, server.memory_kib("VmHWM"));

    let url = server.url.clone();
    type Attack = (&'static str, usize, Arc<dyn Fn(&AtomicBool) + Send + Sync>);
    let client_for_a = {
        let (url, token) = (a_server.url.clone(), a_token.clone());
        move || Client::new(&url, &token)
    };
    let (spin_client, holder_client, json_client) =
        (client_for_a.clone(), client_for_a.clone(), client_for_a);
    let big_body = {
        let n = 32 << 20;
        let mut body = String::with_capacity(n + 200);
        body.push_str(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":["#);
        while body.len() < n {
            body.push_str("0,");
        }
        body.push_str("0]}]}");
        Arc::new(body)
    };
    let slow_addr = addr(&url);
    let stalled_addr = addr(&url);
    let stalled_token = a_token.clone();
    let opened = Arc::new(AtomicUsize::new(0));
    let opened_for_attack = opened.clone();
    let attacks: Vec<Attack> = vec![
        (
            "spin",
            80,
            Arc::new(move |_: &AtomicBool| {
                spin_client().post(
                    "/v2/models/spin/versions/1/infer",
                    &json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [0.0]}]}),
                );
            }),
        ),
        (
            "memory",
            8,
            Arc::new(move |_: &AtomicBool| {
                holder_client().post(
                    "/v2/models/holder/versions/1/infer",
                    &json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [0.0]}],
                            "parameters": {"alloc_mib": 400, "sleep_ms": 500}}),
                );
            }),
        ),
        (
            "json",
            4,
            Arc::new(move |_: &AtomicBool| {
                json_client().post_bytes(
                    "/v2/models/holder/versions/1/infer",
                    "application/json",
                    &[],
                    big_body.as_bytes(),
                );
            }),
        ),
        (
            "slowloris",
            11,
            Arc::new(move |stop: &AtomicBool| {
                // 100 half-open connections per thread, reopened as they are closed.
                let mut held: Vec<TcpStream> = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    held.retain(|c| {
                        let mut probe = [0u8; 1];
                        let _ = c.set_nonblocking(true);
                        !matches!(std::io::Read::read(&mut &*c, &mut probe), Ok(0))
                    });
                    while held.len() < 100 {
                        match TcpStream::connect(&slow_addr) {
                            Ok(mut c) => {
                                let _ =
                                    c.write_all(b"POST /v2/models/x/infer HTTP/1.1\r\nHost: x\r\n");
                                opened_for_attack.fetch_add(1, Ordering::Relaxed);
                                held.push(c);
                            }
                            Err(_) => break,
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }),
        ),
        (
            "stalled",
            100,
            Arc::new(move |stop: &AtomicBool| {
                if let Ok(mut c) = TcpStream::connect(&stalled_addr) {
                    let _ = write!(
                        c,
                        "POST /api/2.0/models/stalled/versions HTTP/1.1\r\nHost: x\r\n\
                         Authorization: Bearer {stalled_token}\r\nContent-Type: application/gzip\r\n\
                         Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n"
                    );
                    let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
                    let mut buf = [0u8; 512];
                    while !stop.load(Ordering::SeqCst) {
                        match std::io::Read::read(&mut c, &mut buf) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                            Err(_) => break,
                        }
                    }
                }
            }),
        ),
    ];
    for (name, threads, attack) in attacks {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let attack = move |s: &AtomicBool| attack(s);
        let workers = attack_threads(threads, &stop, attack);
        std::thread::sleep(Duration::from_secs(1));
        server.reset_peak_memory();
        let seen = measure_b(&url, &b_token, time);
        let peak = server.memory_kib("VmHWM");
        stop.store(true, Ordering::SeqCst);
        for worker in workers {
            let _ = worker.join();
        }
        row(name, &seen, peak);
        // Let what the attack left running finish before the next phase.
        std::thread::sleep(Duration::from_secs(3));
    }
    eprintln!(
        "slowloris connections opened: {}",
        opened.load(Ordering::Relaxed)
    );
}
