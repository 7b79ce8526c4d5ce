"""The torch preprocessing backend (service/preprocess_torch.py), run on CPU here.

The same code runs on a GPU with ``device="cuda"``; the ``gpu`` tests at the end check
that part where there is one. Agreement with the exact Pillow path is measured on real
images through real models, since this backend changes pixels by design.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.agreement import image_files, measure
from service.engines import EngineOptions, load_engine
from service.engines.base import Engine
from service.errors import BadImage, ModelConfigError
from service.pipeline import EncodedImage, Inputs
from service.pipeline.local import LocalCall
from service.pool import create_preprocessor
from service.preprocess import Limits, PendingJpeg, Preprocessor
from service.preprocess_torch import TorchPreprocessor
from service.repository import ModelEntry, load_model
from tests.fakes import FakeEngine, engine_busy, fake_entry, png, until
from tests.pipeline.test_hub import make_pipeline

LIMITS = Limits(max_pixels=40_000_000)
needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device; torch sees none here"
)


def jpeg(color: tuple[int, int, int], size: tuple[int, int] = (40, 30), **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG", quality=95, **save)
    return buffer.getvalue()


def cut_jpeg() -> bytes:
    """A JPEG whose header reads but whose scan data stops half way."""
    pixels = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    return data[: len(data) // 2]


def cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("CMYK", (40, 30), (10, 200, 30, 0)).save(buffer, "JPEG")
    return buffer.getvalue()


def rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees
    return jpeg((30, 60, 90), exif=exif.tobytes())


@pytest.fixture(scope="module")
def backend() -> TorchPreprocessor:
    return TorchPreprocessor(fake_entry(Path(".")).config.preprocessing, LIMITS, device="cpu")


# -- the switch -------------------------------------------------------------------------
def test_config_cpu_keeps_the_exact_preprocessor() -> None:
    config = fake_entry(Path(".")).config
    assert config.preprocess_device == "cpu"  # the default
    assert type(create_preprocessor(config, LIMITS)) is Preprocessor


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_config_cuda_without_a_gpu_is_a_config_error() -> None:
    config = fake_entry(Path(".")).config.model_copy(update={"preprocess_device": "cuda"})
    with pytest.raises(ModelConfigError, match="preprocess_device 'cuda'"):
        create_preprocessor(config, LIMITS)


# -- what is deferred, what takes the exact path ------------------------------------------
def test_a_plain_jpeg_is_left_for_the_batch_decode(backend: TorchPreprocessor) -> None:
    data = jpeg((200, 100, 50))
    decoded = backend.decode(backend.open(data))
    assert isinstance(decoded, PendingJpeg) and bytes(decoded.data) == data


@pytest.mark.parametrize(
    "make", [lambda: png((10, 20, 30)), cmyk_jpeg, rotated_jpeg], ids=["png", "cmyk", "exif"]
)
def test_other_images_take_the_exact_cpu_path(
    backend: TorchPreprocessor, make: Callable[[], bytes]
) -> None:
    data = make()
    decoded = backend.decode(backend.open(data))
    assert isinstance(decoded, np.ndarray)
    np.testing.assert_array_equal(decoded, Preprocessor(backend.spec, LIMITS)(data))


def test_collate_keeps_item_order_across_both_paths(backend: TorchPreprocessor) -> None:
    exact = Preprocessor(backend.spec, LIMITS)
    datas = [jpeg((250, 250, 250)), png((0, 0, 0)), jpeg((120, 120, 120), size=(64, 16))]
    items = [backend.decode(backend.open(d)) for d in datas]
    collated = backend.collate(items)
    assert collated.rejected == {}
    assert isinstance(collated.batch, torch.Tensor) and collated.batch.shape == (3, 3, 8, 8)
    for row, data in zip(collated.batch.numpy(), datas, strict=True):
        # Flat colours: every path gives the same levels, give or take one JPEG level.
        np.testing.assert_allclose(row, exact(data), atol=2 / 255 / 0.25)


def test_a_broken_jpeg_is_rejected_alone(backend: TorchPreprocessor) -> None:
    good = jpeg((90, 90, 90))
    broken = backend.decode(backend.open(cut_jpeg()))  # the header passes the CPU checks
    assert isinstance(broken, PendingJpeg)
    items = [PendingJpeg(bytearray(good)), broken, PendingJpeg(bytearray(good))]
    collated = backend.collate(items)
    assert list(collated.rejected) == [1]
    assert isinstance(collated.rejected[1], BadImage)
    assert collated.batch.shape[0] == 2


def test_nothing_left_gives_no_batch(backend: TorchPreprocessor) -> None:
    collated = backend.collate([PendingJpeg(bytearray(b"\xff\xd8\xff\xd9"))])
    assert collated.batch is None and list(collated.rejected) == [0]


# -- through the pipeline and the batcher -----------------------------------------------
class TensorEngine(FakeEngine):
    """The fake engine, recording that it was handed a torch tensor (no numpy hop)."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[type] = []

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.inputs.append(type(batch))
        return super().run(np.asarray(batch))


