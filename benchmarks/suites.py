"""Cost of `pytest --memleak` against plain `pytest` on the own test suites of real libraries.

Each library below is pinned and comes from PyPI as a **source distribution**, which ships its
tests. It gets a venv of its own, ``~/.cache/pytest-memleak-bench/venvs/<lib>-<version>``
(``$MEMLEAK_BENCH_CACHE`` moves the root), made with Python 3.11 and holding:

* the library, ``pip install <unpacked sdist>``;
* pytest (pinned) and the test dependencies the library's own CI installs (pinned);
* the plugin's dependencies. The plugin itself is built from ``--plugin PATH`` (default: the
  source tree this script lives in), non-editable, into ``<cache>/plugins/<hash of its
  files>``, which each pytest run puts on PYTHONPATH (pytest finds its entry point there). A
  changed file makes a new snapshot, so a run measures the tree as it was when the run
  started, and runs with different plugins can share the venvs, even at the same time.

The tests run from the unpacked sdist, with the library's own pytest configuration, in two
modes with the same arguments (``-q -p no:cacheprovider`` and the library's paths and
deselects):

* ``plain``:     ``pytest -p no:memleak`` (the plugin installed but not loaded)
* ``--memleak``: ``pytest --memleak --memleak-report-dir=<tmp>``

After one unmeasured warm-up run of each mode, ``--rounds`` rounds alternate the order
(plain then --memleak, then --memleak then plain, ...). Prints each round's times as they come,
then a table: tests, the median time of each mode, the median of the per-round ratios, how
many tests the cost budget (``memleak_budget``, at its default unless ``MEMLEAK_BUDGET`` is
set) did not reach, how many ``--memleak`` flagged as leaking and as inconclusive, and the three tests whose
checking cost the most, with their verdict and reason from ``memleak.json``. Then the median
and the largest ratio across suites against the targets: median <= 1.5x, every suite <= 2.0x,
no false positive (on these suites every flagged test is one unless it truly leaks).

    python benchmarks/suites.py                          # every library, 3 rounds
    python benchmarks/suites.py --only cachetools,attrs --rounds 5
    python benchmarks/suites.py --plugin /tmp/memleak-base --rounds 1 --json out.json
    python benchmarks/suites.py --list                   # the libraries, paths and deselects
    python benchmarks/suites.py --check                  # one plain run each: failures to deselect

Exits 0 when it ran (a missed target is printed, not an error), 1 when a suite could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    PYTEST,
    REPO,
    Library,
    Run,
    Venv,
    base_python,
    cache_dir,
    count_tests,
    ensure_venv,
    exit_on_sigterm,
    failure_sections,
    failure_text,
    fetch_sdist,
    plugin_fingerprint,
)

TARGET_MEDIAN = 1.5
TARGET_MAX = 2.0

HYPOTHESIS = "hypothesis==6.155.2"
PYTEST_ASYNCIO = "pytest-asyncio==1.5.0"

# Plain times are on this project's 2-core machine, idle. Every deselect and every subset of a
# suite's paths says why in `why`.
LIBRARIES: dict[str, Library] = {
    lib.name: lib
    for lib in (
        Library(
            "cachetools", "8.0.2", ("tests",),
            note="caching: cache classes, @cached, @cachedmethod, locking",
        ),
        Library(
            "boltons", "26.2.0", ("tests",),
            why="its CI also runs the doctests of the installed package (--doctest-modules on site-packages); left out, the tests/ suite is the benchmark",
            note="utilities, with socket and thread tests",
        ),
        Library(
            "wrapt", "2.5.2", ("tests/core",),
            why="tests/mypy runs mypy once per file (a type-checker benchmark, not a test one) and tests/stress are not pytest tests",
            note="wrappers and proxies; C extension built from the sdist",
        ),
        Library(
            "attrs", "26.1.0", ("tests",),
            options=("--deselect=tests/test_converters.py::TestPipe::test_wrapped_annotation",),
            deps=(HYPOTHESIS, "pympler==1.1", "cloudpickle==3.1.3"),
            why=(
                "TestPipe::test_wrapped_annotation fails plain on Python 3.11.7 (the pipe converter's return annotation comes back None); "
                "run without pytest-xdist (its CI passes -n auto); test_mypy.yml needs pytest-mypy-plugins and is not collected without it"
            ),
            note="class building; hypothesis strategies",
        ),
        Library(
            "aiofiles", "25.1.0", ("tests",),
            options=("--deselect=tests/test_os.py::test_access",),
            deps=(PYTEST_ASYNCIO,),
            why="test_os.py::test_access fails plain as root (os.access grants root everything)",
            note="asyncio file I/O in threads; pytest-asyncio, asyncio_mode=auto",
        ),
        Library(
            "janus", "2.0.0", ("tests/test_async.py", "tests/test_mixed.py", "tests/test_sync.py"),
            deps=(PYTEST_ASYNCIO, "pytest-cov==7.1.0"),
            why="tests/test_benchmarks.py left out: it needs the `benchmark` fixture of pytest-codspeed; pytest-cov only because its addopts name --cov-branch",
            note="sync/async queue; pytest-asyncio, strict mode",
        ),
        Library(
            "asgiref", "3.13.0", ("tests",),
            options=("--ignore=tests/test_benchmark_local.py",),
            deps=(PYTEST_ASYNCIO, "packaging==26.4"),
            why="tests/test_benchmark_local.py needs pytest-benchmark (its CI runs it in a separate benchmark env)",
            note="sync_to_async, Local, ASGI server; pytest-asyncio",
        ),
        Library(
            "httpcore", "1.0.9", ("tests",),
            options=("--ignore=tests/_async/test_integration.py", "--ignore=tests/_sync/test_integration.py", "--ignore=tests/test_api.py"),
            deps=("anyio==4.16.0", "trio==0.35.0", "pytest-trio==0.8.0", "h2==4.4.1", "socksio==1.0.0"),
            why="tests/_async/test_integration.py, tests/_sync/test_integration.py and tests/test_api.py need pytest-httpbin's local servers (httpbin, httpbin_secure fixtures)",
            note="HTTP/1.1, HTTP/2, proxies on mock streams; anyio's pytest plugin (@pytest.mark.anyio)",
        ),
        Library("toolz", "1.2.0", ("toolz",), note="functional utilities; tests in toolz/tests and toolz/sandbox/tests"),
        Library("six", "1.17.0", ("test_six.py",), note="Python 2/3 compatibility; one test file"),
        Library(
            "more-itertools", "11.2.1", ("tests",),
            note="iterator recipes; unittest TestCases with many subtests",
        ),
        Library(
            "pyparsing", "3.3.3",
            (
                # in the order a run of tests/ takes: test_pre_pep8_deprecation_warnings.py must come
                # before test_unit.py, whose calls use up the once-per-name deprecation warnings
                "tests/test_diagram.py", "tests/test_pep8_converter.py", "tests/test_pre_pep8_deprecation_warnings.py",
                "tests/test_simple_unit.py", "tests/test_testing.py", "tests/test_unit.py::Test02_WithoutPackrat",
                "tests/test_util.py",
            ),
            deps=("railroad-diagrams==3.0.1", "jinja2==3.1.6"),
            why=(
                "the whole of tests/ takes 70-80 s plain: test_unit.py's Test04..Test10 run Test02's tests again under "
                "packrat and left-recursion settings (Test02 kept), test_examples.py runs the examples (19 tests, 7 s); "
                "test_matplotlib_cases.py skips without matplotlib, which its CI installs; examples/tiny/tests left out"
            ),
            note="parser combinators",
        ),
        Library(
            "python-dateutil", "2.9.0.post0", ("tests",),
            options=("-W", "ignore::pytest.PytestRemovedIn10Warning"),
            deps=(HYPOTHESIS, "freezegun==1.5.5", "pytest-cov==7.1.0"),
            why=(
                "-W ignore::pytest.PytestRemovedIn10Warning: test_isoparser.py parametrizes with generators, which pytest 9 "
                "deprecates, and its filterwarnings=error turns that into a collection error; "
                "pytest-cov only because its conftest marks tests no_cover (and warnings are errors)"
            ),
            note="dates, time zones, rrule; hypothesis property tests",
        ),
        Library(
            "marshmallow", "4.4.0", ("tests",),
            deps=("simplejson==4.3.0",),
            note="(de)serialisation schemas",
        ),
        Library("idna", "3.20", ("tests",), deps=(HYPOTHESIS,), note="IDNA 2008 / UTS 46 codec; large conformance tables"),
    )
}

MODES = {"plain": ["-p", "no:memleak"], "memleak": ["--memleak"]}
FAILURE_TEXTS = 5  # flagged tests per suite whose failure text is printed
LABELS = {"plain": "plain", "memleak": "--memleak"}


@dataclass
class Suite:
    lib: Library
    status: str = "ok"  # ok, TIMEOUT, ERROR
    problem: str = ""
    tests: int | None = None
    plain_line: str = ""
    memleak_line: str = ""
    warmup: dict[str, Run] = field(default_factory=dict)
    partial: Run | None = None  # a --memleak run cut short by the timeout: its report of the tests done
    runs: dict[str, list[Run]] = field(default_factory=lambda: {m: [] for m in MODES})

    @property
    def ratios(self) -> list[float]:
        return [b.seconds / a.seconds for a, b in zip(self.runs["plain"], self.runs["memleak"], strict=True)]

    def median(self, mode: str) -> float | None:
        runs = self.runs[mode]
        return statistics.median(r.seconds for r in runs) if runs else None

    @property
    def ratio(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None

    @property
    def memleak_runs(self) -> list[Run]:
        """The measured --memleak runs; without one, the run stopped at the timeout (its report
        holds the tests checked until then)."""
        return self.runs["memleak"] or ([self.partial] if self.partial else [])

    @property
    def verdict_runs(self) -> list[Run]:
        """The --memleak runs whose verdicts count: the warm-up too (a verdict is not a time)."""
        warm = self.warmup.get("memleak")
        return ([warm] if warm is not None and warm.report is not None else []) + self.memleak_runs

    def flagged(self) -> dict[str, list[dict]]:
        """Each test that a --memleak run, the warm-up included, flagged (leak or inconclusive):
        its results. A test flagged in some runs only shows as such."""
        out: dict[str, list[dict]] = {}
        for run in self.verdict_runs:
            for test in (run.report or {}).get("tests", []):
                if test.get("status") in ("leak", "inconclusive"):
                    out.setdefault(test["nodeid"], []).append(test)
        return out

    def count(self, status: str) -> int:
        """Tests flagged with `status` in at least one --memleak run."""
        return sum(1 for tests in self.flagged().values() if any(t["status"] == status for t in tests))

    def unreached(self) -> int | None:
        """Tests the cost budget did not reach (``memleak_budget``), in the median measured run."""
        counts = sorted(sum(1 for t in (run.report or {}).get("tests", []) if t.get("over_budget")) for run in self.memleak_runs if run.report)
        return counts[len(counts) // 2] if counts else None

    def costliest(self, n: int = 3) -> list[dict]:
        """The `n` tests with the largest median checking time over the measured rounds.

        Without a measured round, those of the run that timed out (up to where it was stopped).
        """
        seconds: dict[str, list[float]] = {}
        last: dict[str, dict] = {}
        for run in self.memleak_runs:
            for test in (run.report or {}).get("tests", []):
                seconds.setdefault(test["nodeid"], []).append(float(test.get("seconds") or 0.0))
                last[test["nodeid"]] = test
        ranked = sorted(seconds, key=lambda k: -statistics.median(seconds[k]))[:n]
        return [
            {
                "nodeid": k,
                "seconds": statistics.median(seconds[k]),
                "status": last[k].get("status"),
                "reason": last[k].get("reason") or "",
                "runs": last[k].get("runs"),
            }
            for k in ranked
        ]


def closing(run: Run) -> str:
    if run.timed_out:
        return f"TIMEOUT after {run.seconds:.0f} s"
    return run.last_line


def failed_tests(run: Run) -> list[str]:
    """Node ids of the tests that failed or errored, from pytest's short summary (-rfE is the -q default)."""
    out = []
    for line in run.stdout.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            out.append(line.split(" ", 1)[1].split(" - ", 1)[0])
    return out


