//! The digits handler: classifies 8x8 grey-scale images of handwritten digits.
//!
//! Input: one tensor of raw pixel intensities 0..=16 (as in scikit-learn's digits data),
//! shaped `[n, 64]`, `[n, 8, 8]`, `[64]` or `[8, 8]`, of any numeric type. The handler
//! checks the shape and the value range, scales pixels to 0..=1, runs the image's `digits`
//! graph and returns `label` (INT64 `[n]`) and `probabilities` (FP32 `[n, 10]`).

use sandserve_sdk::nn::Graph;
use sandserve_sdk::{export_handler, Handler, HandlerError, Request, Response, Tensor};

/// Pixels per image.
const PIXELS: u64 = 64;
/// Most images per request.
const MAX_BATCH: u64 = 4096;
/// Brightest pixel value in the training data.
const MAX_INTENSITY: f32 = 16.0;

struct Digits;

/// Number of images in a tensor of the accepted shapes.
fn batch_size(shape: &[u64]) -> Result<u64, HandlerError> {
    let n = match shape {
        [n, 64] | [n, 8, 8] => *n,
        [64] | [8, 8] => 1,
        other => {
            return Err(HandlerError::invalid_input(format!(
                "expected images shaped [n, 64], [n, 8, 8], [64] or [8, 8]; got {other:?}"
            )))
        }
    };
    if n == 0 || n > MAX_BATCH {
        return Err(HandlerError::invalid_input(format!(
            "send between 1 and {MAX_BATCH} images, got {n}"
        )));
    }
    Ok(n)
}

impl Handler for Digits {
    fn predict(request: Request) -> Result<Response, HandlerError> {
        let images = request.single_input()?;
        let n = batch_size(&images.shape)?;
        let mut pixels = images.to_f32_lossy()?;
        for (i, p) in pixels.iter_mut().enumerate() {
            if !(0.0..=MAX_INTENSITY).contains(p) {
                return Err(HandlerError::invalid_input(format!(
                    "pixel {} of image {} is {p}; intensities must be within 0..=16",
                    i as u64 % PIXELS,
                    i as u64 / PIXELS
                )));
            }
            *p /= MAX_INTENSITY;
        }
        let input = Tensor::from_values("input", vec![n, PIXELS], &pixels)?;
        let outputs = Graph::load("digits")?.run(&[input])?;
        let pick = |name: &str| {
            outputs
                .iter()
                .find(|t| t.name == name)
                .cloned()
                .ok_or_else(|| HandlerError::internal(format!("graph returned no `{name}`")))
        };
        Ok(Response::new(vec![pick("label")?, pick("probabilities")?]))
    }
}

export_handler!(Digits);
