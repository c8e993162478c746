"""Issue 8, point 4: the memory guard stops a soak before the kernel would kill it.

The cgroup readers run on real files laid out as the kernel lays out ``/sys/fs/cgroup`` (v2
unified, v1 memory controller, the container case where the mount is the container's own
cgroup), with the root passed in. The soak tests run in a pytester subprocess: a body that
really allocates 20 MiB per iteration under an explicit ``memory_limit``, and a body that
fills a fake cgroup (the conftest points :mod:`pytest_memleak.soak.guard` at it).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from _pytest.mark.structures import Mark

from pytest_memleak.soak import config as soak_cfg
from pytest_memleak.soak import guard
from pytest_memleak.soak import run as soak
from pytest_memleak.soak.guard import Margin, MemoryGuard, parse_margin, read_cgroup_memory

MiB = 1024**2
GiB = 1024**3
V1_UNLIMITED = "9223372036854771712"


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return root


def proc_cgroup(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proc-self-cgroup"
    path.write_text(text)
    return path


# -- cgroup v2 ---------------------------------------------------------------------------


def test_v2_tightest_limit_on_the_way_up_and_the_working_set(tmp_path: Path) -> None:
    root = tree(
        tmp_path / "cgroup",
        {
            "cgroup.controllers": "cpu io memory pids",
            "memory.max": "max",  # the host's root cgroup has none
            "kubepods/memory.max": str(8 * GiB),
            "kubepods/pod1/memory.max": str(512 * MiB),
            "kubepods/pod1/ctr/memory.max": "max",
            "kubepods/pod1/ctr/memory.current": str(300 * MiB),
            "kubepods/pod1/ctr/memory.stat": f"anon {200 * MiB}\nfile {100 * MiB}\ninactive_file {60 * MiB}\nactive_file {40 * MiB}",
        },
    )
    found = read_cgroup_memory(root, proc_cgroup(tmp_path, "0::/kubepods/pod1/ctr\n"))
    assert found is not None
    assert (found.version, found.limit, found.directory) == (2, 512 * MiB, root / "kubepods/pod1")
    assert found.limit_file == root / "kubepods/pod1/memory.max"
    assert (
        found.usage() == 240 * MiB
    )  # usage less the inactive file cache the kernel reclaims first
    assert "cgroup v2 memory limit 512.0 MiB" in found.describe()


def test_v2_inside_a_container_the_mount_is_the_containers_cgroup(tmp_path: Path) -> None:
    root = tree(
        tmp_path / "cgroup",
        {
            "cgroup.controllers": "memory pids",
            "memory.max": str(GiB),
            "memory.current": str(100 * MiB),
            "memory.stat": "anon 1",
        },
    )
    # /proc/self/cgroup names the path on the host, which is not under this mount
    found = read_cgroup_memory(
        root, proc_cgroup(tmp_path, "0::/system.slice/docker-0123abcd.scope\n")
    )
    assert found is not None and (found.version, found.limit, found.directory) == (2, GiB, root)
    assert found.usage() == 100 * MiB


def test_v2_without_a_limit_and_unreadable_values(tmp_path: Path) -> None:
    root = tree(
        tmp_path / "cgroup",
        {"cgroup.controllers": "memory", "memory.max": "max", "app/memory.max": "max"},
    )
    assert read_cgroup_memory(root, proc_cgroup(tmp_path, "0::/app\n")) is None
    (root / "app/memory.max").write_text("lots\n")  # garbage is no limit, not a crash
    assert read_cgroup_memory(root, proc_cgroup(tmp_path, "0::/app\n")) is None
    (root / "app/memory.max").write_text(f"{256 * MiB}\n")
    found = read_cgroup_memory(root, proc_cgroup(tmp_path, "0::/app\n"))
    assert found is not None and found.limit == 256 * MiB
    assert found.usage() is None  # no memory.current: no reading, no exception
    (root / "app/memory.current").write_text("not a number\n")
    assert found.usage() is None


# -- cgroup v1 ---------------------------------------------------------------------------


def test_v1_limit_hierarchical_limit_and_working_set(tmp_path: Path) -> None:
    root = tree(
        tmp_path / "cgroup",
        {
            "memory/memory.limit_in_bytes": V1_UNLIMITED,
            "memory/memory.stat": f"hierarchical_memory_limit {V1_UNLIMITED}",
            "memory/docker/abc/memory.limit_in_bytes": str(GiB),
            "memory/docker/abc/memory.usage_in_bytes": str(700 * MiB),
            "memory/docker/abc/memory.stat": f"cache {300 * MiB}\ntotal_inactive_file {200 * MiB}\nhierarchical_memory_limit {768 * MiB}",
            "unified/cgroup.controllers": "",  # hybrid: v2 mounted beside, without the memory controller
        },
    )
    found = read_cgroup_memory(
        root, proc_cgroup(tmp_path, "12:pids:/docker/abc\n4:memory:/docker/abc\n0::/docker/abc\n")
    )
    assert found is not None
    assert (found.version, found.limit, found.directory) == (
        1,
        768 * MiB,
        root / "memory/docker/abc",
    )
    assert found.limit_file == root / "memory/docker/abc/memory.limit_in_bytes"
    assert found.usage() == 500 * MiB


def test_v1_inside_a_container_and_unlimited(tmp_path: Path) -> None:
    root = tree(
        tmp_path / "cgroup",
        {"memory/memory.limit_in_bytes": str(2 * GiB), "memory/memory.usage_in_bytes": str(GiB)},
    )
    found = read_cgroup_memory(root, proc_cgroup(tmp_path, "4:memory,hugetlb:/docker/0123\n"))
    assert found is not None and (found.version, found.limit, found.usage()) == (1, 2 * GiB, GiB)
    (root / "memory/memory.limit_in_bytes").write_text(V1_UNLIMITED + "\n")
    assert read_cgroup_memory(root, proc_cgroup(tmp_path, "4:memory:/docker/0123\n")) is None


def test_no_cgroup_file_system_at_all(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert read_cgroup_memory(tmp_path / "empty", tmp_path / "no-such-file") is None
    assert read_cgroup_memory(tmp_path / "missing", tmp_path / "no-such-file") is None
    assert (
        guard.cgroup_guard(Margin(fraction=0.1), tmp_path / "missing", tmp_path / "no-such-file")
        is None
    )


def test_a_path_that_climbs_out_of_the_mount_is_not_followed(tmp_path: Path) -> None:
    tree(tmp_path, {"outside/memory.max": str(MiB)})
    root = tree(tmp_path / "cgroup", {"cgroup.controllers": "memory", "memory.max": str(GiB)})
    found = read_cgroup_memory(root, proc_cgroup(tmp_path, "0::/../outside\n"))
    assert found is not None and found.limit == GiB


# -- the guard ---------------------------------------------------------------------------


def test_guard_stops_at_the_margin() -> None:
    g = MemoryGuard(1000 * MiB, 100 * MiB)
    assert g.stop_at == 900 * MiB
    assert not any(g.check(used * MiB) for used in (*range(100, 900, 50), 899))
    assert g.check(900 * MiB)
    assert g.trip is not None and not g.trip.predicted
    assert (
        g.trip.message()
        == "RSS 900.0 MiB reached 900.0 MiB: memory_limit 1000.0 MiB less a safety margin of 100.0 MiB"
    )
    assert g.check(0)  # once tripped, it stays tripped


def test_guard_stops_a_step_early_when_the_next_step_would_pass_the_limit() -> None:
    g = MemoryGuard(1000 * MiB, Margin(size=10 * MiB))
    assert not g.check(500 * MiB)
    assert g.check(760 * MiB)  # +260 MiB per step: the next one would be at 1020 MiB
    assert g.trip is not None and g.trip.predicted and "would pass the limit" in g.trip.message()


def test_guard_ignores_readings_it_cannot_use() -> None:
    readings = iter([None, math.nan, -1.0, 10.0, 95.0])
    g = MemoryGuard(
        100,
        Margin(fraction=0.1),
        source="cgroup",
        metric="cgroup working set",
        read=lambda: next(readings),
    )
    assert g.stop_at == 90
    assert [g.check() for _ in range(5)] == [False, False, False, False, True]


@pytest.mark.parametrize(("limit", "margin"), [(0, 0), (-5, 0), (100, 100), (100, -1)])
def test_guard_refuses_a_limit_it_cannot_keep(limit: int, margin: int) -> None:
    with pytest.raises(ValueError):
        MemoryGuard(limit, margin)


def test_cgroup_guard_reads_the_working_set_and_clamps_a_big_margin(tmp_path: Path) -> None:
    root = tree(
        tmp_path / "cgroup",
        {
            "cgroup.controllers": "memory",
            "memory.max": str(100 * MiB),
            "memory.current": str(10 * MiB),
        },
    )
    proc = proc_cgroup(tmp_path, "0::/\n")
    g = guard.cgroup_guard(Margin(size=GiB), root, proc)
    assert g is not None and g.stop_at == 10 * MiB  # 90% of the limit at most
    assert g.check()
    g = guard.cgroup_guard(parse_margin("10%"), root, proc)
    assert g is not None and g.stop_at == 90 * MiB and not g.check()
    (root / "memory.current").write_text(f"{95 * MiB}\n")
    assert g.check() and g.trip is not None and g.trip.metric == "cgroup working set"


@pytest.mark.parametrize(
    ("text", "margin"),
    [
        ("10%", Margin(fraction=0.1)),
        (" 25 % ", Margin(fraction=0.25)),
        ("64 MiB", Margin(size=64 * MiB)),
        (4096, Margin(size=4096)),
        (None, Margin(size=0)),
        ("none", Margin(size=0)),
    ],
)
def test_parse_margin(text: object, margin: Margin) -> None:
    assert parse_margin(text) == margin
    assert parse_margin(margin.spec()) == margin


@pytest.mark.parametrize("text", ["lots", "95%", "-5%", "x%", True, -1, "12 parsecs"])
def test_parse_margin_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_margin(text)


class MarkedItem:
    nodeid = "test_g.py::test_g"

    def __init__(self, **kwargs: object) -> None:
        self.mark = Mark("memleak_soak", (), kwargs, _ispytest=True)

    def iter_markers(self, name: str):
        return iter([self.mark] if name == "memleak_soak" else [])


def test_soak_config_margin_and_whether_the_limit_was_given() -> None:
    default = soak_cfg.soak_config(MarkedItem())  # type: ignore[arg-type]
    assert not default.memory_limit_given and default.margin() == Margin(fraction=0.1)
    given = soak_cfg.soak_config(MarkedItem(memory_limit="1 GiB", memory_margin="100 MiB"))  # type: ignore[arg-type]
    assert given.memory_limit_given and given.margin() == Margin(size=100 * MiB)
    assert json.loads(json.dumps(given.as_dict()))["memory_margin"] == str(100 * MiB)
    off = soak_cfg.soak_config(MarkedItem(memory_limit=None))  # type: ignore[arg-type]
    assert not off.memory_limit_given


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"memory_margin": "lots"},
            "invalid value 'lots' for memleak_soak(memory_margin=...) from @pytest.mark.memleak_soak on test_g.py::test_g",
        ),
        ({"memory_margin": "95%"}, "'95%' is outside 0%..90%"),
        (
            {"memory_limit": "100 MiB", "memory_margin": "200 MiB"},
            "not smaller than memory_limit 100.0 MiB",
        ),
    ],
)
def test_soak_config_rejects_a_bad_margin(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(pytest.UsageError, match=re.escape(message)):
        soak_cfg.soak_config(MarkedItem(**kwargs))  # type: ignore[arg-type]


# -- soaks that approach their limit ------------------------------------------------------

QUIET = (
    "-p",
    "no:cacheprovider",
    "-p",
    "no:benchmark",
    "-p",
    "no:xdist",
    "-p",
    "no:xdist.looponfail",
    "-p",
    "no:hypothesispytest",
    "-p",
    "no:memray",
)

GROWING = """
import time

