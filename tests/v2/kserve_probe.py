"""Run by tests/v2/test_kserve_client.py with a Python that has the ``kserve`` SDK.

The SDK pins versions (psutil, among others) that the project's environment does not
share, so it lives in its own environment and is driven as a subprocess. Prints one
JSON object: what the SDK's REST and gRPC clients got back.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig


async def main(rest_url: str, grpc_url: str, model: str, image: bytes) -> dict[str, object]:
    tensor = InferInput("image", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[image]], dtype=object), binary_data=True)
    request = InferRequest(model_name=model, infer_inputs=[tensor])
    rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
    answer: dict[str, object] = {
        "rest_live": await rest.is_server_live(rest_url),
        "rest_ready": await rest.is_server_ready(rest_url),
        "rest_model_ready": await rest.is_model_ready(rest_url, model),
    }
    response = await rest.infer(rest_url, request, model_name=model)
    answer["rest"] = {o.name: o.as_numpy().tolist() for o in response.outputs}
    await rest.close()
    grpc = InferenceGRPCClient(grpc_url)
    answer["grpc_ready"] = await grpc.is_server_ready()
    response = await grpc.infer(request)
    answer["grpc"] = {o.name: o.as_numpy().tolist() for o in response.outputs}
    await grpc.close()
    return answer


if __name__ == "__main__":
    rest_url, grpc_url, model, image_path = sys.argv[1:]
    image = Path(image_path).read_bytes()
    print(json.dumps(asyncio.run(main(rest_url, grpc_url, model, image))))
