"""The service's threads carry their names in the OS, where top -H and /proc see them."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from service.threads import OS_NAME_BYTES, name_os_thread, named_executor, os_name

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def os_name_of(native_id: int) -> str:
    return Path(f"/proc/self/task/{native_id}/comm").read_text().rstrip("\n")


def in_new_thread(name: str) -> tuple[str, str]:
    """(OS name after ``name_os_thread(name)``, the main thread's OS name then)."""
    seen: list[str] = []

    def run() -> None:
        name_os_thread(name)
        seen.append(os_name_of(threading.get_native_id()))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return seen[0], os_name_of(threading.get_native_id())


@linux_only
def test_a_named_thread_shows_its_name_in_proc() -> None:
    before = os_name_of(threading.get_native_id())
    named, main_after = in_new_thread("decode_0")
    assert named == "decode_0"
    assert main_after == before  # only the calling thread is renamed


@linux_only
def test_a_long_name_is_cut_to_the_kernels_fifteen_bytes() -> None:
    named, _ = in_new_thread("engine-resnet18:1_0")
    assert named == "engine-resnet18"


def test_a_cut_never_splits_a_character_nor_keeps_a_nul() -> None:
    cut = os_name("engine-" + "é" * 10)  # é is two bytes in UTF-8
    assert len(cut) <= OS_NAME_BYTES
    assert cut.decode("utf-8") == "engine-" + "é" * 4
    assert os_name("de\0code") == b"decode"


@linux_only
def test_named_executor_names_workers_in_python_and_in_the_os() -> None:
    pool = named_executor(2, "decode-heavy")
    try:
        python_name, native_id = pool.submit(
            lambda: (threading.current_thread().name, threading.get_native_id())
        ).result(timeout=10)
        assert python_name == "decode-heavy_0"
        assert os_name_of(native_id) == "decode-heavy_0"
    finally:
        pool.shutdown(wait=True)


@linux_only
def test_naming_is_a_silent_no_op_where_the_platform_cannot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import service.threads as threads

    threads._setname.cache_clear()
    monkeypatch.setattr(threads.sys, "platform", "darwin")
    try:
        named, main = in_new_thread("decode_0")  # a silent no-op
        assert named == main  # the thread kept the name it inherited
        pool = named_executor(1, "parse")
        try:
            assert pool.submit(lambda: 42).result(timeout=10) == 42
        finally:
            pool.shutdown(wait=True)
    finally:
        monkeypatch.undo()
        threads._setname.cache_clear()
