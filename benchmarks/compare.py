"""Wall time of plain `pytest`, `pytest --memleak` and `pytest --memray` on the same suites.

Two suites, each measured in one run with the order of the three modes rotated every round
(A B C, B C A, C A B, ...), so machine noise and warm caches hit all three alike:

* ``quick``: a few hundred quick, clean tests of our own (``benchmarks/overhead.py``'s suite);
* ``library``: the test suite of a real pure-Python library, from its PyPI **source
  distribution** (which ships its tests), downloaded with ``pip download --no-binary :all:``
  into ``~/.cache/pytest-memleak-bench`` (or ``$MEMLEAK_BENCH_CACHE``) and unpacked there once.
  Its tests run from the unpacked sdist against the library's own source, which is what an
  install of a pure-Python package puts on ``sys.path``.

Modes (each loads only its own plugin, so plain is pytest alone):

* A ``plain``:    ``pytest -p no:memleak -p no:memray``
* B ``--memleak``: ``pytest --memleak -p no:memray`` (the plugin's defaults; reports to a temp dir)
* C ``--memray``:  ``pytest --memray -p no:memleak`` (pytest-memray)

    python benchmarks/compare.py [--suite quick|library|both] [--library toolz] [--rounds 3]

Prints each round's times, the median ratios to plain, the verdicts, and every test that
``--memleak`` flagged (leak or inconclusive) with its failure text: on a clean suite each one is
a false positive unless the test truly leaks. The target is ``--memleak`` at most 2.0x plain.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = 2.0


@dataclass(frozen=True)
class Library:
    """A pure-Python library whose sdist ships a pytest-runnable test suite."""

    name: str  # the PyPI name
    version: str  # pinned, so every run measures the same tests
    args: tuple[str, ...] = ()  # test paths and options, relative to the unpacked sdist
    note: str = ""


LIBRARIES = {
    "toolz": Library(
        "toolz", "1.2.0", ("toolz",), "193 tests in toolz/tests and toolz/sandbox/tests, about 2.5 s plain"
    ),
    "six": Library("six", "1.17.0", ("test_six.py",), "200 tests in one file, about 1.5 s plain"),
    "more-itertools": Library(
        "more-itertools", "11.2.1", ("tests",), "765 unittest tests with 21,000 subtests, about 35 s plain"
    ),
    "idna": Library("idna", "3.20", ("tests",), "6,442 tests, about 25 s plain"),
}

MODES = {
    "plain": ["-p", "no:memleak", "-p", "no:memray"],
    "memleak": ["--memleak", "-p", "no:memray"],
    "memray": ["--memray", "-p", "no:memleak"],
}
LABELS = {"plain": "plain", "memleak": "--memleak", "memray": "--memray"}


def cache_dir() -> Path:
    return Path(os.environ.get("MEMLEAK_BENCH_CACHE", Path.home() / ".cache" / "pytest-memleak-bench"))


def fetch_library(lib: Library) -> Path:
    """The unpacked sdist of `lib`, downloaded and unpacked on first use."""
    cache = cache_dir()
    sdists = cache / "sdist"
    sdists.mkdir(parents=True, exist_ok=True)
    norm = re.sub(r"[-_.]+", "_", lib.name).lower()

    def find() -> Path | None:
        for path in sdists.iterdir():
            stem = re.sub(r"[-_.]+", "_", path.name).lower()
            if stem.startswith(f"{norm}_{lib.version.replace('.', '_')}") and path.name.endswith((".tar.gz", ".zip")):
                return path
        return None

    archive = find()
    if archive is None:
        cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "-q", "-d", str(sdists), f"{lib.name}=={lib.version}"]
        print(f"downloading the sdist of {lib.name}=={lib.version} into {sdists}", flush=True)
        subprocess.run(cmd, check=True)
        archive = find()
        if archive is None:
            raise SystemExit(f"pip download left no sdist of {lib.name}=={lib.version} in {sdists}")
    src = cache / "src" / f"{norm}-{lib.version}"
    if not src.exists():
        tmp = Path(tempfile.mkdtemp(prefix="unpack-", dir=cache))
        try:
            if archive.name.endswith(".zip"):
                shutil.unpack_archive(archive, tmp)
            else:
                with tarfile.open(archive) as tar:
                    tar.extractall(tmp, filter="data")
            (top,) = list(tmp.iterdir())  # an sdist holds one top-level directory
            src.parent.mkdir(parents=True, exist_ok=True)
            top.rename(src)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return src


def load_overhead_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("memleak_bench_overhead", HERE / "overhead.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Run:
    seconds: float
    returncode: int
    last_line: str
    stdout: str
    report: dict | None = None


@dataclass
class Suite:
    name: str
    root: Path
    args: list[str]
    runs: dict[str, list[Run]] = field(default_factory=lambda: {m: [] for m in MODES})


def run_once(suite: Suite, mode: str, report_dir: Path) -> Run:
    args = [*MODES[mode], *suite.args]
    if mode == "memleak":
        shutil.rmtree(report_dir, ignore_errors=True)
        args.append(f"--memleak-report-dir={report_dir}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMLEAK", "PYTEST_ADDOPTS"))}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=suite.root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    lines = proc.stdout.strip().splitlines()
    run = Run(seconds, proc.returncode, lines[-1] if lines else proc.stderr.strip()[-300:], proc.stdout)
    if proc.returncode not in (0, 1):  # 1: some test failed (a leak, or the library's own failure)
        print(proc.stdout[-3000:], proc.stderr[-2000:])
        raise SystemExit(f"{suite.name}: pytest {' '.join(args)} exited {proc.returncode}")
    report = report_dir / "memleak.json"
    if mode == "memleak" and report.exists():
        run.report = json.loads(report.read_text())
    return run


def measure(suite: Suite, rounds: int) -> None:
    modes = list(MODES)
    with tempfile.TemporaryDirectory(prefix="memleak-compare-") as tmp:
        report_dir = Path(tmp) / "reports"
        for mode in modes:  # warm the file system and bytecode caches, unmeasured
            run_once(suite, mode, report_dir)
        for i in range(rounds):
            order = modes[i % 3 :] + modes[: i % 3]
            for mode in order:
                suite.runs[mode].append(run_once(suite, mode, report_dir))
            times = {m: suite.runs[m][-1].seconds for m in modes}
            print(
                f"  {suite.name} round {i + 1} ({' '.join(LABELS[m] for m in order)}): "
                + ", ".join(f"{LABELS[m]} {times[m]:.2f} s" for m in modes)
                + f"; ratios --memleak {times['memleak'] / times['plain']:.2f}x, --memray {times['memray'] / times['plain']:.2f}x",
                flush=True,
            )


def failure_sections(stdout: str) -> dict[str, str]:
    """The FAILURES section's text per test, keyed by the name in its header line."""
    sections: dict[str, str] = {}
    body = stdout.split("= FAILURES =", 1)[-1] if "= FAILURES =" in stdout else ""
    name, lines = None, []
    for line in body.splitlines():
        header = re.match(r"^_{3,} (.+?) _{3,}$", line)
        if header or line.startswith("====="):
            if name is not None:
                sections[name] = "\n".join(lines).rstrip()
            name, lines = (header.group(1) if header else None), []
            continue
        if name is not None:
            lines.append(line)
    return sections