def run_mode(suite: Suite, venv: Venv, src: Path, mode: str, report_dir: Path, timeout: float) -> Run:
    args = [*MODES[mode], *suite.lib.args]
    return venv.run(src, args, report_dir=report_dir if mode == "memleak" else None, timeout=timeout)


def usable(run: Run) -> bool:
    """pytest ran the suite: 0 all passed, 1 some test failed (a leak, or the library's own failure)."""
    return run.returncode in (0, 1)


def timed_out(suite: Suite, run: Run, mode: str, when: str, timeout: float) -> None:
    """Record a run stopped at the timeout, and print where it was."""
    suite.status, suite.problem = "TIMEOUT", f"{LABELS[mode]} ran longer than --timeout {timeout:.0f} s ({when})"
    if mode == "memleak":
        suite.partial = run
    print(f"  {suite.lib.name} {suite.lib.version} {when}: {LABELS[mode]} TIMEOUT after {run.seconds:.0f} s; its last lines:", flush=True)
    print(textwrap.indent("\n".join(run.stdout.strip().splitlines()[-12:]), "    | "), flush=True)
    if run.report:
        tests = run.report.get("tests", [])
        print(f"    the report written after Ctrl-C holds {len(tests)} checked tests; the last: {tests[-1]['nodeid'] if tests else '-'}", flush=True)


