"""The server's CPU split by thread: exact /proc figures, grouped by what each thread does."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from benchmarks import report_doors, threads
from benchmarks.loop import LevelResult, Load, Outcome, Snapshot, _Done, summarise
from benchmarks.tables import SPLIT_HEADER, thread_split
from benchmarks.threads import GROUPS, ThreadSnapshot, ThreadTimes, cpu_by_group, group_of

PID = 100


def snap(**threads_by_tid: tuple[str, float]) -> ThreadSnapshot:
    """A snapshot of process ``PID`` (named ``python``): ``t101=("decode_0", 1.5)``..."""
    found = {int(k[1:]): ThreadTimes(comm, cpu) for k, (comm, cpu) in threads_by_tid.items()}
    return ThreadSnapshot(PID, "python", found)


def stat_line(comm: str, utime: int, stime: int) -> str:
    """A /proc stat line: pid (comm) state, then fields 4..52, utime/stime at 14 and 15."""
    fields = ["S", *["0"] * 10, str(utime), str(stime), *["0"] * 37]
    return f"7 ({comm}) " + " ".join(fields) + "\n"


@pytest.mark.parametrize(
    ("tid", "comm", "group"),
    [
        (PID, "python", "event loop"),
        (PID, "decode_0", "event loop"),  # the main thread, whatever it is called
        (101, "decode_0", "decode"),
        (102, "decode-heavy_0", "decode"),
        (103, "parse_0", "parse"),
        (104, "engine-resnet18", "engine"),
        (105, "python", "engine"),  # ONNX Runtime's pool: unnamed, the process's name
        (106, "event_engine", "grpc"),
        (107, "grpc_global_tim", "grpc"),
        (108, "default-executo", "grpc"),
        (109, "lifeguard", "grpc"),
        (110, "libuv-worker", "other"),
    ],
)
def test_each_thread_is_grouped_by_what_it_does(tid: int, comm: str, group: str) -> None:
    assert group_of(tid, comm, pid=PID, process_comm="python") == group


def test_the_split_is_each_threads_cpu_over_the_window_every_group_present() -> None:
    before = snap(t100=("python", 10.0), t101=("decode_0", 2.0), t104=("engine-m:1", 5.0))
    after = snap(
        t100=("python", 10.5),
        t101=("decode_0", 3.0),
        t104=("engine-m:1", 9.0),
        t105=("python", 1.25),  # born inside the window: counts from zero
    )
    spent = cpu_by_group(before, after)
    assert list(spent) == list(GROUPS)
    assert spent == pytest.approx(
        {"event loop": 0.5, "decode": 1.0, "parse": 0.0, "engine": 5.25, "grpc": 0.0, "other": 0.0}
    )


def test_a_reused_thread_id_counts_from_zero_and_by_its_last_name() -> None:
    before = snap(t100=("python", 1.0), t101=("python", 7.0))  # ended, id reused below
    after = snap(t100=("python", 1.0), t101=("decode_1", 0.5))
    spent = cpu_by_group(before, after)
    assert spent["decode"] == pytest.approx(0.5) and spent["engine"] == 0.0


def test_snapshots_of_two_processes_are_refused() -> None:
    other = ThreadSnapshot(PID + 1, "python", {})
    with pytest.raises(ValueError, match="two processes"):
        cpu_by_group(snap(), other)


def test_per_image_figures_need_an_image() -> None:
    assert threads.ms_per_image({"decode": 0.5}, 0) == {}
    assert threads.ms_per_image({"decode": 0.5}, 100) == {"decode": pytest.approx(5.0)}


def test_a_stat_line_is_read_past_a_name_holding_spaces_and_parentheses() -> None:
    times = threads.parse_stat(stat_line("we (ird) name", 150, 50), ticks_per_s=100)
    assert times == ThreadTimes("we (ird) name", 2.0)


def fake_proc(root: Path, *, schedstat: bool) -> None:
    """Process ``PID`` with threads PID and 101 (300 + 100 ticks, 1.5 s in schedstat), and
    thread 102, listed but ended before its files were read."""
    tasks = root / str(PID) / "task"
    for tid, comm in [(PID, "python"), (101, "decode_0")]:
        (tasks / str(tid)).mkdir(parents=True)
        (tasks / str(tid) / "stat").write_text(stat_line(comm, 300, 100))
        if schedstat:
            (tasks / str(tid) / "schedstat").write_text("1500000000 2000 30\n")
    (tasks / "102").mkdir()
    if schedstat:  # 103 ended between its two reads
        (tasks / "103").mkdir()
        (tasks / "103" / "stat").write_text(stat_line("parse_0", 1, 1))
        (root / str(PID) / "schedstat").write_text("3000000000 4000 60\n")
    (root / str(PID) / "comm").write_text("python\n")


def test_snapshot_reads_each_threads_nanoseconds_on_cpu(tmp_path: Path) -> None:
    fake_proc(tmp_path, schedstat=True)
    found = threads.snapshot(PID, proc=tmp_path)
    assert found.process_comm == "python"
    assert found.threads == {PID: ThreadTimes("python", 1.5), 101: ThreadTimes("decode_0", 1.5)}


def test_without_schedstat_a_snapshot_falls_back_to_clock_ticks(tmp_path: Path) -> None:
    fake_proc(tmp_path, schedstat=False)
    found = threads.snapshot(PID, proc=tmp_path)
    ticks = os.sysconf("SC_CLK_TCK")
    assert found.threads == {
        PID: ThreadTimes("python", 400 / ticks),
        101: ThreadTimes("decode_0", 400 / ticks),
    }


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_snapshot_of_this_process_sees_its_threads_and_their_cpu_time() -> None:
    sum(range(200_000))  # some CPU time of this thread's own
    before = time.thread_time()
    found = threads.snapshot(os.getpid())
    after = time.thread_time()
    assert os.getpid() in found.threads
    mine = found.threads[threading.get_native_id()].cpu_s
    if Path(f"/proc/{os.getpid()}/schedstat").is_file():
        # The clock thread_time() reads, in ns; a running thread's is brought up to date
        # at least every scheduler tick (10 ms at HZ=100), so it may lag by up to one.
        assert before - 0.011 <= mine <= after
    else:  # whole clock ticks, rounded down
        assert mine <= after


def edges(first: ThreadSnapshot | None, last: ThreadSnapshot | None) -> Load:
    return Load(
        [],
        Snapshot(0.0, 0.0, 10.0, 0.0, 0.0, first),
        Snapshot(1.0, 0.0, 12.0, 0.0, 0.0, last),
    )


def summary_of(load: Load) -> LevelResult:
    return summarise(load, variant="m:1", batching="on", concurrency=1, images_per_request=1)


def test_a_level_without_thread_snapshots_has_no_split() -> None:
    assert summary_of(edges(None, None)).server_cpu_ms_by_thread == {}


def test_a_level_reports_the_split_in_cpu_ms_per_image() -> None:
    load = edges(snap(t100=("python", 1.0)), snap(t100=("python", 1.4), t101=("decode_0", 0.2)))
    load.done.extend(_Done(0.1, 0.2 + i / 100, Outcome(None)) for i in range(40))
    row = summary_of(load)
    assert row.server_cpu_ms_by_thread["event loop"] == pytest.approx(10.0)  # 0.4 s / 40
    assert row.server_cpu_ms_by_thread["decode"] == pytest.approx(5.0)
    assert row.server_cpu_ms_per_image == pytest.approx(50.0)  # 2 s of the process / 40


def test_a_table_cell_shows_loop_decode_engine_and_the_rest() -> None:
    split = {"event loop": 1.04, "decode": 4.1, "parse": 0.2, "engine": 43.5, "grpc": 0.1}
    assert thread_split(split) == "1.0 / 4.1 / 43.5 / 0.3"
    assert thread_split({}) == thread_split(None) == "–"


def test_the_doors_table_shows_the_split_and_a_dash_for_triton() -> None:
    level = LevelResult("m:1", "on", 16, 1, requests=10, ok=10, errors=0, images_per_s=50.0)
    ours = {**asdict(level), "server": "resnet-serve", "door": "classify", "input": "raw"}
    ours["server_cpu_ms_by_thread"] = {"event loop": 1.0, "decode": 4.0, "engine": 43.0}
    triton = {**ours, "server": "triton", "server_cpu_ms_by_thread": {}}
    text = "\n".join(report_doors.section({"doors": [ours], "triton": [triton]}))
    assert SPLIT_HEADER in text
    assert "| 1.0 / 4.0 / 43.0 / 0.0 |" in text
    triton_line = next(line for line in text.splitlines() if line.startswith("| triton"))
    assert triton_line.split(" | ")[-2] == "–"
