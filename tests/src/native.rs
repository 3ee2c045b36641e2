//! The digits model through native ONNX Runtime (the `ort` crate, no sandbox): what the
//! tests and benchmarks compare the sandboxed path against.

use std::path::Path;

/// A native session of `model` with one intra-op thread.
pub fn session(model: &Path) -> ort::session::Session {
    ort::session::Session::builder()
        .and_then(|b| b.with_intra_threads(1))
        .and_then(|b| b.commit_from_file(model))
        .expect("native session")
}

/// Runs the digits model on `n` rows of 64 already-scaled pixels: (labels, probabilities).
pub fn digits(
    session: &mut ort::session::Session,
    pixels: &[f32],
    n: usize,
) -> (Vec<i64>, Vec<f32>) {
    let input = ort::value::Tensor::from_array(([n, 64], pixels.to_vec())).expect("input tensor");
    let outputs = session
        .run(ort::inputs!["input" => input])
        .expect("native run");
    let (_, labels) = outputs["label"]
        .try_extract_tensor::<i64>()
        .expect("labels");
    let (_, probabilities) = outputs["probabilities"]
        .try_extract_tensor::<f32>()
        .expect("probabilities");
    (labels.to_vec(), probabilities.to_vec())
}

/// The mean time of one run of `session` (input `x`, float32 `[rows, width]`, output `y`)
/// over `runs` runs after two warm-up runs.
pub fn time_rows(
    session: &mut ort::session::Session,
    rows: usize,
    width: usize,
    runs: u32,
) -> std::time::Duration {
    let x = crate::packages::mlp_input(rows * width);
    let mut run = || {
        let input = ort::value::Tensor::from_array(([rows, width], x.clone())).expect("input");
        let outputs = session.run(ort::inputs!["x" => input]).expect("native run");
        assert!(outputs.contains_key("y"), "the model answers `y`");
    };
    run();
    run();
    let started = std::time::Instant::now();
    for _ in 0..runs {
        run();
    }
    started.elapsed() / runs.max(1)
}
