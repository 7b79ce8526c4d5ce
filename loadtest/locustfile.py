"""Locust load test: users POSTing real images to ``/classify`` or to the V2 REST door.

Headless, against a local server (see docs/BENCHMARKS.md)::

    locust -f loadtest/locustfile.py --headless -u 16 -r 4 -t 60s \
        --host http://127.0.0.1:8000 --csv .cache/loadtest/locust

or ``make loadtest HOST_URL=http://127.0.0.1:8000``. Point ``--host`` at a deployed
server to test it instead; add ``--api-key`` if it needs one. Options (also environment
variables, ``LOCUST_<NAME>``, as Locust maps them):

* ``--images DIR``: images to send (default: the shared photos, JPEG/PNG).
* ``--model NAME`` / ``--model-version N``: the model to ask for (default: the server's).
* ``--images-per-request N``: images per request (multipart ``file`` fields).
* ``--top-k N``, ``--request-timeout-ms MS`` (sent as ``X-Request-Timeout-Ms``).
* ``--protocol classify|v2-rest``: ``v2-rest`` sends the images as an Open Inference
  Protocol ``BYTES`` tensor with the binary data extension, as ``tritonclient.http`` does
  (``POST /v2/models/<model>/infer``), asking for the classification extension (top-k);
  it needs ``--model``.

Any non-200 answer, or a 200 whose body lacks one result per image, is a failure.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import struct
from pathlib import Path
from typing import Any

from locust import HttpUser, between, events, task
from locust.env import Environment

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
_DEFAULT_IMAGES = (
    Path(os.environ.get("RESNET_SERVE_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
    / "data"
    / "photos"
)
_CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
}


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    group = parser.add_argument_group("resnet-serve")
    group.add_argument("--images", default=str(_DEFAULT_IMAGES), help="folder of images to send")
    group.add_argument("--model", default="", help="model name (default: the server's)")
    group.add_argument("--model-version", default="", help="model version (default: latest)")
    group.add_argument("--images-per-request", type=int, default=1)
    group.add_argument("--top-k", type=int, default=5)
    group.add_argument("--request-timeout-ms", default="", help="X-Request-Timeout-Ms header")
    group.add_argument("--api-key", default="", help="X-API-Key header, if the server needs one")
    group.add_argument(
        "--protocol",
        choices=("classify", "v2-rest"),
        default="classify",
        help="POST /classify (multipart), or the V2 REST infer route (binary BYTES tensor)",
    )


def load_images(folder: Path) -> list[tuple[str, bytes, str]]:
    """(file name, bytes, content type) of every image in ``folder``; edge cases skipped."""
    images = [
        (p.name, p.read_bytes(), _CONTENT_TYPES[p.suffix.lower()])
        for p in sorted(folder.iterdir())
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("edge_")
    ]
    if not images:
        raise SystemExit(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return images


_images: list[tuple[str, bytes, str]] = []


@events.init.add_listener
def _load(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is not None:
        _images[:] = load_images(Path(options.images))


class ClassifyUser(HttpUser):
    """One client: sends a request, waits 0-50 ms, sends the next."""

    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        if not _images:  # library use without the command line
            _images[:] = load_images(_DEFAULT_IMAGES)
        self.per_request = max(1, int(getattr(options, "images_per_request", 1)))
        params: dict[str, str] = {"top_k": str(getattr(options, "top_k", 5))}
        if getattr(options, "model", ""):
            params["model"] = options.model
        if getattr(options, "model_version", ""):
            params["version"] = str(options.model_version)
        self.params = params
        headers: dict[str, str] = {}
        if getattr(options, "request_timeout_ms", ""):
            headers["X-Request-Timeout-Ms"] = str(options.request_timeout_ms)
        if getattr(options, "api_key", ""):
            headers["X-API-Key"] = options.api_key
        self.headers = headers
        start = random.randrange(len(_images))
        self.cycle = itertools.islice(itertools.cycle(_images), start, None)

        self.protocol = getattr(options, "protocol", "classify")
        self.model = getattr(options, "model", "")
        if self.protocol == "v2-rest" and not self.model:
            raise SystemExit("--protocol v2-rest needs --model (the V2 route names the model)")
        self.top_k = int(getattr(options, "top_k", 5))

    @task
    def infer(self) -> None:
        if self.protocol == "v2-rest":
            self.v2_rest()
        else:
            self.classify()

    def v2_rest(self) -> None:
        """One V2 infer request: the images as one BYTES tensor, binary data extension."""
        images = [next(self.cycle)[1] for _ in range(self.per_request)]
        body, header_length = v2_binary_request(images, self.top_k)
        version = self.params.get("version")
        route = f"/v2/models/{self.model}" + (f"/versions/{version}" if version else "")
        headers = {
            **self.headers,
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(header_length),
        }
        name = f"/v2/models/{{model}}/infer [{self.per_request} img]"
        with self.client.post(
            route + "/infer", data=body, headers=headers, name=name, catch_response=True
        ) as response:
            if response.status_code != 200:
                error = response.json().get("error", "") if _is_json(response) else ""
                response.failure(f"HTTP {response.status_code} {error}".strip())
                return
            (output,) = response.json().get("outputs", [{}])
            if output.get("shape") != [self.per_request, self.top_k]:
                response.failure(f"output shape {output.get('shape')}")
            else:
                response.success()

    def classify(self) -> None:
        files = [("file", next(self.cycle)) for _ in range(self.per_request)]
        name = f"/classify [{self.per_request} img]"
        with self.client.post(
            "/classify",
            params=self.params,
            headers=self.headers,
            files=files,
            name=name,
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                code = (
                    response.json().get("error", {}).get("code", "?") if _is_json(response) else ""
                )
                response.failure(f"HTTP {response.status_code} {code}".strip())
                return
            results = response.json().get("results", [])
            if len(results) != self.per_request:
                response.failure(f"{len(results)} results for {self.per_request} images")
            else:
                response.success()


def v2_binary_request(images: list[bytes], top_k: int) -> tuple[bytes, int]:
    """A V2 infer body with the binary tensor extension: JSON header, then the tensor.

    BYTES elements are serialised as Triton does, each a 4-byte little-endian length
    then the bytes; the classification output comes back in the JSON part.
    """
    tensor = b"".join(struct.pack("<I", len(image)) + image for image in images)
    header = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [len(images), 1],
                "parameters": {"binary_data_size": len(tensor)},
            }
        ],
        "outputs": [{"name": "probabilities", "parameters": {"classification": top_k}}],
    }
    head = json.dumps(header).encode()
    return head + tensor, len(head)


def _is_json(response: Any) -> bool:
    return "json" in response.headers.get("content-type", "")
