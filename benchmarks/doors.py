"""Every front door of one server under the same closed-loop load, in the same run.

Why: the V2 doors (REST and gRPC, JPEG bytes or preprocessed FP32 pixels) share the
pipeline and batcher with ``/classify``; what differs is the protocol work around them.
Measuring them one after the other on one server, with the same images, concurrency,
loop, window and CPU accounting (:func:`benchmarks.http.closed_loop`), makes their
img/s directly comparable: each door's ratio is over ``/classify``'s of the same run.

Every request carries one image and asks for the top class only (``top_k=1``, the
classification extension with ``k = 1``), so answers are equally small. Client CPU is
kept low the same way for every door: every request is built once, up front (multipart
bodies; tritonclient's own binary-extension bodies; protobuf messages with
``raw_input_contents``; FP32 pixels preprocessed once with the model's own
:class:`~service.preprocess.Preprocessor`), so a request costs the client only its
protocol: one HTTP/1.1 connection per worker, one shared HTTP/2 channel for gRPC.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import numpy.typing as npt
import tritonclient.http as triton_http
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import serialize_byte_tensor

from benchmarks import http
from benchmarks.harness import ServerProcess
from benchmarks.inputs import label
from service.preprocess import Limits, Preprocessor
from service.repository import ModelEntry, ModelVersion

#: The output every V2 door asks for, as a top-1 classification (like ``top_k=1``).
OUTPUT = "probabilities"
GRPC_METHOD_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Door:
    """One way in: the protocol (``door``, the metrics' ``protocol`` label) and what the
    client sends (``input``: ``JPEG`` multipart, ``BYTES`` encoded image, ``FP32``)."""

    door: str
    input: str

    @property
    def key(self) -> str:
        return f"{self.door} {self.input}"


CLASSIFY = Door("classify", "JPEG")
DOORS = (
    CLASSIFY,
    Door("v2-rest", "BYTES"),
    Door("v2-rest", "FP32"),
    Door("v2-grpc", "BYTES"),
    Door("v2-grpc", "FP32"),
)


@dataclass(frozen=True)
class Requests:
    """Every door's requests for the same images, built before any load starts."""

    multipart: list[http.Body]
    rest: dict[str, list[tuple[bytes, int]]]  # input -> (body, JSON header size)
    grpc: dict[str, list[service_pb2.ModelInferRequest]]


def _arrays(
    entry: ModelEntry, jpegs: list[bytes], max_pixels: int
) -> dict[str, list[npt.NDArray[Any]]]:
    """Per V2 input, one batch-of-one array per image: the JPEG as a ``[1, 1]`` BYTES
    tensor, and its pixels preprocessed by the model's own recipe as ``[1, 3, H, W]``."""
    pre = Preprocessor(entry.config.preprocessing, Limits(max_pixels=max_pixels))
    return {
        "BYTES": [np.array([[data]], dtype=np.object_) for data in jpegs],
        "FP32": [pre(data)[np.newaxis] for data in jpegs],
    }


def _rest_body(name: str, datatype: str, array: npt.NDArray[Any]) -> tuple[bytes, int]:
    """The body ``tritonclient.http`` itself sends (binary tensor data extension)."""
    tensor = triton_http.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=True)
    top1 = triton_http.InferRequestedOutput(OUTPUT, binary_data=False, class_count=1)
    body, json_size = triton_http.InferenceServerClient.generate_request_body(
        [tensor], outputs=[top1]
    )
    return bytes(body), int(json_size)


def _grpc_request(
    model: str, version: int, name: str, datatype: str, array: npt.NDArray[Any]
) -> service_pb2.ModelInferRequest:
    """A ModelInfer request as tritonclient.grpc builds it: the tensor's bytes in
    ``raw_input_contents`` (BYTES elements length-prefixed, as Triton serialises them)."""
    raw = serialize_byte_tensor(array).item() if datatype == "BYTES" else array.tobytes()
    top1 = service_pb2.ModelInferRequest.InferRequestedOutputTensor(name=OUTPUT)
    top1.parameters["classification"].int64_param = 1
    return service_pb2.ModelInferRequest(
        model_name=model,
        model_version=str(version),
        inputs=[
            service_pb2.ModelInferRequest.InferInputTensor(
                name=name, datatype=datatype, shape=list(array.shape)
            )
        ],
        outputs=[top1],
        raw_input_contents=[raw],
    )