def measure(suite: Suite, venv: Venv, src: Path, rounds: int, timeout: float) -> None:
    name = f"{suite.lib.name} {suite.lib.version}"
    with tempfile.TemporaryDirectory(prefix="memleak-suites-") as tmp:
        report_dir = Path(tmp) / "reports"
        for mode in MODES:  # warm the file system and bytecode caches, unmeasured
            run = suite.warmup[mode] = run_mode(suite, venv, src, mode, report_dir, timeout)
            if run.timed_out:
                timed_out(suite, run, mode, "warm-up", timeout)
                return
            print(f"  {name} warm-up {LABELS[mode]}: {run.seconds:.2f} s ({closing(run)})", flush=True)
            if not usable(run):
                suite.status = "ERROR"
                suite.problem = f"{LABELS[mode]} exited {run.returncode}: {closing(run)}"
                print(textwrap.indent((run.stdout[-3000:] + "\n" + run.stderr[-2000:]).strip(), "    | "))
                return
        failed = failed_tests(suite.warmup["plain"])
        if failed:
            print(f"  {name}: {len(failed)} tests FAIL PLAIN (deselect them): " + ", ".join(failed[:20]), flush=True)
        for i in range(rounds):
            order = list(MODES) if i % 2 == 0 else list(reversed(MODES))
            times: dict[str, Run] = {}
            for mode in order:
                times[mode] = run_mode(suite, venv, src, mode, report_dir, timeout)
                if times[mode].timed_out:
                    timed_out(suite, times[mode], mode, f"round {i + 1}", timeout)
                    return
            for mode in MODES:
                suite.runs[mode].append(times[mode])
            print(
                f"  {name} round {i + 1} ({' then '.join(LABELS[m] for m in order)}): "
                f"plain {times['plain'].seconds:.2f} s, --memleak {times['memleak'].seconds:.2f} s, "
                f"ratio {times['memleak'].seconds / times['plain'].seconds:.2f}x",
                flush=True,
            )


