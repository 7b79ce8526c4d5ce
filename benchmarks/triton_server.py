"""``python -m benchmarks.triton_server``: Triton serving our model the way we do.

The side-by-side baseline (:mod:`benchmarks.triton`): Triton Inference Server, started
by PyTriton, serving one Python function behind Triton's dynamic batcher. The function
does exactly what our server does per batch: decode and preprocess every image with the
service's own :class:`~service.preprocess.Preprocessor` (on a thread pool as wide as our
decode pool), run the service's own ONNX Runtime engine (:func:`~service.engines.
create_engine`, same file, same session options) and return softmax probabilities.
So the two servers differ only in what surrounds the model: HTTP/gRPC front ends,
batcher, and how the work is scheduled.

Input ``image``: one encoded image per batch row (V2 ``BYTES``, shape ``[-1, 1]``);
output ``probabilities``: FP32 ``[-1, classes]``, which a client asks for as a top-1
classification, as it asks ours. Runs in its own process (PyTriton starts
``tritonserver`` and a proxy process for the function) and serves until SIGTERM.
Needs ``nvidia-pytriton`` (the ``triton`` extra) and ``LD_LIBRARY_PATH`` holding the
folder of this Python's ``libpython`` (set by :class:`benchmarks.triton.TritonProcess`).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.inputs import Variant
from service.engines import create_engine
from service.postprocess import softmax
from service.preprocess import Limits, Preprocessor
from service.settings import Settings
from service.threads import named_executor


def _image_bytes(cell: Any) -> bytes:
    """A BYTES element as PyTriton hands it over (``bytes`` or ``np.bytes_``)."""
    return bytes(cell)


def make_infer(repository: Path, model: str, version: int, max_batch_size: int) -> tuple[Any, int]:
    """The batched inference function and the model's class count."""
    entry, chosen = Variant(model, version).resolve(repository)
    settings = Settings()
    engine = create_engine(entry.config, chosen, settings)
    engine.warmup(max_batch_size)  # every size it may run, as our server warms
    pre = Preprocessor(entry.config.preprocessing, Limits(max_pixels=settings.max_image_pixels))
    pool = named_executor(settings.effective_decode_threads(), "decode")
    classes = len(entry.config.labels)

    def infer(image: npt.NDArray[Any]) -> dict[str, npt.NDArray[np.float32]]:
        tensors = list(pool.map(lambda row: pre(_image_bytes(row[0])), image))
        logits = engine.run(np.stack(tensors))
        return {"probabilities": softmax(logits).astype(np.float32)}

    return infer, classes


def main(argv: list[str] | None = None) -> int:
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    parser = argparse.ArgumentParser(prog="python -m benchmarks.triton_server")
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=32)
    args = parser.parse_args(argv)

    infer, classes = make_infer(args.repository, args.model, args.version, args.max_batch_size)
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        allow_metrics=True,
        allow_gpu_metrics=False,
        allow_cpu_metrics=False,
        log_verbose=0,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=args.model,
            model_version=args.version,
            infer_func=batch(infer),
            inputs=[Tensor(name="image", dtype=bytes, shape=(1,))],
            outputs=[Tensor(name="probabilities", dtype=np.float32, shape=(classes,))],
            # Like ours: no fixed wait, batches grow while the previous one runs.
            config=ModelConfig(
                max_batch_size=args.max_batch_size,
                batcher=DynamicBatcher(max_queue_delay_microseconds=0),
            ),
            strict=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: triton.stop())
        triton.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