def build_requests(
    entry: ModelEntry, version: int, images: list[Path], max_pixels: int
) -> Requests:
    blobs = [(p.name, p.read_bytes()) for p in images]
    arrays = _arrays(entry, [data for _, data in blobs], max_pixels)
    names = {"BYTES": "image", "FP32": "input"}
    model = entry.config.name
    return Requests(
        multipart=http.multipart_bodies(blobs, 1),
        rest={
            kind: [_rest_body(names[kind], kind, a) for a in batch]
            for kind, batch in arrays.items()
        },
        grpc={
            kind: [_grpc_request(model, version, names[kind], kind, a) for a in batch]
            for kind, batch in arrays.items()
        },
    )


def _rest_sender(client: httpx.AsyncClient, url: str, bodies: list[tuple[bytes, int]]) -> http.Send:
    async def send(index: int) -> http.Outcome:
        body, json_size = bodies[index % len(bodies)]
        headers = {
            "Inference-Header-Content-Length": str(json_size),
            "Content-Type": "application/octet-stream",
        }
        try:
            response = await client.post(url, content=body, headers=headers)
        except httpx.HTTPError:
            return http.Outcome("0")
        return http.Outcome(None if response.status_code == 200 else str(response.status_code))

    return send


def _grpc_sender(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    requests: list[service_pb2.ModelInferRequest],
) -> http.Send:
    async def send(index: int) -> http.Outcome:
        try:
            await stub.ModelInfer(requests[index % len(requests)], timeout=GRPC_METHOD_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            return http.Outcome(error.code().name)
        return http.Outcome(None)

    return send


@asynccontextmanager
async def _channel(server: ServerProcess) -> AsyncIterator[grpc.aio.Channel]:
    """One HTTP/2 channel for all workers, as one tritonclient client has."""
    limit = 64 * 1024 * 1024
    options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}", options) as channel:
        await channel.channel_ready()
        yield channel


async def _measure(
    server: ServerProcess,
    model: str,
    version: int,
    requests: Requests,
    concurrency: int,
    budget: http.LoadBudget,
    on_row: Callable[[Door, http.LevelResult], None],
) -> None:
    labels = http.model_labels(model, version)
    infer_url = f"{server.url}/v2/models/{model}/versions/{version}/infer"
    async with http.http_client(concurrency, budget) as client, _channel(server) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        senders = {
            CLASSIFY: http.classify_sender(
                client, http.classify_url(server, model, version), requests.multipart
            ),
            **{
                Door("v2-rest", kind): _rest_sender(client, infer_url, bodies)
                for kind, bodies in requests.rest.items()
            },
            **{
                Door("v2-grpc", kind): _grpc_sender(stub, messages)
                for kind, messages in requests.grpc.items()
            },
        }
        for door in DOORS:
            load = await http.closed_loop(
                senders[door], concurrency, budget, client, server, labels
            )
            row = http.summarise(
                load,
                variant=f"{model}:{version}",
                batching="on",
                concurrency=concurrency,
                images_per_request=1,
            )
            on_row(door, row)


def rows_with_ratios(rows: list[tuple[Door, http.LevelResult]]) -> list[dict[str, Any]]:
    """The JSON rows: door, input, the level's figures, and img/s over ``/classify``'s."""
    base = next((r.images_per_s for d, r in rows if d == CLASSIFY), 0.0)
    return [
        {
            "door": door.door,
            "input": door.input,
            **asdict(row),
            "over_classify": row.images_per_s / base if base else None,
        }
        for door, row in rows
    ]


def run_doors(
    repository: Path,
    model: tuple[ModelEntry, ModelVersion],
    images: list[Path],
    log: Path,
    *,
    settings: dict[str, str],
    max_pixels: int,
    concurrency: int,
    budget: http.LoadBudget,
    cpus: str | None = None,
) -> list[dict[str, Any]]:
    """All doors, one after the other, against one server serving ``model``."""
    entry, version = model
    name, number = entry.config.name, version.info.version
    requests = build_requests(entry, number, images, max_pixels)
    rows: list[tuple[Door, http.LevelResult]] = []

    def on_row(door: Door, row: http.LevelResult) -> None:
        rows.append((door, row))
        print(
            f"  {door.key:<14} c{concurrency:<3} {row.images_per_s:7.1f} img/s  p50 "
            f"{row.p50_ms:7.1f}  p99 {row.p99_ms:7.1f} ms  batch {row.mean_batch_size:5.2f}  "
            f"errors {row.errors}  client CPU {row.client_cpu_share:.0%}",
            flush=True,
        )

    print(f"== front doors, {label(entry, version)}, concurrency {concurrency}", flush=True)
    quiet: dict[str, Any] = {"log_level": "warning", **settings}
    with ServerProcess(repository, log, cpus=cpus, **quiet) as server:
        asyncio.run(_measure(server, name, number, requests, concurrency, budget, on_row))
    return rows_with_ratios(rows)