def describe(suite: Suite) -> None:
    """The per-suite details: closing lines, and every flagged test with its reason and failure text."""
    name = f"{suite.lib.name} {suite.lib.version}"
    print(f"\n== {name}: pytest {' '.join(suite.lib.args)}")
    if suite.status != "ok":
        print(f"  {suite.status}: {suite.problem}")
    for mode in MODES:
        runs = suite.runs[mode] or ([suite.warmup[mode]] if mode in suite.warmup else [])
        if runs:
            print(f"  {LABELS[mode]:>9}: {closing(runs[-1])}")
    memleak = suite.memleak_runs
    if not memleak:
        return
    summary = (memleak[-1].report or {}).get("summary", {})
    if summary:
        which = "last round" if suite.runs["memleak"] else f"the run stopped at the timeout, {closing(memleak[-1])}"
        print(f"  --memleak verdicts ({which}): {json.dumps(summary.get('by_status', {}))} of {summary.get('tests')} checked")
    elif memleak[-1].report is None:
        print("  --memleak wrote no memleak.json")
    flagged = suite.flagged()
    if not flagged:
        print("  --memleak flagged no test")
    sections = failure_sections(memleak[-1].stdout)
    for i, (nodeid, tests) in enumerate(flagged.items()):
        test = tests[-1]
        print(f"  FLAGGED {test['status'].upper()} in {len(tests)}/{len(suite.verdict_runs)} --memleak runs (warm-up included), {test.get('seconds', 0):.2f} s, {test.get('runs')} runs: {nodeid}")
        print(f"    reason: {test.get('reason', '')}")
        if i >= FAILURE_TEXTS:  # the first few tell the story; memleak.json has the rest
            continue
        lines = failure_text(sections, nodeid).splitlines()
        for line in lines[:40]:
            print(f"    | {line}")
        if len(lines) > 40:
            print(f"    | ... {len(lines) - 40} more lines")
    if len(flagged) > FAILURE_TEXTS:
        print(f"  (failure text shown for the first {FAILURE_TEXTS} flagged tests only)")


