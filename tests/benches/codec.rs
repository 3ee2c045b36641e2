//! Codec benchmark: the CPU time to turn a request body of 2048 float32 values (written
//! as numpy and JSON encoders write a float32, up to 17 digits) into tensors, for each
//! protocol shape, against the cheapest possible pass over the same body in the same run
//! (serde_json checking it is JSON and keeping it as raw text), so the ratio says how many such
//! passes a codec costs.
//!
//! Run: `cargo bench -p sandserve-tests --bench codec` (results go in docs/benchmarks.md).

use sandserve_host::codec::{databricks, v2};
use sandserve_tests::packages::mlp_input;
use serde_json::json;
use serde_json::value::RawValue;
use std::time::{Duration, Instant};

const WIDTH: usize = 2048;
const ITERATIONS: usize = 500;
const ROUNDS: usize = 6;

/// The fastest run of each of `a` and `b` (the time the machine's other work did not
/// disturb), the two run in turn, [`ROUNDS`] times [`ITERATIONS`] runs each after a warm-up.
fn fastest(mut a: impl FnMut(), mut b: impl FnMut()) -> (Duration, Duration) {
    let (mut best_a, mut best_b) = (Duration::MAX, Duration::MAX);
    for round in 0..=ROUNDS {
        let (run_a, run_b) = (fastest_of_round(&mut a), fastest_of_round(&mut b));
        if round > 0 {
            best_a = best_a.min(run_a);
            best_b = best_b.min(run_b);
        }
    }
    (best_a, best_b)
}

fn fastest_of_round(f: &mut impl FnMut()) -> Duration {
    (0..ITERATIONS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let row = mlp_input(WIDTH);
    let bodies = [
        (
            "V2, datatype and shape before data",
            json!({"inputs": [{"name": "x", "shape": [1, WIDTH], "datatype": "FP32", "data": row}]}),
        ),
        (
            "V2, data before datatype and shape",
            json!({"inputs": [{"data": row, "name": "x", "shape": [1, WIDTH], "datatype": "FP32"}]}),
        ),
        ("Databricks `inputs`", json!({"inputs": {"x": [row]}})),
        ("Databricks `instances`", json!({"instances": [row]})),
        (
            "Databricks `dataframe_split`, 64 rows of 32 columns",
            json!({"dataframe_split": {
                "columns": (0..32).map(|c| format!("c{c}")).collect::<Vec<_>>(),
                "data": row.chunks(32).collect::<Vec<_>>(),
            }}),
        ),
        (
            "Databricks `dataframe_records`, 64 rows of 32 columns",
            json!({"dataframe_records": row.chunks(32).map(|r| {
                (0..32).map(|c| (format!("c{c}"), json!(r[c]))).collect::<serde_json::Map<_, _>>()
            }).collect::<Vec<_>>()}),
        ),
    ];
    // Warm up the machine (its clock and caches) before the first row counts.
    let warm_up = serde_json::to_vec(&bodies[0].1).expect("body");
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        std::hint::black_box(v2::parse_request(&warm_up, None).expect("parses"));
    }
    println!("| body ({WIDTH} float32) | bytes | one bare pass, fastest (us) | codec, fastest (us) | codec / bare pass |");
    println!("|---|---|---|---|---|");
    for (name, body) in bodies {
        let bytes = serde_json::to_vec(&body).expect("body");
        let scan = || {
            std::hint::black_box(serde_json::from_slice::<&RawValue>(&bytes).expect("JSON"));
        };
        let v2 = name.starts_with("V2");
        let parse = || {
            if v2 {
                std::hint::black_box(v2::parse_request(&bytes, None).expect("parses"));
            } else {
                std::hint::black_box(databricks::parse_query(&bytes, None).expect("parses"));
            }
        };
        let (scan, parse) = fastest(scan, parse);
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.2}x |",
            bytes.len(),
            us(scan),
            us(parse),
            parse.as_secs_f64() / scan.as_secs_f64()
        );
    }
}
