"""One gRPC channel carries as many calls at once as the service serves, none refused.

tritonclient (and most gRPC clients) send every call on one channel, one HTTP/2
connection. gRPC's server refuses a stream past its per-connection cap
(``RST_STREAM REFUSED_STREAM``, UNAVAILABLE to the client) instead of the client waiting
for room, so the cap must not sit below the calls the service admits.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
from tritonclient.grpc import service_pb2

from benchmarks.wire import MODEL_INFER_METHOD
from service.settings import Settings
from tests.v2.conftest import V2Server

MODEL = "resnet20"
#: Over the old per-connection cap of 32 streams, within grpc_max_concurrent_rpcs (64):
#: the service admits every one of these calls, so any failure is the transport's.
CONCURRENT_CALLS = 64
CALLS_EACH = 4
DEADLINE_S = 60.0


def infer_request(jpeg: bytes) -> bytes:
    tensor = service_pb2.ModelInferRequest().InferInputTensor(
        name="image", datatype="BYTES", shape=[1, 1]
    )
    tensor.contents.bytes_contents.append(jpeg)
    request = service_pb2.ModelInferRequest(model_name=MODEL, inputs=[tensor])
    return request.SerializeToString()


async def call_on_one_channel(address: str, requests: list[bytes]) -> Counter[str]:
    """``CONCURRENT_CALLS`` callers, ``CALLS_EACH`` calls each, on one channel: outcomes."""
    outcomes: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=10)
        infer = channel.unary_unary(MODEL_INFER_METHOD)

        async def caller(first: int) -> None:
            for k in range(CALLS_EACH):
                request = requests[(first + k) % len(requests)]
                try:
                    await infer(request, timeout=DEADLINE_S)
                except grpc.aio.AioRpcError as exc:
                    outcomes[f"{exc.code().name}: {exc.details()}"] += 1
                else:
                    outcomes["OK"] += 1

        await asyncio.gather(*(caller(i) for i in range(CONCURRENT_CALLS)))
    return outcomes


def test_one_channel_runs_every_call_the_service_admits_without_refusals(
    v2_server: V2Server, cifar_sample: list[tuple[str, bytes, int]]
) -> None:
    assert Settings().grpc_max_concurrent_rpcs >= CONCURRENT_CALLS  # all admitted
    requests = [infer_request(jpeg) for _, jpeg, _ in cifar_sample[:16]]
    outcomes = asyncio.run(
        asyncio.wait_for(call_on_one_channel(v2_server.grpc, requests), timeout=2 * DEADLINE_S)
    )
    assert outcomes == Counter({"OK": CONCURRENT_CALLS * CALLS_EACH}), outcomes.most_common(5)