import psutil
import pytest

CHUNKS = []
# 200 MiB above what this process holds now; the guard stops 20 MiB short of it. No warm-up:
# the ten or so samples are all the trend has.
LIMIT = psutil.Process().memory_info().rss + 200 * 1024**2
BELOW = psutil.Process().memory_info().rss // 2


@pytest.mark.memleak_soak(duration="60s", memory_limit=BELOW)
def test_over_the_limit_from_the_start():
    raise AssertionError("the guard stops the soak before the first iteration")


@pytest.fixture
def release():
    yield
    CHUNKS.clear()  # 20 MiB buffers are mmapped: freed, RSS goes back down for the next soak


@pytest.mark.memleak_soak(duration="60s", sample_every="0.02s", memory_limit=LIMIT, memory_margin="20 MiB", warmup=0)
def test_grows(release):
    CHUNKS.append(b"x" * (20 * 1024**2))  # written, so resident
    time.sleep(0.04)


@pytest.mark.memleak_soak(duration="60s", sample_every="0.02s", memory_limit=LIMIT, memory_margin="20 MiB", warmup=0, expect_leak=True)
def test_grows_expected(release):
    CHUNKS.append(b"x" * (20 * 1024**2))
    time.sleep(0.04)
"""


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_soak_stops_at_the_margin_with_the_trend_and_its_verdict_line(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_growing=GROWING)
    result = pytester.runpytest_subprocess(*QUIET, "-v", timeout=300)
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*memory leak in soak test_grows: stopped by the memory guard after *s of 60 s (* iterations): "
            "RSS * reached *: memory_limit * less a safety margin of 20.0 MiB; RSS grows *",
            "*memory guard: RSS * reached *",
            "*RSS: +*/h (95% CI *), +* MiB per iteration; *",
            "*samples: *reports/soak/*test_grows*.jsonl",
        ]
    )
    data = json.loads((pytester.path / "reports" / "memleak.json").read_text())
    soaks = {s["nodeid"].split("::")[-1]: s for s in data["soaks"]}
    over = soaks.pop("test_over_the_limit_from_the_start")
    assert over["status"] == "inconclusive" and over["iterations"] == 0
    result.stdout.fnmatch_lines(
        [
            "*memory limit in soak test_over_the_limit_from_the_start: stopped by the memory guard after * s of 60 s (0 iterations): RSS *"
        ]
    )
    assert set(soaks) == {"test_grows", "test_grows_expected"}
    for name, entry in soaks.items():
        assert entry["status"] == "leak", (name, entry["reason"])
        assert entry["duration"] < 60 and 5 <= entry["iterations"] <= 12, entry  # stopped before its 60 s
        assert 15 * MiB < entry["slope_per_iteration"] < 25 * MiB, entry["slope_per_iteration"]
        rows = records(
            Path(entry["samples_path"])
            if Path(entry["samples_path"]).is_absolute()
            else pytester.path / entry["samples_path"]
        )
        kinds = [r["kind"] for r in rows]
        assert kinds[0] == "meta" and kinds[-2:] == ["guard", "verdict"], kinds
        assert kinds.count("sample") >= 6
        stop = rows[-2]
        assert (
            stop["metric"] == "RSS"
            and stop["source"] == "memory_limit"
            and stop["margin"] == 20 * MiB
        )
        assert stop["used"] >= stop["stop_at"] or stop["predicted"]
        assert stop["used"] < stop["limit"], "the guard let RSS reach the limit itself"
        verdict = rows[-1]
        assert verdict["stopped_by"] == "memory guard" and verdict["status"] == "leak"
        assert verdict["guard"] == {k: stop[k] for k in verdict["guard"]}
    result.stdout.fnmatch_lines(["*grows*LEAK*", "*grows*expected*LEAK (expected)*"])


FAKE_CGROUP = """
import pathlib

