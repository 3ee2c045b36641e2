//! A closed-loop HTTP load generator for the benchmarks: `concurrency` clients, each
//! sending one request after another for a while, with latencies pooled over rounds that
//! alternate the two sides being compared (a slow spell of a shared machine hits both).
//! `SANDSERVE_BENCH_ROUNDS` (default 6) and `SANDSERVE_BENCH_SECS` (per side and round,
//! default 1) set how long.

use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Load before measuring starts.
pub const WARMUP: Duration = Duration::from_millis(200);

/// A number from the environment variable `name`, else `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// How long each side is measured per round.
pub fn run_time() -> Duration {
    Duration::from_secs(env_number("SANDSERVE_BENCH_SECS", 1))
}

/// Latencies measured over some seconds of load, pooled over rounds.
#[derive(Default)]
pub struct Samples {
    latencies: Vec<Duration>,
    seconds: f64,
    errors: usize,
}

impl Samples {
    /// Pools `other` into these.
    pub fn add(&mut self, other: Samples) {
        self.latencies.extend(other.latencies);
        self.seconds += other.seconds;
        self.errors += other.errors;
    }

    /// Throughput and percentiles.
    pub fn stats(mut self) -> Stats {
        self.latencies.sort();
        let at = |q: f64| {
            self.latencies
                .get(((self.latencies.len().max(1) - 1) as f64 * q) as usize)
                .copied()
                .unwrap_or_default()
        };
        Stats {
            per_second: self.latencies.len() as f64 / self.seconds.max(f64::MIN_POSITIVE),
            p50: at(0.5),
            p99: at(0.99),
            errors: self.errors,
        }
    }
}

/// What a measurement comes to.
pub struct Stats {
    /// Requests answered per second.
    pub per_second: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Requests that failed.
    pub errors: usize,
}

/// Sends `body` to `url` from `concurrency` clients, each one request after another, for
/// [`run_time`] after [`WARMUP`]; counts non-200 answers as errors.
pub fn load(url: &str, token: &str, body: &Value, concurrency: usize) -> Samples {
    let body = serde_json::to_vec(body).expect("body");
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let samples: Vec<(Vec<Duration>, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..concurrency)
            .map(|_| {
                let (stop, measuring, body) = (stop.clone(), measuring.clone(), body.clone());
                scope.spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build()
                        .into();
                    let mut latencies = Vec::new();
                    let mut errors = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let ok = agent
                            .post(url)
                            .header("Authorization", &format!("Bearer {token}"))
                            .header("Content-Type", "application/json")
                            .send(&body[..])
                            .map(|mut r| {
                                let status = r.status().as_u16();
                                let _ = r.body_mut().read_to_vec();
                                status == 200
                            })
                            .unwrap_or(false);
                        if measuring.load(Ordering::Relaxed) {
                            latencies.push(started.elapsed());
                            if !ok {
                                errors += 1;
                            }
                        }
                    }
                    (latencies, errors)
                })
            })
            .collect();
        std::thread::sleep(WARMUP);
        measuring.store(true, Ordering::Relaxed);
        std::thread::sleep(run_time());
        measuring.store(false, Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| h.join().expect("client"))
            .collect()
    });
    Samples {
        errors: samples.iter().map(|s| s.1).sum(),
        latencies: samples.into_iter().flat_map(|s| s.0).collect(),
        seconds: run_time().as_secs_f64(),
    }
}

/// [`load`] on several `(url, token)` targets at once, `concurrency` clients each, pooled
/// over the same seconds: the throughput is the targets' together.
pub fn load_together(targets: &[(String, String)], body: &Value, concurrency: usize) -> Samples {
    let parts: Vec<Samples> = std::thread::scope(|scope| {
        let handles: Vec<_> = targets
            .iter()
            .map(|(url, token)| scope.spawn(move || load(url, token, body, concurrency)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("load"))
            .collect()
    });
    let mut pooled = Samples::default();
    for part in parts {
        pooled.latencies.extend(part.latencies);
        pooled.errors += part.errors;
    }
    pooled.seconds = run_time().as_secs_f64();
    pooled
}

/// A duration in microseconds.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Measures `base_url` and `other_url` in alternating rounds (see the module doc); returns
/// each side's pooled statistics.
pub fn compare(
    base_url: &str,
    other_url: &str,
    token: &str,
    body: &Value,
    concurrency: usize,
) -> (Stats, Stats) {
    let (mut base, mut other) = (Samples::default(), Samples::default());
    for round in 0..env_number("SANDSERVE_BENCH_ROUNDS", 6) {
        if round % 2 == 0 {
            base.add(load(base_url, token, body, concurrency));
            other.add(load(other_url, token, body, concurrency));
        } else {
            other.add(load(other_url, token, body, concurrency));
            base.add(load(base_url, token, body, concurrency));
        }
    }
    let (base, other) = (base.stats(), other.stats());
    assert_eq!(
        base.errors + other.errors,
        0,
        "{other_url} against {base_url} at {concurrency}: requests failed"
    );
    (base, other)
}

/// One markdown table row: `base` against `other`.
pub fn print_row(row: &str, concurrency: usize, base: &Stats, other: &Stats) {
    println!(
        "| {row} | {concurrency} | {:.0} | {:.0} | {:.2}x | {:.0} / {:.0} | {:.0} / {:.0} | {:.2}x |",
        base.per_second,
        other.per_second,
        other.per_second / base.per_second,
        us(base.p50),
        us(base.p99),
        us(other.p50),
        us(other.p99),
        other.p50.as_secs_f64() / base.p50.as_secs_f64(),
    );
}
