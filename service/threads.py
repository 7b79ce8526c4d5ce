"""OS names for the service's own threads, so ``top -H``, ``ps -L``, py-spy and /proc see them.

Python 3.11 names a thread only for itself (``threading.current_thread().name``); the
kernel's name (``/proc/<pid>/task/<tid>/comm``) stays the process's, so every thread of
a busy server reads ``python`` and nobody outside can tell the event loop from a decode
or engine thread. Naming them is what lets ``benchmarks.threads`` split the server's CPU
time by what each thread does, exactly, from /proc.

The OS name is the Python thread's name (``decode_0``, ``engine-resnet18:1_0``) cut to
the kernel's 15 bytes (``engine-resnet18``): the groups are told apart by their start.
Threads a thread creates inherit its OS name; that is why the main thread (the event
loop) is never renamed: it keeps the process's name, as ``ps`` shows it.

Naming is best effort and never changes behaviour: off Linux/glibc, or if the call
fails, the thread simply keeps its old name. It must never raise: an executor whose
initializer raises is broken, and every job sent to it would fail.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache

__all__ = ["OS_NAME_BYTES", "name_os_thread", "named_executor", "naming_initializer"]

#: The kernel keeps 16 bytes for a thread's name, the last one the terminating NUL.
OS_NAME_BYTES = 15


@cache
def _setname() -> Callable[[bytes], int] | None:
    """Names the calling thread through glibc's ``pthread_setname_np``; None where there
    is none (macOS's takes other arguments, Windows has none). Looked up once."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        # The symbols already loaded in this process (libc among them): no library search,
        # which would run ldconfig in a subprocess.
        libc = ctypes.CDLL(None)
        setname = libc.pthread_setname_np
        self_id = libc.pthread_self
    except (OSError, AttributeError):  # musl before 1.2.3, or no libc found
        return None
    self_id.restype = ctypes.c_ulong
    self_id.argtypes = []
    setname.restype = ctypes.c_int
    setname.argtypes = [ctypes.c_ulong, ctypes.c_char_p]

    def set_own_name(name: bytes) -> int:
        return int(setname(self_id(), name))

    return set_own_name


def os_name(name: str) -> bytes:
    """``name`` as the kernel will hold it: UTF-8, at most 15 bytes, never half a
    character, no NUL (which would end it early)."""
    encoded = name.replace("\0", "").encode("utf-8", "replace")[:OS_NAME_BYTES]
    return encoded.decode("utf-8", "ignore").encode("utf-8")


def name_os_thread(name: str) -> None:
    """Give the calling thread ``name`` (cut to 15 bytes) as its OS name; a silent no-op
    where the platform cannot, or when the call fails."""
    setname = _setname()
    if setname is None:
        return
    try:
        setname(os_name(name))
    except Exception:  # pragma: no cover - a name is never worth a broken thread
        return


def _name_after_python_thread() -> None:
    name_os_thread(threading.current_thread().name)


def naming_initializer(name: str | None = None) -> Callable[[], None]:
    """A ``ThreadPoolExecutor`` initializer naming each worker thread: ``name``, or, by
    default, the worker's Python name (``<thread_name_prefix>_<n>``)."""
    if name is None:
        return _name_after_python_thread
    return lambda: name_os_thread(name)


def named_executor(max_workers: int, name: str) -> ThreadPoolExecutor:
    """A thread pool whose workers carry ``name`` both in Python (``name_0``, ``name_1``:
    logs, tracebacks) and in the OS (the same, cut to 15 bytes)."""
    return ThreadPoolExecutor(
        max_workers=max_workers, thread_name_prefix=name, initializer=naming_initializer()
    )
