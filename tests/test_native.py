"""Native memory: RSS after malloc_trim, memray attribution, and end-to-end native leaks."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_memleak.check import measuring
from pytest_memleak.evidence import native

linux_glibc = pytest.mark.skipif(not native.can_trim(), reason="malloc_trim needs glibc")
MiB = 1 << 20

_libc = ctypes.CDLL(None)  # malloc and free as a C extension reaches them: jemalloc's, when it is preloaded
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
_libc.free.argtypes = [ctypes.c_void_p]
_POINTERS: list[int] = []  # natively leaked blocks of the attribution tests, freed at the end


@pytest.fixture(autouse=True, scope="module")
def _free_pointers():
    yield
    for p in _POINTERS:
        _libc.free(p)
    _POINTERS.clear()


def _ctypes_malloc(size: int) -> None:
    p = _libc.malloc(size)
    ctypes.memset(p, 1, size)
    _POINTERS.append(p)


@pytest.fixture(scope="module")
def leaky_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shared library whose malloc goes through its PLT, as a C extension's does."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    work = tmp_path_factory.mktemp("libleak")
    (work / "leak.c").write_text(
        "#include <stdlib.h>\n#include <string.h>\n"
        "void *leak_bytes(size_t n) { void *p = malloc(n); memset(p, 1, n); return p; }\n"
    )
    so = work / "libleak.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(so), str(work / "leak.c")], check=True)
    return so


# -- trim and RSS ---------------------------------------------------------------------------


def test_trim_is_callable_everywhere():
    native.trim()
    native.trim()
    assert native.native_bytes() > 0


@linux_glibc
def test_trim_gives_freed_malloc_memory_back():
    """Freed blocks below the heap's top stay resident until malloc_trim returns them."""
    blocks = [_libc.malloc(16384) for _ in range(2000)]  # 31 MiB below the mmap threshold
    for p in blocks:
        ctypes.memset(p, 1, 16384)
    before = measuring.rss()
    for p in blocks[:-1]:  # the last block pins the heap's top: brk cannot shrink
        _libc.free(p)
    freed_only = measuring.rss()
    native.trim()
    trimmed = measuring.rss()
    _libc.free(blocks[-1])
    assert before - freed_only < 8 * MiB, "glibc kept the freed memory resident, as measured"
    assert before - trimmed > 24 * MiB, f"trim gave back only {(before - trimmed) / MiB:.1f} MiB"


def test_uss_is_positive_and_below_rss():
    uss = native.uss()
    assert 0 < uss <= measuring.rss() + MiB


# -- attribution --------------------------------------------------------------------------


def test_memray_cannot_see_ctypes_malloc(tmp_path: Path):
    lines, note = native.attribute_native(lambda: _ctypes_malloc(2 * MiB), tmp_path / "c", expected=2 * MiB)
    assert lines == []
    assert note == native.UNSEEN
    assert "memray could not see" in note and "ctypes" in note


def test_memray_names_a_c_library_malloc(tmp_path: Path, leaky_library: Path):
    lib = ctypes.CDLL(str(leaky_library))
    lib.leak_bytes.restype = ctypes.c_void_p
    lib.leak_bytes.argtypes = [ctypes.c_size_t]
    lines, note = native.attribute_native(lambda: _POINTERS.append(lib.leak_bytes(2 * MiB)), tmp_path / "so", expected=2 * MiB)
    assert note is None, note
    stack = next(line for line in lines if "leak_bytes" in line)
    assert stack.startswith("2.0 MiB in 1 allocation(s) [malloc]")
    assert "test_native.py" in stack  # the Python caller is named too
    assert (tmp_path / "so-native.bin").is_file()


