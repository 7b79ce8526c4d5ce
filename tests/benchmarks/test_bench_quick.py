"""The benchmark harness in --quick mode: it runs end to end and its results add up.

No timing thresholds: speed targets live in the committed results files, not in tests.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from benchmarks import report, report_doors
from benchmarks.doors import DOORS, build_requests
from benchmarks.inputs import SMALL_SIZE, Variant, make_jpegs, source_photos
from benchmarks.run import main
from benchmarks.sidebyside import PHONE_DOORS
from benchmarks.threads import GROUPS


@pytest.fixture(scope="module")
def quick_results(
    model_repository: Path, photos_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench-results")
    code = main(
        [
            "--quick",
            "--repository", str(model_repository),
            "--variant", "resnet18",
            "--photos", str(photos_dir),
            "--output-dir", str(out),
            "--name", "quick",
            # Triton has its own test (test_triton_side_by_side.py): one server less here.
            "--sections", "engine,preprocess,http,doors,phone",
        ]
    )  # fmt: skip
    assert code == 0
    results = json.loads((out / "quick.json").read_text())
    return results, (out / "quick.md").read_text()


def engine_rows() -> list[dict[str, object]]:
    """The bare engine of one model: ONNX Runtime at batch 1 and 8 (the limit, 100 img/s)
    and a faster TorchScript row that is not the served engine."""
    row = {"variant": "m:1", "engine": "onnxruntime"}
    return [
        {**row, "batch_size": 1, "images_per_s": 80.0, "batch_ms_p50": 12.5},
        {**row, "batch_size": 8, "images_per_s": 100.0, "batch_ms_p50": 80.0},
        {
            **row,
            "engine": "torchscript",
            "batch_size": 8,
            "images_per_s": 500.0,
            "batch_ms_p50": 16.0,
        },
    ]


def test_quick_run_writes_every_section(quick_results: tuple[dict, str]) -> None:
    results, _ = quick_results
    assert results["mode"] == "quick"
    assert results["weights"] == {"resnet18:1": "random (untrained)"}
    assert {r["batch_size"] for r in results["engine"]} == {1, 2}
    # The fixture exports ONNX only: TorchScript is reported as skipped, not silently absent.
    assert [s["engine"] for s in results["engine_skipped"]] == ["torchscript"]
    assert [r["image_set"] for r in results["preprocess"]] == ["small", "large"]
    levels = {(r["batching"], r["concurrency"]) for r in results["http"]}
    assert levels == {("on", 1), ("on", 4), ("off", 4)}
    assert results["served"]["resnet18:1"]["engine"] == "onnxruntime"
    assert len(results["load_before"]) == len(results["load_after"]) == 3


def test_quick_run_figures_are_positive_and_consistent(quick_results: tuple[dict, str]) -> None:
    results, _ = quick_results
    for row in results["engine"]:
        assert row["images_per_s"] > 0 and row["runs"] >= 2
        assert row["batch_ms_min"] <= row["batch_ms_p50"]
        assert row["cpu_ms_per_image"] > 0
    for row in results["preprocess"]:
        assert row["decode_ms"] > 0 and row["resize_crop_ms"] > 0 and row["normalise_ms"] > 0
        assert row["images_per_s_threaded"] > 0
    small, large = results["preprocess"]
    assert (small["width"], small["height"]) == (640, 480)
    assert large["width"] * large["height"] > small["width"] * small["height"]
    for row in results["http"]:
        assert row["errors"] == 0, row["error_codes"]
        assert row["ok"] == row["requests"] > 0
        assert row["images_per_s"] > 0
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        batch_cap = row["concurrency"] if row["batching"] == "on" else 1
        assert 1 <= row["mean_batch_size"] <= batch_cap
        assert row["client_cpu_share"] > 0 and row["server_cpu_share"] > 0
        assert row["client_cpu_ms_per_request"] > 0
        assert row["cpu_ms_per_image"] > 0
        assert 0 < row["measured"] <= row["requests"]
        split = row["server_cpu_ms_by_thread"]
        assert split["engine"] > 0 and split["decode"] > 0 and split["event loop"] > 0
    (ratio,) = results["ratios"]
    assert ratio["service_over_engine"] > 0
    assert ratio["low_load_overhead_ms"] == pytest.approx(
        ratio["service_c1_p50_ms"] - ratio["engine_batch1_ms"]
    )
    assert "batching_gain" not in ratio  # only measured at concurrency >= 16
    assert ratio["cpu_efficiency"] == pytest.approx(
        ratio["engine_cpu_ms_per_image"] / ratio["service_cpu_ms_per_image"]
    )
    assert ratio["c1_overhead_same_request_ms"] > 0


def test_markdown_shows_the_headline_and_the_weights(quick_results: tuple[dict, str]) -> None:
    results, text = quick_results
    assert "## Headline" in text
    assert "resnet18:1 (onnxruntime)" in text
    assert "random (untrained)" in text
    # One HTTP table line per level measured.
    assert text.count("| resnet18:1 | on |") == 2
    assert text.count("| resnet18:1 | off |") == 1
    assert len(results["http"]) == 3


def test_ratios_compare_like_with_like() -> None:
    """Only the engine the server ran counts, and batching is compared at c >= 16."""

    def level(batching: str, concurrency: int, ips: float, p50: float = 10.0) -> dict:
        return {
            "variant": "m:1",
            "batching": batching,
            "concurrency": concurrency,
            "images_per_request": 1,
            "images_per_s": ips,
            "p50_ms": p50,
        }

    results = {
        "served": {"m:1": {"engine": "onnxruntime", "provider": "CPU"}},
        "engine": engine_rows(),
        "http": [
            level("on", 1, 50.0, p50=15.5),
            level("on", 4, 60.0),
            level("on", 16, 90.0),
            level("off", 16, 45.0),
        ],
    }
    (row,) = report.ratios(results)
    assert row["engine_best_images_per_s"] == 100.0 and row["engine_best_batch"] == 8
    assert row["service_over_engine"] == pytest.approx(0.9)
    assert row["low_load_overhead_ms"] == pytest.approx(3.0)
    assert row["batching_gain"] == pytest.approx(2.0) and row["batching_concurrency"] == 16


@pytest.mark.parametrize("text", ["", ":1", "resnet18:x", "resnet18:1.5"])
def test_bad_variant_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="NAME or NAME:VERSION"):
        Variant.parse(text)


def test_quick_run_measures_every_front_door(quick_results: tuple[dict, str]) -> None:
    results, text = quick_results
    doors = [(r["door"], r["input"]) for r in results["doors"]]
    assert doors == [(d.door, d.input) for d in DOORS]
    assert len(set(doors)) == 6
    for row in results["doors"]:
        assert row["server"] == "resnet-serve"
        assert row["errors"] == 0, row["error_codes"]
        assert row["ok"] == row["requests"] > 0
        assert row["variant"] == "resnet18:1"
        assert row["concurrency"] == 4  # the --quick level
        assert row["images_per_s"] > 0 and row["over_classify"] > 0
        assert 0 < row["over_best_door"] <= 1
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert 1 <= row["mean_batch_size"] <= row["concurrency"]
        # The load generator's own cost is measured and reported on every row.
        assert row["client_cpu_share"] > 0 and row["client_cpu_ms_per_request"] > 0
        assert row["server_cpu_share"] > 0 and row["server_cpu_ms_per_image"] > 0
        assert row["cpu_ms_per_image"] > row["server_cpu_ms_per_image"]
        # Where the server's CPU went, by thread group (/proc): every door runs the engine
        # and the event loop; only JPEG inputs decode.
        split = row["server_cpu_ms_by_thread"]
        assert list(split) == list(GROUPS)
        assert split["engine"] > 0 and split["event loop"] > 0
        assert (split["decode"] > 0) == (row["input"] != "FP32")
    assert max(r["over_best_door"] for r in results["doors"]) == 1.0
    classify = results["doors"][0]
    assert classify["over_classify"] == 1.0
    for row in results["doors"][1:]:
        assert row["over_classify"] == pytest.approx(row["images_per_s"] / classify["images_per_s"])
    assert "## Front doors, ours and Triton's" in text
    for door, kind in doors:
        assert text.count(f"| resnet-serve | resnet18:1 | {door} | {kind} | 4 |") == 1
    (summary,) = results["side_by_side"]
    best = max(results["doors"], key=lambda r: r["images_per_s"])
    assert summary["best_images_per_s"] == best["images_per_s"]
    assert summary["best_over_engine"] == pytest.approx(
        best["images_per_s"] / max(r["images_per_s"] for r in results["engine"])
    )
    assert summary["triton_best_images_per_s"] is None and summary["ours_over_triton"] is None
    assert "Front doors and Triton" in "\n".join(report.headline(results))


def test_quick_run_measures_phone_photos_against_the_decode_limit(
    quick_results: tuple[dict, str],
) -> None:
    results, text = quick_results
    phone = results["phone"]
    limit = phone["decode_limit"]
    assert (limit["width"], limit["height"]) == (4032, 3024)
    assert limit["images_per_s"] > 0 and limit["cpu_ms_per_image"] > 0
    doors = [(r["door"], r["input"]) for r in phone["rows"]]
    assert doors == [(d.door, d.input) for d in PHONE_DOORS]
    for row in phone["rows"]:
        assert row["errors"] == 0, row["error_codes"]
        assert row["concurrency"] == 2 and row["images_per_s"] > 0
        assert row["client_cpu_ms_per_request"] > 0
    assert "## Phone photos (4032x3024 JPEGs" in text
    assert text.count("| resnet-serve | resnet18:1 | classify | raw | 2 |") == 1


def test_door_requests_carry_the_image_as_each_protocol_wants(
    model_repository: Path, photos_dir: Path, tmp_path: Path
) -> None:
    """BYTES: the JPEG length-prefixed (Triton's serialisation); FP32: [1, 3, 224, 224]."""
    entry, version = Variant("resnet18").resolve(model_repository)
    (jpeg,) = make_jpegs(source_photos(photos_dir), tmp_path, SMALL_SIZE, 1)
    data = jpeg.read_bytes()
    requests = build_requests(entry, version.info.version, [jpeg], max_pixels=10**8)
    message = requests.grpc["BYTES"][0]
    assert message.inputs[0].name == "image" and list(message.inputs[0].shape) == [1, 1]
    assert message.raw_input_contents[0] == struct.pack("<I", len(data)) + data
    assert message.outputs[0].parameters["classification"].int64_param == 1
    pixels = requests.grpc["FP32"][0]
    assert list(pixels.inputs[0].shape) == [1, 3, 224, 224]
    assert len(pixels.raw_input_contents[0]) == 4 * 3 * 224 * 224
    body, json_size = requests.rest["BYTES"][0]
    header = json.loads(body[:json_size])
    assert header["inputs"][0]["parameters"]["binary_data_size"] == len(data) + 4
    assert body[json_size:] == struct.pack("<I", len(data)) + data
    assert header["outputs"] == [
        {"name": "probabilities", "parameters": {"binary_data": False, "classification": 1}}
    ]


def test_no_doors_no_headline_line() -> None:
    assert report_doors.headline({}) == [] and report_doors.section({"doors": []}) == []


def _door_row(server: str, door: str, kind: str, concurrency: int, ips: float) -> dict:
    return {
        "server": server,
        "variant": "m:1",
        "door": door,
        "input": kind,
        "concurrency": concurrency,
        "images_per_s": ips,
        "p50_ms": 20.0,
        "client_cpu_share": 0.01,
        "client_cpu_ms_per_request": 0.2,
    }


def test_side_by_side_ratios_use_the_served_engine_and_the_best_of_each_server() -> None:
    results = {
        "served": {"m:1": {"engine": "onnxruntime"}},
        "engine": engine_rows(),
        "doors": [
            _door_row("resnet-serve", "classify", "raw", 1, 50.0),
            _door_row("resnet-serve", "classify", "raw", 16, 90.0),
            _door_row("resnet-serve", "classify", "raw", 64, 87.0),
            _door_row("resnet-serve", "v2-grpc", "BYTES", 16, 81.0),
        ],
        "triton": [
            _door_row("triton", "v2-rest", "BYTES", 16, 60.0),
            _door_row("triton", "v2-grpc", "BYTES", 16, 75.0),
        ],
    }
    (row,) = report_doors.summary(results)
    assert row["engine_limit_images_per_s"] == 100.0 and row["engine_limit_batch"] == 8
    assert row["best_door"] == "classify raw" and row["best_concurrency"] == 16
    assert row["best_over_engine"] == pytest.approx(0.9)
    assert row["worst_door_over_best"] == pytest.approx(0.9)
    assert row["c64_over_best"] == pytest.approx(87 / 90) and row["c128_over_best"] is None
    assert row["c1_over_engine_b1_ms"] == pytest.approx(20.0 - 12.5)
    assert row["triton_best_door"] == "v2-grpc BYTES"
    assert row["ours_over_triton"] == pytest.approx(90 / 75)
    assert row["triton_best_over_engine"] == pytest.approx(0.75)
