"""Wall-time ratio of `pytest --memleak` to plain `pytest` on a suite of quick, clean tests.

Measured in one run, alternating A and B so that machine noise hits both alike:

    python benchmarks/overhead.py [--tests 300] [--rounds 5] [--extra-args "..."]

Prints each round's times and the median ratio; also prints the verdicts so a false
positive on the clean suite is visible (there must be none).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

QUICK_TESTS = '''
import collections, functools, json, re

CACHE = {{}}

@functools.lru_cache(maxsize=32)
def parse(n):
    return json.loads(json.dumps({{"n": n, "items": list(range(n % 7))}}))

@pytest.fixture
def history():
    return collections.deque(maxlen=10)

@pytest.mark.parametrize("n", range({per_file}))
def test_quick(n, history):
    history.append(parse(n % 40))
    text = " ".join(str(i) for i in range(n % 17))
    assert re.sub(r"\\s+", " ", text) == text
    CACHE.setdefault(n % 5, object())
    data = [dict(a=i, b=str(i)) for i in range(20)]
    assert len(data) == 20
'''


def make_suite(root: Path, tests: int, files: int = 10) -> None:
    per_file = max(1, tests // files)
    for i in range(files):
        (root / f"test_quick_{i}.py").write_text("import pytest\n" + textwrap.dedent(QUICK_TESTS.format(per_file=per_file)))
    (root / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")


def run(root: Path, args: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", *args], cwd=root, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    if proc.returncode not in (0,):
        print(proc.stdout[-3000:], proc.stderr[-2000:])
        raise SystemExit(f"pytest {' '.join(args)} exited {proc.returncode}")
    return elapsed, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--extra-args", default="", help="extra arguments for the --memleak run")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_suite(root, opts.tests)
        a_args = ["-p", "no:memleak"]
        b_args = ["--memleak", "--memleak-flamegraph=none", *opts.extra_args.split()]
        run(root, a_args)  # warm the file system and bytecode caches
        ratios, a_times, b_times = [], [], []
        for i in range(opts.rounds):
            order = [("A", a_args), ("B", b_args)] if i % 2 == 0 else [("B", b_args), ("A", a_args)]
            times = {}
            for label, args in order:
                times[label], last = run(root, args)
                if label == "B":
                    b_last = last
            a_times.append(times["A"])
            b_times.append(times["B"])
            ratios.append(times["B"] / times["A"])
            print(f"round {i + 1}: plain {times['A']:.2f} s, --memleak {times['B']:.2f} s, ratio {ratios[-1]:.2f}")
        print(f"--memleak verdicts on the clean suite: {b_last}")
        print(
            f"{opts.tests} quick tests: plain median {statistics.median(a_times):.2f} s, "
            f"--memleak median {statistics.median(b_times):.2f} s, "
            f"median ratio {statistics.median(ratios):.2f}x (target <= 2.0x)"
        )


if __name__ == "__main__":
    main()