def test_memray_names_numpy_buffers(tmp_path: Path):
    np = pytest.importorskip("numpy")
    kept = []
    lines, note = native.attribute_native(lambda: kept.append(np.ones(MiB // 4)), tmp_path / "np", expected=2 * MiB)
    assert note is None, note
    assert any(line.startswith("2.0 MiB") and "numeric.py" in line for line in lines), lines
    assert kept and kept[0].nbytes == 2 * MiB


def test_partial_sighting_is_said(tmp_path: Path):
    np = pytest.importorskip("numpy")
    kept = []
    lines, note = native.attribute_native(lambda: kept.append(np.ones(MiB // 8)), tmp_path / "p", expected=8 * MiB)
    assert lines and note is not None
    assert note.startswith("memray saw only 1.0 MiB of the 8.0 MiB/run native growth")


def test_a_raising_run_is_reported_not_raised(tmp_path: Path):
    def boom() -> None:
        raise RuntimeError("kaput")

    lines, note = native.attribute_native(boom, tmp_path / "r")
    assert lines == []
    assert note is not None and "RuntimeError: kaput" in note


def test_an_active_tracker_is_a_note(tmp_path: Path):
    memray = pytest.importorskip("memray")
    with memray.Tracker(str(tmp_path / "outer.bin")):
        lines, note = native.attribute_native(lambda: None, tmp_path / "inner")
    assert lines == []
    assert note is not None and note.startswith("no native attribution: memray could not attach")


def test_python_heap_frames_are_not_native_evidence():
    assert native._is_python_heap([("malloc", "<unknown>", 0), ("_PyObject_Malloc", "Objects/obmalloc.c", 1)])
    assert not native._is_python_heap([("default_malloc", "<unknown>", 0), ("PyDataMem_UserNEW", "<unknown>", 0)])
    line = native._stack_line(
        [
            ("leak_bytes", "<unknown>", 0),
            ("_ctypes_callproc", "/tmp/build/Python-3.11/Modules/_ctypes/callproc.c", 1262),
            ("runtestprotocol", "/x/site-packages/_pytest/runner.py", 10),
            ("test_x", "/proj/test_x.py", 7),
        ]
    )
    assert line.startswith("leak_bytes <- test_x (")
    assert line.endswith("test_x.py:7)")


# -- end to end with --memleak: one pytest subprocess for all, each test reads its section --

E2E_SOURCE = """
import ctypes, ctypes.util, os
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
KEPT = []

def test_malloc_leak():
    # malloc without free, and no Python object kept: invisible to tracemalloc
    ctypes.memset(libc.malloc(2 * 1024 * 1024), 1, 2 * 1024 * 1024)

def test_numpy_leak():
    import numpy as np
    KEPT.append(np.ones(256 * 1024))  # a 2 MiB buffer per run

LIB = os.environ.get("LEAKY_LIBRARY")
if LIB:
    lib = ctypes.CDLL(LIB)
    lib.leak_bytes.restype = ctypes.c_void_p
    lib.leak_bytes.argtypes = [ctypes.c_size_t]

    def test_library_leak():
        lib.leak_bytes(1024 * 1024)
"""

FAST = (
    "--memleak",
    "-p",
    "no:cacheprovider",
    "--memleak-flamegraph=none",
    "--memleak-confirm-runs=12",
    "--memleak-confirm-seconds=0.01",  # one confirmation window: enough for a steady leak
)


def run_pytest(directory: Path, source: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run pytest in a fresh interpreter on one test file; return its whole output."""
    import os

    (directory / "test_e2e.py").write_text(source)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rN", *args, "test_e2e.py"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    return done.stdout + done.stderr


def section(out: str, test: str) -> str:
    """The failure section of one test, from its ``____ name ____`` header to the next."""
    match = re.search(rf"_+ {re.escape(test)} _+\n(.*?)(?=\n_{{3,}} \w|\n={{3,}} )", out, re.S)
    return match.group(1) if match else ""


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> str:
    if sys.platform != "linux":
        pytest.skip("RSS via /proc")
    pytest.importorskip("numpy")
    lib = None
    if shutil.which("cc") or shutil.which("gcc"):
        lib = str(request.getfixturevalue("leaky_library"))
    env = {"LEAKY_LIBRARY": lib} if lib else {}
    return run_pytest(tmp_path_factory.mktemp("native_e2e"), E2E_SOURCE, *FAST, env=env)


def test_ctypes_malloc_leak_is_caught_with_rss_evidence(e2e: str):
    out = section(e2e, "test_malloc_leak")
    assert re.search(r"^memleak: native memory grew 2\.0 MiB/run outside Python's allocator", out, re.M), e2e
    growth = re.search(r"confirm, RSS every (\d+) runs: \[([^\]]*)\]", out)
    assert growth, out
    steps = [s.strip() for s in growth.group(2).split(",")]
    assert all(s.startswith("+") and s.endswith("MiB") for s in steps), steps
    assert "LEAK test_e2e.py::test_malloc_leak - native memory grew" in e2e


def test_numpy_buffer_leak_is_caught_with_rss_evidence(e2e: str):
    out = section(e2e, "test_numpy_leak")
    # numpy reports its buffers to tracemalloc: the leak is on the Python heap, with its site
    assert re.search(r"^memleak: retained 2\.0 MiB/run of Python heap", out, re.M), e2e
    assert "test_e2e.py:14" in out
    growth = re.search(r"confirm, RSS every \d+ runs: \[\+(\d+\.\d) MiB", out)
    assert growth and float(growth.group(1)) >= 2.0, out


def test_ctypes_malloc_leak_says_memray_cannot_see_it(e2e: str):
    assert "memray could not see this allocation" in section(e2e, "test_malloc_leak")


def test_c_library_leak_is_attributed_to_its_function(e2e: str, leaky_library: Path):
    out = section(e2e, "test_library_leak")
    assert "memray native stacks still alive" in out
    assert re.search(r"1\.0 MiB in 1 allocation\(s\) \[malloc\]: leak_bytes", out), out
