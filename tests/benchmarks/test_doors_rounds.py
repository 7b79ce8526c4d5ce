"""Side-by-side rounds: each (door, level) keeps its median round by images/s."""

from __future__ import annotations

from benchmarks.doors import CLASSIFY, CLASSIFY_RAW, median_rounds
from benchmarks.loop import LevelResult


def row(concurrency: int, images_per_s: float) -> LevelResult:
    return LevelResult(
        "m:1", "on", concurrency, 1, requests=10, ok=10, errors=0, images_per_s=images_per_s
    )


def test_each_door_and_level_keeps_its_median_round_in_first_seen_order() -> None:
    rounds = [
        (CLASSIFY, row(16, 40.0)),
        (CLASSIFY_RAW, row(16, 45.0)),
        (CLASSIFY, row(16, 30.0)),  # a slow round: not the median
        (CLASSIFY_RAW, row(16, 39.0)),
        (CLASSIFY, row(16, 42.0)),
        (CLASSIFY_RAW, row(16, 44.0)),
        (CLASSIFY, row(64, 50.0)),
    ]
    kept = median_rounds(rounds)
    assert [(door, r.concurrency, r.images_per_s) for door, r in kept] == [
        (CLASSIFY, 16, 40.0),
        (CLASSIFY_RAW, 16, 44.0),
        (CLASSIFY, 64, 50.0),
    ]


def test_an_even_count_keeps_the_lower_middle_round() -> None:
    kept = median_rounds([(CLASSIFY, row(16, 50.0)), (CLASSIFY, row(16, 40.0))])
    assert [r.images_per_s for _, r in kept] == [40.0]


def test_one_round_is_kept_as_it_is() -> None:
    only = [(CLASSIFY, row(1, 33.0)), (CLASSIFY_RAW, row(1, 34.0))]
    assert median_rounds(only) == only
