"""The session's report files: JSON, HTML, GitHub summary, atomic writes, safe names."""

from __future__ import annotations

import atexit
import json
import math
import os
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from html.parser import HTMLParser

import markupsafe
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_memleak.evidence.flamegraph import safe_name
from pytest_memleak.report import (
    SCHEMA,
    ReportWriteError,
    append_github_summary,
    ensure_dir,
    github_summary,
    html_page,
    write_html,
    write_json,
)
from pytest_memleak.results import (
    CLEAN,
    INCONCLUSIVE,
    LEAK,
    NO_VERDICT,
    Finding,
    LeakResult,
    SiteGrowth,
    SoakResult,
)

MiB = 1024 * 1024
ROOT = pathlib.Path(__file__).resolve().parent.parent
HOSTILE_IDS = [
    "tests/test_x.py::test_a[<script>alert(1)</script>]",
    'tests/test_x.py::test_b["quoted" & \'single\' & &amp;]',
    "tests/test_x.py::test_c[</td></tr><img src=x onerror=alert(1)>]",
    "tests/test_ünïcode.py::test_日本語[Ω≈ç√∫ 🎉]",
    "tests/test_x.py::test_d[../../etc/passwd|`pipe`*star*_under_[link](http://evil)]",
]


def leak(nodeid: str = "tests/test_cache.py::test_leaks", per_run: float = 96 * 1024, flamegraph: str | None = None) -> LeakResult:
    return LeakResult(
        nodeid=nodeid,
        status=LEAK,
        reason=f"heap retained {per_run:.0f} B/run <b>at</b> app/cache.py:42",
        runs=29,
        measured_runs=27,
        retained_per_run=per_run,
        findings=[Finding("heap", per_run, 0, "B", "heap retained <img src=y> per run", ["app/cache.py:42 & co"])],
        sites=[SiteGrowth("app/cache.py:42", per_run, 3.0, int(per_run * 24), 72, ["app/cache.py:42", "<svg onload=x>"])],
        grown_types={"dict": 3.0, "<Evil>": 1.0},
        series={
            "screen.blocks": [1000.0, 1310.0, 1620.0, 1930.0],
            "confirm.traced": [50 * MiB + i * per_run * 3 for i in range(8)],
            "confirm.fds": [7.0] * 8,
        },
        retention=["module app.cache -> _CACHE -> <list>"],
        details=["detail & more"],
        problems=["a <problem>"],
        flamegraph=flamegraph,
        seconds=1.5,
        settings={"retained": 0},
    )


def clean(nodeid: str = "tests/test_ok.py::test_fine") -> LeakResult:
    return LeakResult(
        nodeid=nodeid,
        status=CLEAN,
        reason="no growth over 3 measured run(s)",
        runs=4,
        measured_runs=3,
        series={"screen.blocks": [5000.0, 5000.0, 5002.0, 5000.0], "screen.rss": [80 * MiB] * 4},
        settings={"retained": 0},
    )


def soak(limit: int | None = 256 * MiB, nodeid: str = "tests/test_soak.py::test_soak") -> SoakResult:
    slope = 40 * MiB / 3600
    t = [k * 10.0 for k in range(180)]
    return SoakResult(
        nodeid=nodeid,
        status=LEAK,
        reason="RSS grows 40 MiB/h",
        expect_leak=True,
        duration=1800.0,
        iterations=90_000,
        memory_limit=limit,
        slope_per_hour=40 * MiB,
        slope_lower=36 * MiB,
        slope_upper=44 * MiB,
        time_to_limit=(limit - (180 * MiB + slope * t[-1])) / slope if limit else None,  # 5040 s for 256 MiB
        throughput=50.0,
        t=t,
        rss=[180 * MiB + slope * x for x in t],
        heap=[60 * MiB + slope * 0.5 * x for x in t],
        heap_unit="B",
        fit_intercept=180 * MiB,
        fit_slope_per_second=slope,
    )


def read_html(path: pathlib.Path) -> str:
    return path.read_text(encoding="utf-8")


