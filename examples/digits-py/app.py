"""The digits handler in Python: classifies 8x8 grey-scale images of handwritten digits.

The same contract as the Rust handler in examples/digits: raw pixel intensities 0..=16
shaped [n, 64], [n, 8, 8], [64] or [8, 8] (any numeric type); other shapes and
out-of-range values are refused (HTTP 400); pixels are scaled to 0..=1, the package's
`digits` graph runs, and `label` (INT64 [n]) and `probabilities` (FP32 [n, 10]) come back.
"""

from sandserve import Graph, InvalidInput, Request, Response, Tensor

PIXELS = 64
MAX_BATCH = 4096
MAX_INTENSITY = 16.0


def batch_size(shape):
    if len(shape) == 2 and shape[1] == 64 or len(shape) == 3 and shape[1:] == [8, 8]:
        n = shape[0]
    elif shape == [64] or shape == [8, 8]:
        n = 1
    else:
        raise InvalidInput(
            f"expected images shaped [n, 64], [n, 8, 8], [64] or [8, 8]; got {shape}"
        )
    if n == 0 or n > MAX_BATCH:
        raise InvalidInput(f"send between 1 and {MAX_BATCH} images, got {n}")
    return n


def predict(request: Request) -> Response:
    images = request.single_input()
    n = batch_size(images.shape)
    pixels = images.to_f32_lossy()
    if min(pixels) < 0.0 or max(pixels) > MAX_INTENSITY:
        i = next(i for i, p in enumerate(pixels) if not 0.0 <= p <= MAX_INTENSITY)
        raise InvalidInput(
            f"pixel {i % PIXELS} of image {i // PIXELS} is {pixels[i]:g}; "
            "intensities must be within 0..=16"
        )
    scaled = [p / MAX_INTENSITY for p in pixels]
    outputs = Graph.load("digits").run_named([Tensor.from_values("input", [n, PIXELS], scaled)])
    for name in ("label", "probabilities"):
        if name not in outputs:
            raise RuntimeError(f"graph returned no `{name}`")
    return Response([outputs["label"], outputs["probabilities"]])