def fmt(value: float | None, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def table(entries: list[dict]) -> list[str]:
    """The table of results, from the suites' entries (see `entry`), and their costliest tests."""
    head = ("library", "version", "tests", "plain s", "--memleak s", "ratio", "not reached", "flagged", "inconclusive")
    rows = []
    for e in entries:
        status = e["status"]
        ratio = fmt(e["median_ratio"], ".2f") + "x" if e["median_ratio"] is not None else status
        partial = "*" if e["partial"] else ""  # counted before the timeout
        rows.append((
            e["library"], e["version"], fmt(e["tests"], "d"), fmt(e["plain_seconds"], ".2f"),
            fmt(e["memleak_seconds"], ".2f", status if status != "ok" else "-"), ratio,
            fmt(e["unreached"], "d"), f"{e['leaks']}{partial}", f"{e['inconclusive']}{partial}",
        ))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))) + " |"  # noqa: E731
    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(line(row) for row in rows)
    if any(e["partial"] for e in entries):
        out.append("* counted over the tests checked before the timeout stopped the --memleak run")
    out.append("")
    out.append("costliest tests under --memleak (median seconds of checking; verdict: reason):")
    for e in entries:
        if not e["costliest"]:
            continue
        out.append(f"  {e['library']}{' (of the tests checked before the timeout)' if e['partial'] else ''}:")
        for c in e["costliest"]:
            reason = c["reason"] if len(c["reason"]) <= 160 else c["reason"][:157] + "..."
            out.append(f"    {c['seconds']:7.2f} s  {c['nodeid']}  [{c['status']}, {c['runs']} runs] {reason}")
    return out


def verdict(entries: list[dict]) -> list[str]:
    """The median and largest ratio across suites, and the flagged tests, against the targets."""
    ratios = [(e["median_ratio"], e["library"]) for e in entries if e["median_ratio"] is not None]
    out = []
    leaks = sum(e["leaks"] for e in entries)
    inconclusive = sum(e["inconclusive"] for e in entries)
    if ratios:
        median = statistics.median(r for r, _ in ratios)
        worst, worst_name = max(ratios)
        out.append(f"median ratio across {len(ratios)} suites: {median:.2f}x (target <= {TARGET_MEDIAN:.1f}x: {'met' if median <= TARGET_MEDIAN else 'NOT met'})")
        over = [f"{n} {r:.2f}x" for r, n in sorted(ratios, reverse=True) if r > TARGET_MAX]
        out.append(
            f"max ratio: {worst:.2f}x ({worst_name}) (target every suite <= {TARGET_MAX:.1f}x: "
            + ("met" if not over else f"NOT met by {len(over)}: {', '.join(over)}")
            + ")"
        )
    else:
        out.append("no suite measured")
    out.append(
        f"flagged tests: {leaks} leak, {inconclusive} inconclusive (target 0 false positives: "
        + ("met" if leaks == 0 else "NOT met unless each leak is real; see FLAGGED above")
        + ")"
    )
    unmeasured = [f"{e['library']} ({e['status']}{', over the timeout: every suite target NOT met' if e['status'] == 'TIMEOUT' else ''})" for e in entries if e["median_ratio"] is None]
    if unmeasured:
        out.append("not measured: " + ", ".join(unmeasured))
    return out


def check(libs: list[Library], plugin: Path, timeout: float) -> int:
    """One plain run of each suite: its time, closing line and failing tests."""
    bad = 0
    for lib in libs:
        venv = ensure_venv(lib, plugin)
        src = fetch_sdist(lib.name, lib.version)
        run = venv.run(src, [*MODES["plain"], *lib.args], timeout=timeout)
        print(f"{lib.name} {lib.version}: {run.seconds:.2f} s, {closing(run)}", flush=True)
        failed = failed_tests(run)
        if failed or run.returncode != 0:
            bad += 1
            for nodeid in failed:
                print(f"    FAILS PLAIN: {nodeid}")
            if not failed:
                print(textwrap.indent((run.stdout[-2000:] + "\n" + run.stderr[-2000:]).strip(), "    | "))
    return 1 if bad else 0


