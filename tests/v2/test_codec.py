"""Tensors <-> numpy: Triton's BYTES layout, shapes, datatypes, outputs and classification."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from service.errors import BadRequest
from service.postprocess import softmax
from service.v2.codec import (
    LOGITS_OUTPUT,
    PROBABILITIES_OUTPUT,
    RequestedOutput,
    build_outputs,
    classification,
    deserialize_bytes,
    output_bytes,
    serialize_bytes,
    tensor_from_list,
    tensor_from_raw,
)

LABELS = ("cat", "dog", "ship")
LOGITS = np.array([[1.0, 3.0, 2.0], [0.5, 0.5, -1.0]], dtype=np.float32)


def test_bytes_layout_matches_tritonclient_both_ways() -> None:
    items = [b"\xff\xd8jpeg", b"", b"x" * 300]
    theirs = serialize_byte_tensor(np.array(items, dtype=object)).item()
    assert serialize_bytes(items) == theirs
    assert deserialize_bytes("image", theirs) == items
    assert list(deserialize_bytes_tensor(serialize_bytes(items))) == items


@pytest.mark.parametrize(
    "raw", [b"\x05\x00\x00", b"\x05\x00\x00\x00abc"], ids=["cut-length", "cut-element"]
)
def test_truncated_bytes_tensor_is_a_bad_request(raw: bytes) -> None:
    with pytest.raises(BadRequest, match="BYTES"):
        deserialize_bytes("image", raw)


def test_fp32_raw_is_little_endian_in_its_shape() -> None:
    values = np.arange(6, dtype=np.float32)
    tensor = tensor_from_raw("input", "FP32", [1, 6], values.astype("<f4").tobytes())
    assert tensor.shape == (1, 6)
    np.testing.assert_array_equal(tensor.data, values)


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "problem"),
    [
        ("FP32", [2, 3], np.zeros(5, np.float32).tobytes(), "holds 6 elements, the data has 5"),
        ("FP32", [1], b"\x00\x00\x00", "not 4-aligned"),
        ("INT64", [1], b"\x00" * 8, "datatype 'INT64' is not accepted"),
        ("FP32", [-1, 3], b"", "negative dimension"),
        ("FP32", [], b"", "non-empty list of integers"),
        ("FP32", [1.5], b"", "non-empty list of integers"),
    ],
)
def test_raw_inputs_that_do_not_fit_are_bad_requests(
    datatype: str, shape: list[object], raw: bytes, problem: str
) -> None:
    with pytest.raises(BadRequest, match=problem):
        tensor_from_raw("input", datatype, shape, raw)


def test_json_bytes_are_base64_and_nested_data_is_flattened() -> None:
    encoded = [[base64.b64encode(b"\xff\xd8a").decode()], [base64.b64encode(b"b").decode()]]
    tensor = tensor_from_list("image", "BYTES", [2, 1], encoded)
    assert tensor.data.tolist() == [b"\xff\xd8a", b"b"]
    nested = tensor_from_list("input", "FP32", [1, 2, 2], [[[1, 2], [3, 4.5]]])
    np.testing.assert_array_equal(nested.data, [1, 2, 3, 4.5])


@pytest.mark.parametrize(
    ("datatype", "data", "problem"),
    [
        ("BYTES", ["not base64!"], "not base64"),
        ("BYTES", [3], "must be strings"),
        ("FP32", ["1.0"], "must be numbers"),
        ("FP32", [True], "must be numbers"),
        ("FP32", [10**400], "out of range"),
    ],
)
def test_json_data_of_the_wrong_kind_is_a_bad_request(
    datatype: str, data: list[object], problem: str
) -> None:
    with pytest.raises(BadRequest, match=problem):
        tensor_from_list("x", datatype, [1], data)


def test_no_output_requested_returns_logits_and_probabilities() -> None:
    outputs = build_outputs(LOGITS, LABELS, [])
    assert [o.name for o in outputs] == [LOGITS_OUTPUT, PROBABILITIES_OUTPUT]
    assert all(o.datatype == "FP32" and o.shape == (2, 3) for o in outputs)
    np.testing.assert_array_equal(outputs[0].data.reshape(2, 3), LOGITS)
    np.testing.assert_allclose(outputs[1].data.reshape(2, 3), softmax(LOGITS), rtol=1e-6)


def test_classification_is_tritons_score_index_label_best_first() -> None:
    (output,) = build_outputs(LOGITS, LABELS, [RequestedOutput(LOGITS_OUTPUT, class_count=2)])
    assert (output.datatype, output.shape) == ("BYTES", (2, 2))
    assert output.data.tolist() == [
        b"3.000000:1:dog",
        b"2.000000:2:ship",
        b"0.500000:0:cat",
        b"0.500000:1:dog",
    ]


def test_classification_of_probabilities_scores_probabilities_and_clamps_k() -> None:
    rows = classification(softmax(LOGITS)[0].astype(np.float32), 10, LABELS)
    assert len(rows) == 3
    score, index, label = rows[0].decode().split(":")
    assert (index, label) == ("1", "dog")
    assert float(score) == pytest.approx(softmax(LOGITS)[0, 1], abs=1e-6)


def test_output_bytes_are_what_tritonclient_reads_back() -> None:
    logits, classes = build_outputs(
        LOGITS, LABELS, [RequestedOutput(LOGITS_OUTPUT), RequestedOutput("probabilities", 1)]
    )
    np.testing.assert_array_equal(np.frombuffer(output_bytes(logits), "<f4"), LOGITS.ravel())
    assert list(deserialize_bytes_tensor(output_bytes(classes))) == classes.data.tolist()
