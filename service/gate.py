"""The correctness gate: a version serves only if it still answers as it did when made.

The tool that makes a version (export, import, quantize) writes a few deterministic
images into ``<version>/golden/`` and records, in ``version.json``, what the serving
engine class answered on them (:func:`record`). At every load, after warm-up and before
the version reports ready, the pool runs those images through the preprocessor, engine
and provider actually chosen (:func:`check`). What this catches, and what it does not:

* a truncated or swapped artifact (weights that are not the recorded ones);
* a ``config.json`` whose preprocessing (mean/std, resize, crop) no longer matches what
  the weights were recorded with: the images go through the *served* preprocessing;
* a provider whose numerics break the model (fp16 overflow: inf/NaN logits);
* an edited golden set (images or logits), which reads as a version out of its bound.

It does not judge accuracy: a version recorded with bad weights passes its own gate.

Images rather than tensors, so preprocessing is inside the check. They are synthetic
(a seeded low-frequency colour field with a sharp pattern on top), PNG so decoding is
exact everywhere, and larger than the crop so resize and crop both act.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from service.engines.base import Engine
from service.golden import (
    GOLDEN_DIR,
    GPU_FLOOR,
    Bound,
    Execution,
    GoldenInput,
    GoldenSet,
    bound_for,
)
from service.preprocess import Limits, Preprocessor
from service.repository import ModelConfig, Preprocessing

GOLDEN_COUNT = 4
GOLDEN_SEED = 20_24
#: Providers that compute in the precision they were given (no TF32, no half).
CPU_PROVIDERS = frozenset({"CPUExecutionProvider", "cpu"})

#: One image's tensor (1, 3, H, W) -> its logits (1, C); the engine's ``run``.
Runner = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]


class GoldenSetError(Exception):
    """The golden set cannot be read (missing or altered image); the message says which."""


@dataclass(frozen=True)
class GateReport:
    """One gate run: whether the version may serve, and why not."""

    passed: bool
    reason: str
    max_abs_diff: float
    bound: float
    inputs: int


def golden_images(spec: Preprocessing, count: int = GOLDEN_COUNT) -> list[bytes]:
    """Deterministic PNG images for a model with this preprocessing."""
    rng = np.random.default_rng(GOLDEN_SEED)
    width, height = spec.resize_size + spec.resize_size // 4, spec.resize_size + 3
    ys, xs = np.mgrid[0:height, 0:width]
    images = []
    for index in range(count):
        coarse = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
        field = np.asarray(
            Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC),
            dtype=np.int32,
        )
        period = 3 + 2 * index  # a sharp pattern: edges the convolutions respond to
        stripes = ((xs + ys * (index % 2)) // period % 2 * 60 - 30)[..., None]
        pixels = np.clip(field + stripes, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buffer, "PNG", optimize=True)
        images.append(buffer.getvalue())
    return images


def _tensors(images: Sequence[bytes], preprocessor: Preprocessor) -> list[npt.NDArray[np.float32]]:
    return [preprocessor(data)[None] for data in images]


def record(
    folder: Path,
    spec: Preprocessing,
    runners: dict[str, Runner],
    *,
    precision: str,
    recorded_by: str,
) -> GoldenSet:
    """Write the golden images into ``folder/golden/``; answer them with each runner.

    ``runners`` maps artifact format to the serving engine's ``run`` on that artifact.
    """
    images = golden_images(spec)
    (folder / GOLDEN_DIR).mkdir(exist_ok=True)
    inputs = []
    for index, data in enumerate(images):
        name = f"{GOLDEN_DIR}/{index}.png"
        (folder / name).write_bytes(data)
        inputs.append(GoldenInput(file=name, sha256=hashlib.sha256(data).hexdigest()))
    tensors = _tensors(images, Preprocessor(spec, Limits(max_pixels=1 << 40)))
    logits = {
        fmt: tuple(tuple(float(x) for x in run(t)[0]) for t in tensors)
        for fmt, run in runners.items()
    }
    return GoldenSet(
        precision=precision,
        bound=bound_for(precision),
        inputs=tuple(inputs),
        logits=logits,
        recorded_by=recorded_by,
    )


def read_images(version_dir: Path, golden: GoldenSet) -> list[bytes]:
    """The golden images, each checked against its recorded sha256."""
    images = []
    for item in golden.inputs:
        path = version_dir / item.file
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise GoldenSetError(f"golden image {item.file} cannot be read: {exc}") from None
        if hashlib.sha256(data).hexdigest() != item.sha256:
            raise GoldenSetError(
                f"golden image {item.file} does not match its sha256 in version.json "
                "(edited or partly copied)"
            )
        images.append(data)
    return images


def execution_of(config: ModelConfig, provider: str, precision: str) -> Execution:
    """How the chosen provider computes this version (see :data:`GPU_FLOOR`)."""
    if provider in CPU_PROVIDERS:
        return "int8" if precision == "int8" else "fp32"
    return "fp16" if config.fp16 else "tf32"


def effective_bound(golden: GoldenSet, execution: Execution) -> Bound:
    floor = GPU_FLOOR.get(execution)
    return golden.bound if floor is None else golden.bound.widened(floor)


def compare(
    reference: npt.NDArray[np.float64], candidate: npt.NDArray[np.float64], bound: Bound
) -> GateReport:
    """Refused when a logit is off by more than the bound, or a top-1 class changed
    where the reference's margin between the two classes exceeds the bound (a near-tie
    may flip within the bound: common with random weights)."""
    if candidate.shape != reference.shape:
        return GateReport(
            False,
            f"logits shape {candidate.shape} differs from the recorded {reference.shape}",
            float("inf"),
            0.0,
            len(reference),
        )
    limit = bound.at(float(np.abs(reference).max()))
    if not np.isfinite(candidate).all():
        return GateReport(
            False,
            "the engine answered non-finite logits (inf/NaN)",
            float("inf"),
            limit,
            len(reference),
        )
    diff = float(np.abs(candidate - reference).max())
    rows = np.arange(len(reference))
    ref_top, cand_top = reference.argmax(axis=1), candidate.argmax(axis=1)
    flipped = (ref_top != cand_top) & (reference[rows, ref_top] - reference[rows, cand_top] > limit)
    if flipped.any():
        first = int(np.flatnonzero(flipped)[0])
        reason = (
            f"top-1 class changed on {int(flipped.sum())} of {len(reference)} golden images "
            f"(image {first}: recorded class {int(ref_top[first])}, now {int(cand_top[first])}); "
            f"max |logit diff| {diff:.3g}, bound {limit:.3g}"
        )
        return GateReport(False, reason, diff, limit, len(reference))
    if diff > limit:
        reason = f"max |logit diff| {diff:.3g} is past the bound {limit:.3g}"
        return GateReport(False, reason, diff, limit, len(reference))
    return GateReport(True, "", diff, limit, len(reference))


def check(
    golden: GoldenSet,
    version_dir: Path,
    fmt: str,
    config: ModelConfig,
    preprocessor: Preprocessor,
    engine: Engine,
    precision: str,
) -> GateReport:
    """Run the golden images through the served preprocessor and engine; compare.

    Blocking (image decode and engine runs): call it off the event loop. The logits
    of another format stand in when ``fmt`` has none recorded (format parity is
    checked at export, well inside the fp32 bound).
    """
    rows = golden.logits.get(fmt) or next(iter(golden.logits.values()))
    if len(rows) != len(golden.inputs):
        return GateReport(
            False,
            f"the golden set has {len(golden.inputs)} images but {len(rows)} rows of logits",
            float("inf"),
            0.0,
            len(golden.inputs),
        )
    images = read_images(version_dir, golden)
    answers = []
    try:
        for data in images:
            collated = preprocessor.collate([preprocessor.decode(preprocessor.open(data))])
            answers.append(np.asarray(engine.run(collated.batch), dtype=np.float64)[0])
    except Exception as exc:  # a crop the graph does not take, a provider that fails
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return GateReport(
            False,
            f"the engine cannot run the golden images as this config preprocesses them "
            f"({type(exc).__name__}: {first_line})",
            float("inf"),
            0.0,
            len(images),
        )
    bound = effective_bound(golden, execution_of(config, engine.provider, precision))
    return compare(np.asarray(rows, dtype=np.float64), np.stack(answers), bound)


def record_artifacts(
    folder: Path, spec: Preprocessing, artifacts: dict[str, Path], *, precision: str
) -> GoldenSet:
    """:func:`record` with the serving engine class on each artifact, on the CPU, with
    the server's default settings: what a plain ``serve`` would run."""
    from service.engines import EngineOptions, load_engine

    engines = {
        fmt: load_engine(fmt, path, EngineOptions(), device="cpu")  # type: ignore[arg-type]
        for fmt, path in artifacts.items()
    }
    try:
        return record(
            folder,
            spec,
            {fmt: engine.run for fmt, engine in engines.items()},
            precision=precision,
            recorded_by=", ".join(f"{e.name} on {e.provider}" for e in engines.values()),
        )
    finally:
        for engine in engines.values():
            engine.close()