class TagCounter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: dict[str, int] = {}
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        self.attrs.extend(attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(text: str) -> TagCounter:
    parser = TagCounter()
    parser.feed(text)
    parser.close()
    return parser


# --------------------------------------------------------------------------- JSON


def test_json_round_trips_results_and_counts(tmp_path: pathlib.Path) -> None:
    tests = [leak(), clean(), LeakResult("t::inc", INCONCLUSIVE, "not repeatable"), LeakResult("t::nv", NO_VERDICT, "skipped")]
    soaks = [soak(), soak(limit=None, nodeid="t::soak2")]
    path = tmp_path / "memleak.json"
    meta = {"started": "2025-01-01T00:00:00+00:00", "duration": 12.5, "settings": {"retained": 0, "runs": 3}}
    # generators: the writer must not need to iterate its inputs twice
    assert write_json(path, (t.to_dict() for t in tests), (s.to_dict() for s in soaks), meta) is None

    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["schema"] == SCHEMA == "pytest-memleak/1"
    assert data["meta"]["duration"] == 12.5 and data["meta"]["settings"] == {"retained": 0, "runs": 3}
    assert data["meta"]["python"] and data["meta"]["pytest"] and data["meta"]["generated"]
    summary = data["summary"]
    assert summary["tests"] == 4 and summary["soaks"] == 2
    assert summary["by_status"] == {LEAK: 1, INCONCLUSIVE: 1, NO_VERDICT: 1, CLEAN: 1}
    assert summary["leaking"] == ["tests/test_cache.py::test_leaks"]
    assert summary["inconclusive"] == ["t::inc"]
    assert summary["soaks_by_status"][LEAK] == 2
    assert summary["soaks_unexpected"] == []
    assert [LeakResult.from_dict(d) for d in data["tests"]] == tests
    assert [SoakResult.from_dict(d) for d in data["soaks"]] == soaks


def test_json_is_strict_json_and_keeps_unknown_fields(tmp_path: pathlib.Path) -> None:
    result = leak().to_dict()
    result["future_field"] = {"x": (1, 2)}  # fields may be added later: they pass through
    result["retained_per_run"] = float("nan")
    bad_soak = soak().to_dict()
    bad_soak["time_to_limit"] = math.inf
    path = tmp_path / "memleak.json"
    write_json(path, [result], [bad_soak], {"path": pathlib.Path("/x")})

    def no_constants(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    data = json.loads(path.read_text(encoding="utf-8"), parse_constant=no_constants)
    assert data["tests"][0]["future_field"] == {"x": [1, 2]}
    assert data["tests"][0]["retained_per_run"] is None
    assert data["soaks"][0]["time_to_limit"] is None
    assert data["meta"]["path"] == "/x"


def test_json_empty_session(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "memleak.json"
    write_json(path, [], [], {})
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["tests"] == [] and data["soaks"] == [] and data["summary"]["tests"] == 0


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_keeps_the_old_json_when_serialisation_fails(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "memleak.json"
    write_json(path, [clean().to_dict()], [], {})
    before = path.read_bytes()

    tests = [clean(f"t::{i}").to_dict() for i in range(50)]
    tests[40]["series"] = {"x": [object()]}  # not JSON: fails after 40 tests were written
    with pytest.raises(OSError) as info:
        write_json(path, tests, [], {})
    assert isinstance(info.value, ReportWriteError)
    assert "not JSON serialisable" in str(info.value)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["memleak.json"]  # no temp file left behind


def test_atomic_write_keeps_the_old_html_when_rendering_fails_midway(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "memleak.html"
    write_html(path, [clean().to_dict()], [], {})
    before = path.read_bytes()
    real_row = html_page._test_view
    calls = []

    def failing_row(*args: object, **kwargs: object) -> str:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return real_row(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(html_page, "_test_view", failing_row)
    with pytest.raises(ReportWriteError, match="boom"):
        write_html(path, [clean(f"t::{i}").to_dict() for i in range(10)], [], {})
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["memleak.html"]


def test_a_failing_input_stream_is_an_oserror(tmp_path: pathlib.Path) -> None:
    def stream():
        yield clean().to_dict()
        raise json.JSONDecodeError("truncated line", "{", 1)

    with pytest.raises(OSError, match="reading the results failed"):
        write_json(tmp_path / "memleak.json", stream(), [], {})
    with pytest.raises(OSError):
        write_html(tmp_path / "memleak.html", stream(), [], {})
    assert not list(tmp_path.iterdir())


def test_writers_raise_oserror_for_a_missing_directory(tmp_path: pathlib.Path) -> None:
    with pytest.raises(OSError):
        write_json(tmp_path / "nope" / "memleak.json", [], [], {})
    with pytest.raises(OSError):
        write_html(tmp_path / "nope" / "memleak.html", [], [], {})


def test_ensure_dir(tmp_path: pathlib.Path) -> None:
    assert ensure_dir(tmp_path / "a" / "b") is None
    assert (tmp_path / "a" / "b").is_dir()
    assert ensure_dir(tmp_path / "a" / "b") is None  # again: fine
    (tmp_path / "file").write_text("x")
    problem = ensure_dir(tmp_path / "file" / "reports")
    assert problem and "cannot write reports" in problem
    assert ensure_dir(tmp_path / "file") is not None  # a file, not a directory


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write to read-only directories")
def test_ensure_dir_reports_a_read_only_directory(tmp_path: pathlib.Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert ensure_dir(locked) is not None
    finally:
        locked.chmod(0o700)


# --------------------------------------------------------------------------- HTML


def test_html_escapes_hostile_ids_and_messages(tmp_path: pathlib.Path) -> None:
    tests = [leak(HOSTILE_IDS[0])] + [clean(i) for i in HOSTILE_IDS[1:]]
    tests.append(LeakResult(HOSTILE_IDS[2] + "x", INCONCLUSIVE, "<script>alert(2)</script>", problems=["<marquee>p</marquee>"]))
    soaks = [soak(nodeid=HOSTILE_IDS[0])]
    path = tmp_path / "memleak.html"
    meta = {"settings": {"<k>": "<v>"}, "started": "<now>"}
    write_html(path, [t.to_dict() for t in tests], [s.to_dict() for s in soaks], meta)
    text = read_html(path)

    parsed = parse(text)
    assert not {"script", "img", "marquee", "svg"} & set(parsed.tags) - {"svg"}
    assert parsed.tags.get("svg", 0) == text.count('<svg class="')  # only our own charts
    assert not any(name.startswith("on") for name, _ in parsed.attrs)
    assert "<script" not in text.lower() and "<img" not in text.lower()
    for nodeid in HOSTILE_IDS:
        assert str(markupsafe.escape(nodeid)) in text
    visible = "".join(parsed.text)
    for nodeid in HOSTILE_IDS:
        assert nodeid in visible  # shown verbatim to the reader
    assert "<problem>" in visible and "<Evil>" in visible and "<svg onload=x>" in visible


def test_html_is_self_contained(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "memleak.html"
    write_html(path, [leak().to_dict(), clean().to_dict()], [soak().to_dict()], {})
    text = read_html(path)
    parsed = parse(text)
    assert "script" not in parsed.tags and "link" not in parsed.tags and "iframe" not in parsed.tags
    urls = set(re.findall(r"(?:https?:)?//[^\s\"'<>)]+", text))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls
    assert not any(name in ("src", "srcset", "data", "style") and v and "url(" in v or name == "src" for name, v in parsed.attrs)
    style = text[text.index("<style>") : text.index("</style>")]
    assert "@import" not in style and "url(" not in style
    assert text.startswith("<!doctype html>") and text.rstrip().endswith("</html>")
    assert '<meta charset="utf-8">' in text


def test_html_charts_for_a_leak_and_a_soak_with_limit(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "memleak.html"
    write_html(path, [clean().to_dict(), leak().to_dict()], [soak().to_dict()], {"duration": 65.0})
    text = read_html(path)
    # leaks first
    assert text.index("tests/test_cache.py::test_leaks") < text.index("tests/test_ok.py::test_fine")
    # the leak's detail charts: one per changing metric, constants listed as text
    assert text.count('class="chart series-chart"') == 2
    # named in words, not by their keys (confirm.traced, screen.blocks, confirm.fds)
    assert "traced Python heap bytes at each checkpoint" in text and "allocated blocks, screening after each run" in text
    assert "confirm." not in text and "screen." not in text
    assert "Unchanged: open file descriptors at each checkpoint: 7" in text
    assert 'class="spark"' in text
    # the soak: samples, fitted trend, limit line, projection
    soak_svg = re.search(r'<svg class="chart soak-chart".*?</svg>', text, re.S)
    assert soak_svg is not None
    svg = soak_svg.group(0)
    assert 'data-series="RSS"' in svg and 'data-series="Python heap"' in svg and 'data-series="trend"' in svg
    assert 'class="limit"' in svg and "limit 256.0 MiB" in svg
    assert "projected to reach the 256.0 MiB limit in 1 h 24 min" in text
    # within three times the soak's span: the trend runs on to the limit in the chart, its time marked
    assert 'data-series="projection"' in svg and 'class="marker"' in svg and "limit in 1 h 24 min" in svg
    assert "MiB" in svg and "min" in svg  # labelled axes with units
    # the chart's points stay inside its box
    width, height = map(float, re.search(r'viewBox="0 0 (\d+) (\d+)"', svg).groups())
    for points in re.findall(r'points="([^"]+)"', svg):
        for pair in points.split():
            x, y = map(float, pair.split(","))
            assert 0 <= x <= width and 0 <= y <= height


def test_html_soak_without_limit_says_so(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "memleak.html"
    write_html(path, [], [soak(limit=None).to_dict()], {})
    text = read_html(path)
    assert 'class="limit"' not in text and "none set" in text and 'data-series="trend"' in text


def test_html_soak_with_a_far_limit_keeps_the_data_readable(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "memleak.html"
    write_html(path, [], [soak(limit=64 * 1024 * MiB).to_dict()], {})
    text = read_html(path)
    assert "memory limit 64.0 GiB: above the chart" in text
    # a second chart projects the trend to the limit, with the time it is reached marked
    projection = re.search(r'<svg class="chart soak-chart"[^>]*aria-label="projection to the memory limit.*?</svg>', text, re.S)
    assert projection is not None and 'class="limit"' in projection.group(0) and 'class="marker"' in projection.group(0)
    assert "limit in 68 d" in projection.group(0)


def test_flamegraph_links_are_relative_to_the_html(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reports = tmp_path / "reports"
    graphs = reports / "flamegraphs"
    graphs.mkdir(parents=True)
    absolute = graphs / "a b&c.html"
    absolute.write_text("x")
    (graphs / "rel.html").write_text("x")
    monkeypatch.chdir(tmp_path)
    tests = [
        leak("t::abs", flamegraph=str(absolute)).to_dict(),
        leak("t::rel", flamegraph="reports/flamegraphs/rel.html").to_dict(),  # relative to the cwd
        leak("t::gone", flamegraph=str(graphs / "gone.html")).to_dict(),
        leak("t::js", flamegraph="javascript:alert(1)").to_dict(),
    ]
    path = reports / "memleak.html"
    write_html(path, tests, [], {})
    hrefs = [v for k, v in parse(read_html(path)).attrs if k == "href" and v and not v.startswith("#")]
    assert "flamegraphs/a%20b%26c.html" in hrefs
    assert "flamegraphs/rel.html" in hrefs
    assert all(not re.match(r"^[a-z]+:", h) for h in hrefs), hrefs  # no scheme, ever
    assert not any("gone" in h for h in hrefs)
    assert "missing" in read_html(path)
    for href in hrefs:
        if "a%20b" in href or "rel" in href:
            from urllib.parse import unquote

            assert (reports / unquote(href)).is_file()


def many_results(n: int, leak_every: int | None = 100) -> list[dict]:
    out = []
    for i in range(n):
        if leak_every and i % leak_every == 0:
            out.append(leak(f"tests/test_mod_{i // 50}.py::test_case[{i}]", per_run=1024.0 + i).to_dict())
        else:
            out.append(clean(f"tests/test_mod_{i // 50}.py::test_case[{i}]").to_dict())
    return out


def test_html_with_5000_tests_is_small(tmp_path: pathlib.Path) -> None:
    tests = many_results(5000)
    path = tmp_path / "memleak.html"
    write_html(path, iter(tests), [soak().to_dict()], {})
    size = path.stat().st_size
    text = read_html(path)
    assert size < 10 * MiB, size
    assert text.count('<tr class="clean"') == 4950 and text.count('<tr class="leak"') == 50
    assert text.count('class="chart series-chart"') == 50 * 2  # every leak gets its charts
    assert text.count('class="spark"') == 50 + html_page.MAX_CHARTED_OTHERS  # sparklines bounded
    assert "Sparklines are shown for the first 200 of 4,950 other tests" in text
    print(f"5,000 tests: {size / MiB:.1f} MiB (benchmarks/render_report.py times it)")


def test_html_with_5000_leaks_stays_bounded(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "memleak.html"
    write_html(path, many_results(5000, leak_every=1), [], {})
    text = read_html(path)
    assert path.stat().st_size < 10 * MiB
    assert text.count('class="detail"') == html_page.MAX_DETAILED
    assert "Detail sections with charts are shown for the first 300 of 5,000" in text


def test_html_renders_odd_and_partial_results(tmp_path: pathlib.Path) -> None:
    odd = [
        {"nodeid": "t::minimal", "status": LEAK},
        {"nodeid": None, "status": None, "series": {"x": [None, "nan", 1, float("inf"), 3]}},
        {"nodeid": "t::weird", "status": "brand-new-status", "findings": ["not a dict"], "sites": [None],
         "series": "not a dict", "retained_per_run": "lots", "grown_types": [], "flamegraph": 42},
        {"nodeid": "t::one-point", "status": INCONCLUSIVE, "series": {"confirm.traced": [5.0]}},
    ]
    odd_soaks = [{"nodeid": "s::empty", "status": CLEAN}, {"nodeid": "s::bad", "t": [0, 1], "rss": [None, "x"],
                                                         "memory_limit": 0, "time_to_limit": -5}]
    path = tmp_path / "memleak.html"
    write_html(path, odd, odd_soaks, {"duration": "soon", "started": 1.7e9})
    text = read_html(path)
    # typed on the way in: an unknown status reads as inconclusive, odd values as their defaults
    assert "t::weird" in text and "t::minimal" in text and "No samples to chart." in text


# --------------------------------------------------------------------------- GitHub summary


def test_github_summary_lists_leaks_and_soaks() -> None:
    tests = [leak(HOSTILE_IDS[4]).to_dict(), clean().to_dict(), LeakResult("t::inc", INCONCLUSIVE, "flaky").to_dict()]
    soaks = [soak().to_dict(), {**soak(nodeid="t::s2").to_dict(), "status": CLEAN}]
    text = github_summary(iter(tests), iter(soaks), report="reports/memleak.html")
    assert "**1 of 3 checked tests leak; 1 of 2 soaks leaks (all expected to).**" in text
    leak_rows = [line for line in text.splitlines() if "test&#95;d" in line]
    assert len(leak_rows) == 1
    row = leak_rows[0]
    # the id cannot break the table or inject Markdown: pipes, backticks, emphasis, links escaped
    assert row.count("|") == 5
    assert "`" not in row and "](" not in row and "*" not in row and "http://" not in row
    assert "96.0 KiB/run" in row and "app/cache.py:42" in row
    assert "t::inc" in text and "🔴 leak" in text and "🟢 clean" in text
    assert "1 h 24 min to 256.0 MiB" in text and "mismatch" in text  # s2 expected a leak and got none
    assert "reports/memleak.html" in text


def test_github_summary_without_leaks_is_short() -> None:
    text = github_summary([clean().to_dict()], [])
    assert "No leaks in 1 checked test." in text and "| Test |" not in text


def test_github_summary_caps_rows() -> None:
    text = github_summary(many_results(1000, leak_every=1), [], max_rows=20)
    assert text.count("<code>tests/test&#95;mod&#95;") == 20 and "… and 980 more" in text


def test_append_github_summary(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "summary.md"
    env = {"GITHUB_STEP_SUMMARY": str(target)}
    assert append_github_summary("# one", env) is None
    assert append_github_summary("# two\n", env) is None
    assert target.read_text(encoding="utf-8").split() == ["#", "one", "#", "two"]
    assert append_github_summary("x", {}) is None  # not on GitHub: nothing to do
    problem = append_github_summary("x", {"GITHUB_STEP_SUMMARY": str(tmp_path)})  # a directory
    assert problem and "GITHUB_STEP_SUMMARY" in problem


def test_append_github_summary_truncates_huge_text(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "summary.md"
    append_github_summary("line\n" * 400_000, {"GITHUB_STEP_SUMMARY": str(target)})
    assert target.stat().st_size < 1024 * 1024
    assert "summary truncated" in target.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- safe_name

SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
NAMES_DIR = pathlib.Path(tempfile.mkdtemp(prefix="memleak-safe-names-"))
atexit.register(shutil.rmtree, NAMES_DIR, True)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=600), st.sampled_from(["", ".html", ".bin", "../x", ".."]))
def test_safe_name_is_valid_bounded_and_stays_inside(nodeid: str, suffix: str) -> None:
    name = safe_name(nodeid, suffix)
    assert SAFE.match(name), name
    assert len(name) <= 120 and ".." not in name and "/" not in name
    target = (NAMES_DIR / name).resolve()
    assert target.parent == NAMES_DIR.resolve()
    assert safe_name(nodeid, suffix) == name  # stable
    if suffix in (".html", ".bin"):
        assert name.endswith(suffix)
    target.write_text("ok")  # valid on disk
    target.unlink()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=300), unique=True, max_size=40), st.integers(min_value=32, max_value=200))
def test_safe_name_keeps_distinct_ids_distinct(ids: list[str], max_len: int) -> None:
    names = [safe_name(i, ".html", max_len=max_len) for i in ids]
    assert len(set(names)) == len(ids)
    assert all(len(n) <= max_len for n in names)


def test_safe_name_examples() -> None:
    base = "tests/test_x.py::test_a"
    variants = [base, base.replace("/", "_"), base.replace("/", ":"), base + "[a/b]", base + "[a_b]"]
    assert len({safe_name(v) for v in variants}) == len(variants)
    long_a, long_b = "x" * 500 + "a", "x" * 500 + "b"
    assert safe_name(long_a) != safe_name(long_b)
    assert safe_name("../../etc/passwd").startswith("etc_passwd-")
    assert safe_name("...") == safe_name("...").lstrip(".-_")
    assert safe_name("tests/test_x.py::test_a[1]", ".html").startswith("tests_test_x.py_test_a_1-")
    assert re.fullmatch(r"[0-9a-f]{12}", safe_name(""))


def test_flamegraph_module_does_not_import_memray() -> None:
    code = "import sys, pytest_memleak.evidence.flamegraph, pytest_memleak.report; print('memray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- screenshot

CHROMIUM = "/usr/bin/chromium"


def read_png(path: pathlib.Path) -> tuple[int, int, int, bytes]:
    """Decode an 8-bit RGB/RGBA PNG into (width, height, bytes per pixel, pixels)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, [], 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat.append(chunk)
        pos += 12 + length
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    out = bytearray(stride * height)
    prev = bytearray(stride)
    for row in range(height):
        start = row * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        out[row * stride : (row + 1) * stride] = line
        prev = line
    return width, height, bpp, bytes(out)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"headless Chromium is not installed at {CHROMIUM}")
def test_sample_report_screenshot_is_not_blank(tmp_path: pathlib.Path) -> None:
    script = ROOT / "benchmarks" / "render_report.py"
    done = subprocess.run(
        [sys.executable, str(script), "--out-dir", str(tmp_path), "--window-size", "900,700"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    png = tmp_path / "sample.png"
    if not png.is_file():
        pytest.skip(f"Chromium made no screenshot: {done.stdout} {done.stderr}"[:500])
    width, height, bpp, pixels = read_png(png)
    assert (width, height) == (900, 700)
    colours = {pixels[i : i + 3] for i in range(0, len(pixels), bpp * 7)}
    non_white = sum(1 for i in range(0, len(pixels), bpp * 7) if pixels[i : i + 3] != b"\xff\xff\xff")
    sampled = len(pixels) // (bpp * 7)
    assert len(colours) > 50, "the screenshot has almost no colours"
    assert non_white / sampled > 0.05, "the screenshot is nearly all white"
    # the verdict colour of the leak badge and the soak chart's RSS line are on screen
    assert any(abs(p[0] - 0xC6) < 12 and abs(p[1] - 0x28) < 12 and abs(p[2] - 0x28) < 12 for p in colours)
    assert shutil.which(CHROMIUM) or os.path.exists(CHROMIUM)