import pytest_memleak.soak.guard

ROOT = pathlib.Path(__file__).parent / "fake-cgroup"
(ROOT / "ctr").mkdir(parents=True, exist_ok=True)
(ROOT / "cgroup.controllers").write_text("memory\\n")
(ROOT / "memory.max").write_text("max\\n")
(ROOT / "ctr" / "memory.max").write_text(f"{1024**3}\\n")
(ROOT / "ctr" / "memory.current").write_text(f"{100 * 1024**2}\\n")
(ROOT / "ctr" / "memory.stat").write_text("inactive_file 0\\n")
(ROOT.parent / "proc-self-cgroup").write_text("0::/ctr\\n")
pytest_memleak.soak.guard.CGROUP_ROOT = str(ROOT)
pytest_memleak.soak.guard.PROC_SELF_CGROUP = str(ROOT.parent / "proc-self-cgroup")
"""

FILLING = """
import pathlib
import time

import pytest

CURRENT = pathlib.Path(__file__).parent / "fake-cgroup" / "ctr" / "memory.current"


@pytest.mark.memleak_soak(duration="60s", sample_every="0.02s")
def test_container_fills():
    used = int(CURRENT.read_text())
    CURRENT.write_text(f"{used + 50 * 1024**2}\\n")  # another process in the container grows
    time.sleep(0.01)