def summarise(suite: Suite) -> dict[str, float]:
    plain, memleak, memray = (suite.runs[m] for m in MODES)
    ratio_memleak = statistics.median(b.seconds / a.seconds for a, b in zip(plain, memleak, strict=True))
    ratio_memray = statistics.median(c.seconds / a.seconds for a, c in zip(plain, memray, strict=True))
    print(f"\n== {suite.name}")
    for mode in MODES:
        runs = suite.runs[mode]
        print(f"  {LABELS[mode]:>9}: median {statistics.median(r.seconds for r in runs):7.2f} s   ({runs[-1].last_line})")
    print(
        f"  median ratio to plain: --memleak {ratio_memleak:.2f}x (target <= {TARGET:.1f}x: "
        f"{'met' if ratio_memleak <= TARGET else 'NOT met'}), --memray {ratio_memray:.2f}x"
    )
    # what --memleak flagged, over every round (a flaky verdict shows as fewer rounds)
    flagged: dict[str, list[dict]] = {}
    slowest: dict[str, float] = {}
    for run in memleak:
        for test in (run.report or {}).get("tests", []):
            slowest[test["nodeid"]] = max(slowest.get(test["nodeid"], 0.0), float(test.get("seconds") or 0.0))
            if test["status"] in ("leak", "inconclusive"):
                flagged.setdefault(test["nodeid"], []).append(test)
    summary = (memleak[-1].report or {}).get("summary", {})
    if summary:
        print(f"  --memleak verdicts: {json.dumps(summary.get('by_status', {}))} of {summary.get('tests')} checked")
    if not flagged:
        print("  --memleak flagged no test")
    sections = failure_sections(memleak[-1].stdout)
    for nodeid, tests in flagged.items():
        test = tests[-1]
        print(f"  FLAGGED {test['status'].upper()} in {len(tests)}/{len(memleak)} rounds: {nodeid}\n    {test['reason']}")
        short = nodeid.split("::", 1)[-1].replace("::", ".")
        text = sections.get(short) or next((v for k, v in sections.items() if nodeid.endswith(k.replace(".", "::"))), "")
        for line in text.splitlines():
            print(f"    | {line}")
    top = sorted(slowest.items(), key=lambda kv: -kv[1])[:3]
    if top:
        print("  slowest under --memleak (seconds of checking): " + "; ".join(f"{s:.2f} s {n}" for n, s in top))
    return {"memleak": ratio_memleak, "memray": ratio_memray, "flagged": float(len(flagged))}


def versions() -> str:
    out = []
    for dist in ("pytest", "pytest-memleak", "pytest-memray", "memray"):
        try:
            from importlib.metadata import version

            out.append(f"{dist} {version(dist)}")
        except Exception:
            out.append(f"{dist} (not installed)")
    return f"Python {sys.version.split()[0]}, " + ", ".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=("quick", "library", "both"), default="both")
    parser.add_argument("--library", choices=sorted(LIBRARIES), default="toolz", help="the real library's suite")
    parser.add_argument("--tests", type=int, default=300, help="quick tests of our own")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three modes (order rotates)")
    opts = parser.parse_args()
    print(versions(), flush=True)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="memleak-quick-") as tmp:
        if opts.suite in ("quick", "both"):
            root = Path(tmp)
            load_overhead_module().make_suite(root, opts.tests)
            suite = Suite(f"quick ({opts.tests} clean tests of our own)", root, [])
            measure(suite, opts.rounds)
            results[suite.name] = summarise(suite)
        if opts.suite in ("library", "both"):
            lib = LIBRARIES[opts.library]
            src = fetch_library(lib)
            suite = Suite(f"{lib.name} {lib.version} (its sdist's tests; {lib.note})", src, list(lib.args))
            measure(suite, opts.rounds)
            results[suite.name] = summarise(suite)
    print("\nmedian ratios to plain pytest:")
    for name, r in results.items():
        print(f"  {name}: --memleak {r['memleak']:.2f}x, --memray {r['memray']:.2f}x, flagged by --memleak: {int(r['flagged'])}")


if __name__ == "__main__":
    main()
