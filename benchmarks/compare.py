"""Wall time of plain `pytest`, `pytest --memleak` and `pytest --memray` on the same suites.

Two suites, each measured in one run with the order of the three modes rotated every round
(A B C, B C A, C A B, ...), so machine noise and warm caches hit all three alike:

* ``quick``: a few hundred quick, clean tests of our own (``benchmarks/overhead.py``'s suite),
  run by this interpreter with the plugin and pytest-memray installed in it;
* ``library``: the test suite of a real library, one of ``suites.py``'s (same pinned version,
  paths and deselects), from its PyPI **source distribution**, which ships its tests. It runs
  in a venv of its own, ``<cache>/venvs/<lib>-<version>+memray``: the library, its test
  dependencies and pytest-memray, with the plugin built from ``--plugin`` (default: this
  source tree) on PYTHONPATH. See ``_common.py``; the cache is ``~/.cache/pytest-memleak-bench``
  or ``$MEMLEAK_BENCH_CACHE``.

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
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402
    REPO,
    Run,
    ensure_venv,
    exit_on_sigterm,
    failure_sections,
    failure_text,
    fetch_sdist,
    run_pytest,
)
from suites import LIBRARIES  # noqa: E402

TARGET = 2.0
PYTEST_MEMRAY = "pytest-memray==1.11.0"

MODES = {
    "plain": ["-p", "no:memleak", "-p", "no:memray"],
    "memleak": ["--memleak", "-p", "no:memray"],
    "memray": ["--memray", "-p", "no:memleak"],
}
LABELS = {"plain": "plain", "memleak": "--memleak", "memray": "--memray"}


def load_overhead_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("memleak_bench_overhead", HERE / "overhead.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Suite:
    name: str
    root: Path
    args: list[str]
    python: str = sys.executable
    pythonpath: Path | None = None  # the plugin snapshot of a library's venv
    runs: dict[str, list[Run]] = field(default_factory=lambda: {m: [] for m in MODES})


def run_once(suite: Suite, mode: str, report_dir: Path) -> Run:
    args = [*MODES[mode], *suite.args]
    run = run_pytest(suite.python, suite.root, args, report_dir=report_dir if mode == "memleak" else None, pythonpath=suite.pythonpath)
    if run.returncode not in (0, 1):  # 1: some test failed (a leak, or the library's own failure)
        print(run.stdout[-3000:], run.stderr[-2000:])
        raise SystemExit(f"{suite.name}: pytest {' '.join(args)} exited {run.returncode}")
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
        for line in failure_text(sections, nodeid).splitlines():
            print(f"    | {line}")
    top = sorted(slowest.items(), key=lambda kv: -kv[1])[:3]
    if top:
        print("  slowest under --memleak (seconds of checking): " + "; ".join(f"{s:.2f} s {n}" for n, s in top))
    return {"memleak": ratio_memleak, "memray": ratio_memray, "flagged": float(len(flagged))}


def versions(python: str, pythonpath: Path | None = None) -> str:
    """Python and the versions of the measured packages in the interpreter `python`."""
    code = (
        "import sys\nfrom importlib.metadata import version\nout = []\n"
        "for d in ('pytest', 'pytest-memleak', 'pytest-memray', 'memray'):\n"
        "    try: out.append(f'{d} {version(d)}')\n"
        "    except Exception: out.append(f'{d} (not installed)')\n"
        "print(f'Python {sys.version.split()[0]}, ' + ', '.join(out))"
    )
    env = {**os.environ, "PYTHONPATH": str(pythonpath)} if pythonpath else None
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env)
    return f"{python}: {proc.stdout.strip() or proc.stderr.strip()[-300:]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=("quick", "library", "both"), default="both")
    parser.add_argument("--library", choices=sorted(LIBRARIES), default="toolz", help="the real library's suite (one of suites.py's)")
    parser.add_argument("--plugin", type=Path, default=REPO, help=f"the plugin's source tree for the library's venv (default: {REPO})")
    parser.add_argument("--tests", type=int, default=300, help="quick tests of our own")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three modes (order rotates)")
    opts = parser.parse_args()
    exit_on_sigterm()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="memleak-quick-") as tmp:
        if opts.suite in ("quick", "both"):
            print(versions(sys.executable), flush=True)
            root = Path(tmp)
            load_overhead_module().make_suite(root, opts.tests)
            suite = Suite(f"quick ({opts.tests} clean tests of our own)", root, [])
            measure(suite, opts.rounds)
            results[suite.name] = summarise(suite)
        if opts.suite in ("library", "both"):
            lib = LIBRARIES[opts.library]
            venv = ensure_venv(lib, opts.plugin, extra=(PYTEST_MEMRAY,), flavour="memray")
            print(versions(str(venv.python), venv.plugin), flush=True)
            src = fetch_sdist(lib.name, lib.version)
            name = f"{lib.name} {lib.version} (its sdist's tests: {' '.join(lib.args)}; {lib.note})"
            suite = Suite(name, src, lib.args, str(venv.python), venv.plugin)
            measure(suite, opts.rounds)
            results[suite.name] = summarise(suite)
    print("\nmedian ratios to plain pytest:")
    for name, r in results.items():
        print(f"  {name}: --memleak {r['memleak']:.2f}x, --memray {r['memray']:.2f}x, flagged by --memleak: {int(r['flagged'])}")


if __name__ == "__main__":
    main()