def git_describe(path: Path) -> str | None:
    proc = subprocess.run(["git", "-C", str(path), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated libraries (default: all): " + ",".join(LIBRARIES))
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds of the two modes, alternating (default 3)")
    parser.add_argument("--plugin", type=Path, default=REPO, help=f"the plugin's source tree to install (default: {REPO})")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds one pytest run may take before the suite is reported TIMEOUT (default 1200)")
    parser.add_argument("--json", type=Path, help="save the raw results here")
    parser.add_argument("--list", action="store_true", help="print the libraries, their paths and deselects, and exit")
    parser.add_argument("--check", action="store_true", help="run each suite once plain, print failing tests, and exit")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="JSON", help="print the table over results saved with --json (the last file wins per library) and exit; with --json, save the merged entries")
    opts = parser.parse_args(argv)
    exit_on_sigterm()
    if opts.merge:
        return merge(opts.merge, opts.json)

    names = [n.strip() for n in opts.only.split(",") if n.strip()] or list(LIBRARIES)
    unknown = [n for n in names if n not in LIBRARIES]
    if unknown:
        parser.error(f"unknown libraries {', '.join(unknown)}; known: {', '.join(LIBRARIES)}")
    libs = [LIBRARIES[n] for n in names]
    if opts.list:
        for lib in libs:
            print(f"{lib.name}=={lib.version}: pytest {' '.join(lib.args)}")
            print(f"    deps: {', '.join((PYTEST, *lib.deps))}")
            if lib.why:
                print(f"    why: {lib.why}")
        return 0
    plugin = opts.plugin.resolve()
    if opts.check:
        return check(libs, plugin, opts.timeout)

    started = time.time()
    print(
        f"Python {base_python()}, {PYTEST}; plugin from {plugin} (git {git_describe(plugin) or 'none'}, "
        f"files {plugin_fingerprint(plugin)[:12]}); cache {cache_dir()}; {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}; {opts.rounds} rounds, timeout {opts.timeout:.0f} s",
        flush=True,
    )
    suites: list[Suite] = []
    for lib in libs:
        suite = Suite(lib)
        suites.append(suite)
        print(f"\n{lib.name} {lib.version}: pytest {' '.join(lib.args)}", flush=True)
        try:
            try:
                venv = ensure_venv(lib, plugin)
                src = fetch_sdist(lib.name, lib.version)
            except (OSError, subprocess.SubprocessError) as exc:
                raise SystemExit(str(exc)) from exc
            except SystemExit as exc:
                if isinstance(exc.code, int):  # SIGTERM (exit_on_sigterm), not a failed setup
                    raise
                suite.status, suite.problem = "ERROR", f"setting up: {exc}"
                print(f"  {suite.problem}", flush=True)
                continue
            measure(suite, venv, src, opts.rounds, opts.timeout)
        except (KeyboardInterrupt, SystemExit) as exc:  # Ctrl-C or SIGTERM: report what was measured
            suite.status, suite.problem = "INTERRUPTED", f"this script was interrupted ({type(exc).__name__})"
            print(f"\n{suite.problem}: the results so far follow", flush=True)
            break
        finally:
            plain = suite.runs["plain"] or [suite.warmup.get("plain")]
            if plain[-1] is not None and not plain[-1].timed_out:
                suite.tests = count_tests(plain[-1].last_line)
            if opts.json:  # after every suite, so that a killed run keeps what it measured
                opts.json.write_text(json.dumps(raw(suites, opts, plugin), indent=1) + "\n")
    for suite in suites:
        describe(suite)
    print(f"\nsuites measured with {opts.rounds} rounds each; load average now {os.getloadavg()[0]:.1f}; took {time.time() - started:.0f} s\n")
    results = raw(suites, opts, plugin)
    print("\n".join(table(results["suites"]) + [""] + verdict(results["suites"])))
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=1) + "\n")
        print(f"\nraw results in {opts.json}")
    return 1 if any(s.status in ("ERROR", "INTERRUPTED") for s in suites) else 0


