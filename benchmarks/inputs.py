"""What the benchmark feeds: model variants from a repository and generated JPEGs.

Nothing is committed: the models are exported with ``resnet-serve export`` into a cache
repository on first use, and the JPEGs are cut from the shared photos into a temp folder,
so a run needs only the source tree and ``../shared``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from service.repository import ModelEntry, ModelVersion, load_model

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = (
    Path(os.environ.get("RESNET_SERVE_SHARED_DIR", REPO_ROOT.parent / "shared")) / "data" / "photos"
)
DEFAULT_CACHE = REPO_ROOT / ".cache" / "bench-models"
#: Typical web-camera / phone-preview frame: the size the service targets in issue #3.
SMALL_SIZE = (640, 480)
#: A 12 MP phone photo, where JPEG draft decoding matters most.
LARGE_SIZE = (4032, 3024)
JPEG_QUALITY = 90
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


@dataclass(frozen=True)
class Variant:
    """One model version to measure: ``name`` or ``name:version`` on the command line.

    The int8 benchmark adds rows by naming more variants (``resnet50:2``), nothing else.
    """

    name: str
    version: int | None = None

    @classmethod
    def parse(cls, text: str) -> Variant:
        name, _, version = text.partition(":")
        if not name or (version and not version.isdigit()):
            raise ValueError(f"variant must be NAME or NAME:VERSION, got {text!r}")
        return cls(name, int(version) if version else None)

    def resolve(self, repository: Path) -> tuple[ModelEntry, ModelVersion]:
        entry = load_model(repository / self.name)
        if self.version is None:
            return entry, entry.default_version
        for version in entry.versions:
            if version.info.version == self.version:
                return entry, version
        found = [v.info.version for v in entry.versions]
        raise ValueError(f"{self.name} has no version {self.version}; versions: {found}")


def label(entry: ModelEntry, version: ModelVersion) -> str:
    return f"{entry.config.name}:{version.info.version}"


def ensure_models(repository: Path, variants: list[Variant], formats: tuple[str, ...]) -> None:
    """Export (random weights: speed does not depend on them) every missing model.

    Runs the real export CLI in a child process so torch's memory and threads are gone
    before anything is timed.
    """
    for variant in variants:
        if (repository / variant.name / "config.json").is_file():
            continue
        if variant.version not in (None, 1):
            raise ValueError(f"{variant.name}:{variant.version} is not in {repository}")
        command = [sys.executable, "-m", "service.cli", "export", variant.name]
        command += ["--weights", "random", "--repository", str(repository)]
        for fmt in formats:
            command += ["--format", fmt]
        print(f"exporting {variant.name} ({', '.join(formats)}) into {repository} ...", flush=True)
        subprocess.run(command, check=True, cwd=REPO_ROOT)


def source_photos(folder: Path) -> list[Path]:
    """Real photos, without the deliberately odd edge cases (CMYK, RGBA, gray JPEGs)."""
    photos = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    chosen = [p for p in photos if not p.name.startswith("edge_")]
    if not chosen:
        raise FileNotFoundError(f"no photos in {folder}")
    return chosen


def make_jpegs(photos: list[Path], out_dir: Path, size: tuple[int, int], count: int) -> list[Path]:
    """``count`` RGB JPEGs of exactly ``size`` (crop to aspect, resize), quality 90."""
    out_dir.mkdir(parents=True, exist_ok=True)
    made = []
    for index in range(count):
        source = photos[index % len(photos)]
        with Image.open(source) as image:
            rgb = ImageOps.exif_transpose(image).convert("RGB")
            fitted = ImageOps.fit(rgb, size, Image.Resampling.LANCZOS)
        path = out_dir / f"{source.stem}-{size[0]}x{size[1]}-{index}.jpg"
        fitted.save(path, "JPEG", quality=JPEG_QUALITY)
        made.append(path)
    return made


def user_images(folder: Path) -> list[Path]:
    images = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not images:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return images