def test_the_pipeline_hands_the_engine_the_backend_tensor_and_fails_only_the_bad_image(
    tmp_path: Path,
) -> None:
    pipeline, _ = make_pipeline(tmp_path)
    served = pipeline.models.get("fake")
    served.preprocessor = TorchPreprocessor(served.entry.config.preprocessing, LIMITS, device="cpu")
    engine = TensorEngine()
    pipeline.models._loader._engine_factory = lambda *_: engine

    async def classify(data: bytes) -> np.ndarray:
        outcome = await pipeline.serve(LocalCall(Inputs(images=[EncodedImage(data)])))
        return outcome.logits

    async def scenario() -> None:
        await pipeline.models.load()
        engine.gate.clear()  # hold the first batch so the next three queue together
        first = asyncio.ensure_future(classify(png((0, 0, 0))))
        await engine_busy(engine)
        good = jpeg((128, 128, 128))
        jobs = [classify(good), classify(cut_jpeg()), classify(png((64, 64, 64)))]
        waiting = asyncio.gather(*jobs, return_exceptions=True)
        batcher = served.require_batcher()
        await until(lambda: batcher.queued == 3)  # all three queued behind the held batch
        engine.gate.set()
        await first
        grey, broken, dark = await waiting
        assert isinstance(broken, BadImage)  # its neighbours in the batch are answered
        assert isinstance(grey, np.ndarray) and abs(grey[0, 0]) < 0.05  # mid grey: ~0
        assert isinstance(dark, np.ndarray) and dark[0, 0] == pytest.approx(-1.0, abs=0.01)
        assert engine.batches[-1] == pytest.approx([grey[0, 0], dark[0, 0]])  # one batch
        assert all(kind is torch.Tensor for kind in engine.inputs)
        await pipeline.models.stop(1)

    asyncio.run(scenario())


# -- agreement with the exact path, through real models --------------------------------
#: Measured here (CPU backend): 300/300 on the CIFAR sample through the pretrained
#: ResNet-20 and 15/15 on the photos through ResNet-18 (random weights), see docs/GPU.md.
#: The bounds allow a few flips (3 of 300, 1 of 15) so a real regression, not noise, fails.
CIFAR_MIN_AGREEMENT = 0.99
PHOTOS_MIN_AGREEMENT = 14 / 15


def _engine(repository: Path, name: str) -> tuple[ModelEntry, Engine]:
    entry = load_model(repository / name)
    artifact = entry.versions[-1].artifact_path("onnx")
    return entry, load_engine("onnx", artifact, EngineOptions(), device="cpu")


def test_top1_agrees_with_the_exact_path_on_the_cifar_sample(
    cifar_repository: Path, cifar_sample_dir: Path
) -> None:
    entry, engine = _engine(cifar_repository, "resnet20")
    result = measure(entry, engine, image_files(cifar_sample_dir), "cpu")
    assert result.images == 300 and result.deferred == 300  # every one a JPEG, on the backend
    assert result.top1_agreement >= CIFAR_MIN_AGREEMENT
    assert result.all_resized_agreement >= CIFAR_MIN_AGREEMENT


def test_top1_agrees_with_the_exact_path_on_the_photos(
    model_repository: Path, photos_dir: Path
) -> None:
    entry, engine = _engine(model_repository, "resnet18")
    result = measure(entry, engine, image_files(photos_dir), "cpu")
    assert result.images == 15 and result.deferred >= 3  # the plain JPEGs
    assert result.top1_agreement >= PHOTOS_MIN_AGREEMENT
    assert result.all_resized_agreement >= PHOTOS_MIN_AGREEMENT  # torch resize on all 15


# -- on a GPU ---------------------------------------------------------------------------
@pytest.mark.gpu
@needs_cuda
def test_gpu_backend_decodes_on_the_device_and_agrees_on_the_cifar_sample(
    cifar_repository: Path, cifar_sample_dir: Path
) -> None:
    entry, engine = _engine(cifar_repository, "resnet20")
    config = entry.config.model_copy(update={"preprocess_device": "cuda"})
    backend = create_preprocessor(config, LIMITS)
    assert isinstance(backend, TorchPreprocessor) and backend.device.type == "cuda"
    data = next(iter(image_files(cifar_sample_dir))).read_bytes()
    batch = backend.collate([backend.decode(backend.open(data))]).batch
    assert batch.is_cuda and batch.dtype == torch.float32
    result = measure(entry, engine, image_files(cifar_sample_dir), "cuda")
    assert result.top1_agreement >= CIFAR_MIN_AGREEMENT  # nvJPEG against Pillow


@pytest.mark.gpu
@needs_cuda
def test_torchscript_on_cuda_takes_the_device_tensor_as_is(cifar_repository: Path) -> None:
    entry = load_model(cifar_repository / "resnet20")
    artifact = entry.versions[-1].artifact_path("torchscript")
    engine = load_engine("torchscript", artifact, EngineOptions(), device="cuda")
    batch = torch.randn(4, 3, 32, 32)
    on_device = engine.run(batch.cuda())  # type: ignore[arg-type]
    np.testing.assert_allclose(on_device, engine.run(batch.numpy()), rtol=1e-4, atol=1e-4)