def completed(e: dict) -> dict:
    """An entry of a results file with the summary fields that earlier versions did not save."""
    def median(runs: list[dict]) -> float | None:
        return statistics.median(r["seconds"] for r in runs) if runs else None

    warm = e.get("warmup", {}).get("plain")
    plain = median(e.get("plain", [])) or (warm["seconds"] if warm and warm.get("returncode") is not None else None)
    return {
        "plain_seconds": plain,
        "memleak_seconds": median(e.get("memleak", [])),
        "leaks": sum(1 for f in e.get("flagged", []) if f["status"] == "leak"),
        "inconclusive": sum(1 for f in e.get("flagged", []) if f["status"] == "inconclusive"),
        "partial": not e.get("memleak") and bool(e.get("timed_out_run")),
        "unreached": None,  # (files written before the cost budget)
        **e,
    }


def merge(files: list[Path], out: Path | None) -> int:
    """The table and verdict over the results of several runs (saved with --json): a library
    measured in more than one file counts from the last of them."""
    by_library: dict[str, dict] = {}
    for path in files:
        results = json.loads(path.read_text())
        meta = results.get("meta", {})
        print(f"{path}: plugin {meta.get('plugin')} (files {str(meta.get('plugin_files'))[:12]}), {meta.get('rounds')} rounds, finished {meta.get('finished')}: "
              + ", ".join(e["library"] for e in results["suites"]))
        for e in results["suites"]:
            by_library[e["library"]] = {**completed(e), "from": str(path)}
    order = [name for name in LIBRARIES if name in by_library] + [n for n in by_library if n not in LIBRARIES]
    entries = [by_library[name] for name in order]
    fingerprints = {json.loads(p.read_text()).get("meta", {}).get("plugin_files") for p in files}
    if len(fingerprints) > 1:
        print("WARNING: these files measured different plugins (their files differ)")
    for e in entries:
        for f in e["flagged"]:
            print(f"  {e['library']}: FLAGGED {f['status'].upper()} in {f['rounds']}/{f.get('of_runs', '?')} --memleak runs: {f['nodeid']}\n    reason: {f['reason']}")
    print()
    print("\n".join(table(entries) + [""] + verdict(entries)))
    if out:
        out.write_text(json.dumps({"merged_from": [str(p) for p in files], "suites": entries}, indent=1) + "\n")
        print(f"\nmerged results in {out}")
    return 0


def raw(suites: list[Suite], opts: argparse.Namespace, plugin: Path) -> dict:
    def run_dict(run: Run) -> dict:
        out = {"seconds": run.seconds, "returncode": run.returncode, "closing": closing(run)}
        if run.report is not None:  # every checked test, compactly: [nodeid, status, seconds, runs]
            out["tests"] = [[t.get("nodeid"), t.get("status"), t.get("seconds"), t.get("runs"), bool(t.get("over_budget"))] for t in run.report.get("tests", [])]
        return out

    return {
        "meta": {
            "python": base_python(),
            "pytest": PYTEST,
            "plugin": str(plugin),
            "plugin_git": git_describe(plugin),
            "plugin_files": plugin_fingerprint(plugin),
            "rounds": opts.rounds,
            "timeout": opts.timeout,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg()[0],
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "suites": [
            {
                "library": s.lib.name,
                "version": s.lib.version,
                "args": s.lib.args,
                "deps": [PYTEST, *s.lib.deps],
                "why": s.lib.why,
                "status": s.status,
                "problem": s.problem,
                "tests": s.tests,
                "plain": [run_dict(r) for r in s.runs["plain"]],
                "memleak": [run_dict(r) for r in s.runs["memleak"]],
                "warmup": {m: run_dict(r) for m, r in s.warmup.items()},
                "timed_out_run": run_dict(s.partial) if s.partial else None,
                "ratios": s.ratios,
                "median_ratio": s.ratio,
                "plain_seconds": s.median("plain") or (s.warmup["plain"].seconds if "plain" in s.warmup and not s.warmup["plain"].timed_out else None),
                "memleak_seconds": s.median("memleak"),
                "leaks": s.count("leak"),
                "inconclusive": s.count("inconclusive"),
                "unreached": s.unreached(),
                "partial": not s.runs["memleak"] and s.partial is not None,
                "flagged": [
                    {"nodeid": k, "status": v[-1]["status"], "reason": v[-1].get("reason"), "rounds": len(v), "of_runs": len(s.verdict_runs), "seconds": v[-1].get("seconds"), "runs": v[-1].get("runs")}
                    for k, v in s.flagged().items()
                ],
                "costliest": s.costliest(),
                "versions": (s.memleak_runs[-1].report or {}).get("meta", {}) if s.memleak_runs else {},
            }
            for s in suites
        ],
    }


if __name__ == "__main__":
    sys.exit(main())
