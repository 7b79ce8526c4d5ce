"""Preprocessing in PyTorch: JPEGs decoded in batches on the GPU, resized there, no host copy.

Opt-in per model (``preprocess_device: "cuda"`` in its config). The decode threads still
read every header on the CPU (:meth:`Preprocessor.open`: format allow-list, pixel cap, the
request's admission), then a JPEG the GPU can take is handed on undecoded
(:class:`PendingJpeg`). :meth:`TorchPreprocessor.collate`, in the model's engine thread,
decodes all of a batch's JPEGs in one ``torchvision.io.decode_jpeg`` call on the device
(nvJPEG), resizes each (antialiased, as the recipe says), centre-crops and normalises the
batch there, and returns the device tensor the engine takes as it is (TorchScript: its
input; ONNX Runtime: bound by address through IO binding).

Everything else takes the exact CPU path (:meth:`Preprocessor.exact`): non-JPEG formats,
CMYK JPEGs, JPEGs with an EXIF rotation, and any JPEG the device fails to decode (the CPU
then decides whether it is really broken, and only that request fails).

It changes pixels: nvJPEG's IDCT and chroma upsampling and a float resize differ from
Pillow's in the last grey levels, so top-1 agreement with the exact path is measured
(tests/test_preprocess_torch.py, docs/GPU.md), not assumed. The same code runs with
``device="cpu"`` (libjpeg-turbo through torchvision), which is how it is tested without
a GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as functional
from PIL import ExifTags

from service.batching import Collated
from service.errors import BadImage, ModelConfigError, ServiceError
from service.preprocess import Decoded, Limits, OpenedImage, PendingJpeg, Preprocessor
from service.repository import ModelConfig, Preprocessing
from service.resize import resized_size

logger = logging.getLogger(__name__)

#: JPEG modes nvJPEG decodes to RGB as libjpeg does; CMYK/YCCK go to the CPU path.
GPU_JPEG_MODES = frozenset({"RGB", "L"})


@dataclass(frozen=True)
class OpenedJpeg(OpenedImage):
    """A header-checked JPEG left for the device, with its bytes."""

    data: bytearray


class TorchPreprocessor(Preprocessor):
    """The CPU preprocessor's checks, with JPEG pixels decoded and resized in torch."""

    def __init__(self, spec: Preprocessing, limits: Limits, *, device: str = "cuda") -> None:
        super().__init__(spec, limits)
        from torchvision.io import ImageReadMode, decode_jpeg
        from torchvision.transforms.v2.functional import center_crop

        self.device = torch.device(device)
        self._decode_jpeg = decode_jpeg
        self._rgb = ImageReadMode.RGB
        self._center_crop = center_crop
        std = torch.tensor(spec.std, dtype=torch.float32)
        mean = torch.tensor(spec.mean, dtype=torch.float32)
        # (x / 255 - mean) / std as one multiply-add on the whole batch.
        self._scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1).to(self.device)
        self._shift = (-mean / std).view(1, 3, 1, 1).to(self.device)

    # -- decode threads ----------------------------------------------------------------
    def open(self, data: bytes | bytearray) -> OpenedImage:
        """The CPU checks; a JPEG the device can decode is kept with its bytes."""
        opened = super().open(data)
        if not self._device_can_decode(opened):
            return opened
        # Only the bytes are held until the batch runs; Pillow's header goes now.
        opened.image.close()
        return OpenedJpeg(
            opened.image,
            opened.format,
            opened.decode_pixels,
            len(data),
            opened.work,
            bytearray(data),
        )

    def decode(self, opened: OpenedImage) -> Decoded:
        if isinstance(opened, OpenedJpeg):
            return PendingJpeg(opened.data)
        return self.exact(opened)

    @staticmethod
    def _device_can_decode(opened: OpenedImage) -> bool:
        image = opened.image
        if opened.format != "JPEG" or image.mode not in GPU_JPEG_MODES:
            return False
        # nvJPEG ignores EXIF: a rotated photo keeps the exact path, which applies it.
        return image.getexif().get(ExifTags.Base.Orientation, 1) == 1

    # -- the engine thread -------------------------------------------------------------
    def collate(self, items: Sequence[Decoded]) -> Collated:
        """One (n, 3, crop, crop) float32 tensor on the device, in item order.

        JPEGs: one batched device decode. Arrays (exact-path images, V2 tensors): stacked
        and copied to the device once. A JPEG no decoder can read is rejected alone.
        """
        rows: dict[int, torch.Tensor] = {}
        rejected: dict[int, Exception] = {}
        pending = [(i, item) for i, item in enumerate(items) if isinstance(item, PendingJpeg)]
        decoded = self._decode_all([item.data for _, item in pending])
        images: list[tuple[int, torch.Tensor]] = []
        for (index, _), outcome in zip(pending, decoded, strict=True):
            if isinstance(outcome, Exception):
                rejected[index] = outcome
            elif outcome.dtype == torch.uint8:
                images.append((index, outcome))
            else:  # the exact CPU path's normalised row (a device decode failed)
                rows[index] = outcome
        if images:
            normalised = self.normalise([image for _, image in images])
            rows.update((index, row) for (index, _), row in zip(images, normalised, strict=True))
        arrays = [i for i, item in enumerate(items) if not isinstance(item, PendingJpeg)]
        if arrays:
            stacked = np.stack([items[i] for i in arrays])  # type: ignore[misc]
            uploaded = torch.from_numpy(stacked).to(self.device, non_blocking=False)
            rows.update(zip(arrays, uploaded, strict=True))
        kept = [rows[i] for i in range(len(items)) if i not in rejected]
        if not kept:
            return Collated(None, rejected)
        return Collated(torch.stack(kept), rejected)

    def normalise(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """uint8 RGB (3, h, w) images of any sizes -> the normalised (n, 3, crop, crop)."""
        crops = torch.stack([self.crop_resize(image) for image in images])
        return crops.mul_(self._scale).add_(self._shift)

    def crop_resize(self, image: torch.Tensor) -> torch.Tensor:
        """The recipe's resize (shorter side, antialiased) and centre crop, rounded to 8-bit
        levels as the CPU path's 8-bit crop is; float32 (3, crop, crop) on the device."""
        spec = self.spec
        height, width = image.shape[-2:]
        target_w, target_h = resized_size(width, height, spec.resize_size)
        pixels = image.to(self.device).unsqueeze(0).float()
        if (target_h, target_w) != (height, width):
            mode = spec.interpolation
            pixels = functional.interpolate(
                pixels,
                size=(target_h, target_w),
                mode=mode,
                antialias=mode != "nearest",
                **({} if mode == "nearest" else {"align_corners": False}),
            )
            pixels = pixels.round_().clamp_(0, 255)
        cropped: torch.Tensor = self._center_crop(pixels, [spec.crop_size, spec.crop_size])
        return cropped[0]

    def _decode_all(self, datas: list[bytearray]) -> list[torch.Tensor | Exception]:
        """uint8 (3, h, w) per JPEG, batched; on failure one by one, then the CPU path."""
        if not datas:
            return []
        encoded = [torch.frombuffer(data, dtype=torch.uint8) for data in datas]
        try:
            return list(self._decode_jpeg(encoded, mode=self._rgb, device=self.device))
        except RuntimeError:
            pairs = zip(encoded, datas, strict=True)
            return [self._decode_one(tensor, data) for tensor, data in pairs]

    def _decode_one(self, encoded: torch.Tensor, data: bytearray) -> torch.Tensor | Exception:
        try:
            image: torch.Tensor = self._decode_jpeg(encoded, mode=self._rgb, device=self.device)
            return image
        except RuntimeError:
            pass
        try:  # the device refused it: the CPU decides (and names what is wrong)
            exact = self.exact(Preprocessor.open(self, data))
            return torch.from_numpy(exact).to(self.device)
        except ServiceError as exc:
            return exc
        except Exception as exc:
            return BadImage(f"corrupt JPEG image: {exc}")

    def warmup(self) -> None:
        """One tiny decode and resize: nvJPEG's first call sets up for a good while."""
        image = torch.zeros((3, 8, 8), dtype=torch.uint8)
        from torchvision.io import encode_jpeg

        self._decode_all([bytearray(encode_jpeg(image).numpy().tobytes())])
        self.normalise([image])


def cuda_preprocessor(config: ModelConfig, limits: Limits) -> TorchPreprocessor:
    """The GPU backend for a model whose config says ``preprocess_device: cuda``, warm."""
    if not torch.cuda.is_available():
        raise ModelConfigError(
            f"model {config.name}: preprocess_device 'cuda' asked for, but torch "
            f"{torch.__version__} sees no CUDA device; use 'cpu'"
        )
    preprocessor = TorchPreprocessor(config.preprocessing, limits, device="cuda")
    preprocessor.warmup()
    logger.info("model %s: JPEGs are decoded and resized on %s", config.name, preprocessor.device)
    return preprocessor


def as_host_array(batch: Any) -> npt.NDArray[np.float32]:
    """A batch from :meth:`TorchPreprocessor.collate` as a host array (benchmarks, tests)."""
    return np.asarray(batch.detach().to("cpu").numpy(), dtype=np.float32)