"""


def test_soak_stops_before_the_containers_cgroup_limit(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(FAKE_CGROUP)
    pytester.makepyfile(test_filling=FILLING)
    result = pytester.runpytest_subprocess(*QUIET, timeout=300)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*memory * in soak test_container_fills: stopped by the memory guard after * s of 60 s (* iterations): "
            "cgroup working set * MiB reached 921.6 MiB: cgroup v2 limit 1.0 GiB (*fake-cgroup/ctr/memory.max)"
            " less a safety margin of 102.4 MiB*",
        ]
    )
    rows = records(next((pytester.path / "reports" / "soak").glob("*.jsonl")))
    assert [r["kind"] for r in rows][-2:] == ["guard", "verdict"]
    assert rows[-2]["metric"] == "cgroup working set" and rows[-2]["limit"] == 1024**3
    verdict = rows[-1]
    assert verdict["stopped_by"] == "memory guard" and verdict["status"] in ("inconclusive", "leak")
    assert verdict["duration"] < 60  # stopped before its 60 s
    assert "rss" not in verdict["leaked_metrics"]  # the container filled, not this process
    assert rows[0]["guards"] == [
        f"cgroup working set against cgroup v2 limit 1.0 GiB ({pytester.path}/fake-cgroup/ctr/memory.max), "
        "stopping at 921.6 MiB (margin 102.4 MiB)"
    ]


def test_the_default_memory_limit_is_a_projection_not_a_guard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a memory_limit given in the marker (or a cgroup limit) stops a soak; the 700 MiB default does not."""
    monkeypatch.setattr(guard, "CGROUP_ROOT", str(tmp_path / "none"))
    monkeypatch.setattr(guard, "PROC_SELF_CGROUP", str(tmp_path / "none"))

    def guards(**kwargs: object) -> list[MemoryGuard]:
        runner = soak._Runner(
            None, soak_cfg.soak_config(MarkedItem(**kwargs)), tmp_path / "x.jsonl", lambda: None
        )  # type: ignore[arg-type]
        runner.problems = []
        return runner._guards()

    assert guards() == []
    (explicit,) = guards(memory_limit="1 GiB")
    assert (explicit.metric, explicit.stop_at) == ("RSS", GiB - GiB // 10)
    tree(tmp_path / "cg", {"cgroup.controllers": "memory", "memory.max": str(2 * GiB)})
    monkeypatch.setattr(guard, "CGROUP_ROOT", str(tmp_path / "cg"))
    both = guards(memory_limit="1 GiB", memory_margin="100 MiB")
    assert [(g.metric, g.stop_at) for g in both] == [
        ("RSS", GiB - 100 * MiB),
        ("cgroup working set", 2 * GiB - 100 * MiB),
    ]
