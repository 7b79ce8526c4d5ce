"""Peak memory of decoding one image, before and after the bounded decode path.

Each measurement runs in a fresh subprocess: it imports the preprocessing module, warms
Pillow's plugins on a tiny image, resets the peak-RSS mark (``/proc/self/clear_refs``), reads
VmRSS, decodes the one image and reads VmHWM. The difference is the peak extra memory of that
decode, which ``OpenedImage.cost_bytes`` must bound (the decode budget relies on it).

``BEFORE`` is the module at a given git revision (default: the commit before the change);
``AFTER`` is this checkout's. Usage::

    python -m benchmarks.decode_memory [--before acc9a3f] [--out benchmarks/results/...]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 6324  # 6324 x 6324 = 39.99 MP, just under the default 40 MP cap
PHOTO = (
    Path(os.environ.get("RESNET_SERVE_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
    / "data"
    / "photos"
    / "astronaut.png"
)


def cases() -> dict[str, bytes]:
    """The hostile and the ordinary: small files that decode to large images, and a photo."""

    def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
        out = io.BytesIO()
        image.save(out, fmt, **kwargs)
        return out.getvalue()

    ramp = (np.arange(SIDE, dtype=np.uint32) * 10 % 65536).astype(np.uint16)
    grey16 = Image.fromarray(np.broadcast_to(ramp, (SIDE, SIDE)).copy())
    photo = Image.open(PHOTO).convert("RGB") if PHOTO.exists() else Image.new("RGB", (512, 512))
    return {
        "16-bit grey PNG 6324x6324": encode(grey16, "PNG"),
        "RGBA PNG 40 MP": encode(Image.new("RGBA", (SIDE, SIDE), (10, 200, 30, 128)), "PNG"),
        "RGB JPEG 40 MP (draft)": encode(Image.new("RGB", (SIDE, SIDE), (90, 120, 200)), "JPEG"),
        "palette PNG 40 MP": encode(Image.new("P", (SIDE, SIDE), 7), "PNG"),
        "1-bit PNG 40 MP": encode(Image.new("1", (SIDE, SIDE), 1), "PNG"),
        "RGB JPEG 640x480": encode(photo.resize((640, 480)), "JPEG", quality=90),
        "progressive JPEG 40 MP": encode(
            Image.new("RGB", (SIDE, SIDE), (90, 120, 200)), "JPEG", progressive=True
        ),
        "CMYK JPEG 40 MP": encode(Image.new("CMYK", (SIDE, SIDE), (9, 12, 20, 0)), "JPEG"),
        "EXIF-rotated RGB PNG 40 MP": encode(
            Image.new("RGB", (SIDE, SIDE), (90, 120, 200)), "PNG", exif=_rotated()
        ),
        "GIF 40 MP": encode(Image.new("P", (SIDE, SIDE), 7), "GIF"),
        "lossless WebP 16383x2441": encode(
            Image.new("RGB", (16383, 2441), (90, 90, 200)), "WEBP", lossless=True
        ),
        "lossy WebP 16383x2441": encode(Image.new("RGB", (16383, 2441), (90, 90, 200)), "WEBP"),
    }


def _rotated() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    return exif


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_one(module_path: str, image_path: str) -> dict[str, int]:
    """In the child: peak extra RSS of one decode with the module at ``module_path``."""
    import gc
    import importlib.util

    spec = importlib.util.spec_from_file_location("preprocess_under_test", module_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    from service.repository import Preprocessing

    recipe = Preprocessing(
        resize_size=256,
        crop_size=224,
        interpolation="bilinear",
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    )
    fields = module.Limits.__dataclass_fields__
    limits = (
        module.Limits(max_pixels=40_000_000, max_aspect_ratio=100.0)
        if "max_aspect_ratio" in fields
        else module.Limits(max_pixels=40_000_000)
    )
    pre = module.Preprocessor(recipe, limits)
    for fmt in ("PNG", "JPEG"):  # plugin loading and first-call costs, outside the figure
        warm = io.BytesIO()
        Image.new("RGB", (300, 300)).save(warm, fmt)
        pre(warm.getvalue())
    data = Path(image_path).read_bytes()
    cost = pre.open(data).cost_bytes if hasattr(pre, "open") else -1
    gc.collect()
    reset = True
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        reset = False
    before = _status("VmRSS")
    pre(data)
    peak = _status("VmHWM")
    return {"peak_extra_bytes": peak - before, "cost_bytes": cost, "hwm_reset": int(reset)}


def run(before_ref: str, out: Path) -> list[dict[str, object]]:
    root = Path(__file__).resolve().parents[1]
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "preprocess_before.py"
        old.write_text(
            subprocess.run(
                ["git", "show", f"{before_ref}:service/preprocess.py"],
                cwd=root,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        new = root / "service" / "preprocess.py"
        for name, data in cases().items():
            path = Path(tmp) / "image"
            path.write_bytes(data)
            row: dict[str, object] = {"case": name, "file_bytes": len(data)}
            for label, module in (("before", old), ("after", new)):
                child = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.decode_memory",
                        "--one",
                        str(module),
                        str(path),
                    ],
                    cwd=root,
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                if child.returncode != 0:
                    row[label] = f"error: {child.stderr.strip().splitlines()[-1]}"
                    continue
                result = json.loads(child.stdout.strip().splitlines()[-1])
                row[label] = result["peak_extra_bytes"]
                if label == "after":
                    row["cost_bytes"] = result["cost_bytes"]
            rows.append(row)
            print(_line(row), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_table(rows, before_ref))
    return rows


def _mb(value: object) -> str:
    return f"{value / 2**20:.0f}" if isinstance(value, int) else str(value)


def _line(row: dict[str, object]) -> str:
    after, cost = row.get("after"), row.get("cost_bytes")
    ok = isinstance(after, int) and isinstance(cost, int) and cost >= after
    return (
        f"| {row['case']} | {row['file_bytes']:,} B | {_mb(row.get('before'))} "
        f"| {_mb(after)} | {_mb(cost)} | {'yes' if ok else 'NO'} |"
    )


def _table(rows: list[dict[str, object]], before_ref: str) -> str:
    head = [
        "# Peak memory of one decode (MiB above RSS just before decoding)",
        "",
        f"Before: service/preprocess.py at {before_ref}; after: this commit. Each figure is",
        "VmHWM - VmRSS in a fresh process (peak mark reset first), resnet recipe 256/224",
        "bilinear, `python -m benchmarks.decode_memory`. `cost_bytes` is what `open()`",
        "reserves for the decode; it must be >= the measured peak.",
        "",
        "| case | file | before MiB | after MiB | cost_bytes MiB | cost >= peak |",
        "|---|---|---|---|---|---|",
    ]
    return "\n".join(head + [_line(r) for r in rows]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="acc9a3f", help="git revision of the old module")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/decode-memory-2cpu.md")
    )
    parser.add_argument("--one", nargs=2, metavar=("MODULE", "IMAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(*args.one)))
        return
    print("| case | file | before MiB | after MiB | cost_bytes MiB | cost >= peak |")
    run(args.before, args.out)


if __name__ == "__main__":
    main()
