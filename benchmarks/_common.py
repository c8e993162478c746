"""What the benchmarks that run real libraries' test suites share.

* ``fetch_sdist``: a library's PyPI **source distribution** (which ships its tests), downloaded
  with ``pip download --no-binary :all: --no-deps`` into ``~/.cache/pytest-memleak-bench``
  (``$MEMLEAK_BENCH_CACHE`` moves it) and unpacked there once;
* ``ensure_venv``: a venv per library and version under ``<cache>/venvs/<lib>-<version>``,
  holding the sdist, its pinned test dependencies and the plugin's dependencies; and
  ``plugin_snapshot``: the plugin built from a given source tree into
  ``<cache>/plugins/<hash of its files>``, which the runs put on PYTHONPATH;
* ``run_pytest``: one timed ``python -m pytest -q -p no:cacheprovider ...`` in a subprocess,
  with an optional timeout, returning its output and, for a ``--memleak`` run, its JSON report;
* ``failure_sections``: the text of each test in the FAILURES section of pytest's output.

Nothing here is a benchmark on its own: ``suites.py`` and ``compare.py`` import it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import tomllib

HERE = Path(__file__).resolve().parent
REPO = HERE.parent  # the plugin's source tree these scripts live in

# The interpreter the library venvs are made with. Every venv uses it, so every suite measures the
# same Python; $MEMLEAK_BENCH_PYTHON overrides it.
DEFAULT_PYTHON = "/root/.pyenv/versions/3.11.7/bin/python3"

# pytest itself is pinned in every library venv, so every suite runs under the same pytest (the
# version the project's own .venv and CI install at the time of writing)
PYTEST = "pytest==9.2.0"


def base_python() -> str:
    chosen = os.environ.get("MEMLEAK_BENCH_PYTHON")
    if chosen:
        return chosen
    return DEFAULT_PYTHON if Path(DEFAULT_PYTHON).exists() else sys.executable


def cache_dir() -> Path:
    return Path(os.environ.get("MEMLEAK_BENCH_CACHE") or Path.home() / ".cache" / "pytest-memleak-bench")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


@dataclass(frozen=True)
class Library:
    """A library from PyPI whose sdist ships a pytest-runnable test suite, pinned."""

    name: str  # the PyPI name
    version: str  # pinned, so every run measures the same tests
    paths: tuple[str, ...] = ()  # test paths relative to the unpacked sdist; () runs its own testpaths
    options: tuple[str, ...] = ()  # more pytest options: --deselect, -k, -p, -W (both modes get them)
    deps: tuple[str, ...] = ()  # the test dependencies its own CI installs, pinned
    why: str = ""  # why the subset of paths and every deselect
    install_env: tuple[tuple[str, str], ...] = ()  # environment for `pip install <sdist>`
    note: str = ""  # size and plain time, for people

    @property
    def args(self) -> list[str]:
        return [*self.paths, *self.options]

    @property
    def slug(self) -> str:
        return f"{normalise(self.name)}-{self.version}"


def _run(cmd: list[str], **kwargs) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}")


def fetch_sdist(name: str, version: str) -> Path:
    """The unpacked sdist of `name`==`version`, downloaded and unpacked on first use."""
    cache = cache_dir()
    sdists = cache / "sdist"
    sdists.mkdir(parents=True, exist_ok=True)
    norm = normalise(name)

    def find() -> Path | None:
        for path in sdists.iterdir():
            stem = normalise(path.name)
            if stem.startswith(f"{norm}_{normalise(version)}_") and path.name.endswith((".tar.gz", ".zip")):
                return path
        return None

    archive = find()
    if archive is None:
        print(f"downloading the sdist of {name}=={version} into {sdists}", flush=True)
        _run([base_python(), "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "-q", "-d", str(sdists), f"{name}=={version}"])
        archive = find()
        if archive is None:
            raise SystemExit(f"pip download left no sdist of {name}=={version} in {sdists}")
    src = cache / "src" / f"{norm}-{version}"
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


def plugin_fingerprint(plugin: Path) -> str:
    """A hash of the plugin's source files, to tell when a venv's copy is stale."""
    digest = hashlib.sha256()
    files = [plugin / "pyproject.toml", *sorted((plugin / "pytest_memleak").rglob("*"))]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts and not path.name.endswith(".pyc"):
            digest.update(str(path.relative_to(plugin)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _copy_tree(tree: Path, dest: Path) -> Path:
    """A copy of `tree` to build from: a build writes build/ and *.egg-info into the tree it
    builds, and the unpacked sdist must stay as shipped (its tests run from it), and the
    plugin's tree may be someone's working tree."""
    copy = dest / tree.name
    shutil.copytree(tree, copy, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", "reports", ".*cache"))
    return copy


def plugin_snapshot(plugin: Path) -> Path:
    """The plugin built from `plugin` and installed, without dependencies, into a directory of
    its own, ``<cache>/plugins/<hash of its files>``, made on first use.

    The runs put that directory on PYTHONPATH: its ``.dist-info`` carries the ``pytest11``
    entry point, so pytest loads the plugin from it. The plugin is never installed into a
    library's venv, so two runs with different plugins (a baseline and a working tree) can
    share the venvs, even at the same time, and each measures the plugin it was given.
    """
    dest = cache_dir() / "plugins" / plugin_fingerprint(plugin)[:16]
    if (dest / ".complete").exists():
        return dest
    print(f"building the plugin from {plugin} into {dest}", flush=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="build-", dir=dest.parent))
    try:
        site = tmp / "site"
        _run([base_python(), "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(_copy_tree(plugin, tmp))])
        (site / ".complete").write_text(f"{plugin}\n")
        try:
            site.rename(dest)
        except OSError:
            if not (dest / ".complete").exists():  # not a concurrent run that made it first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def plugin_requirements(plugin: Path) -> list[str]:
    """The plugin's dependencies, from its pyproject.toml."""
    with open(plugin / "pyproject.toml", "rb") as f:
        return list(tomllib.load(f).get("project", {}).get("dependencies", []))


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


@dataclass(frozen=True)
class Venv:
    """A library's venv and the plugin snapshot its runs put on PYTHONPATH."""

    python: Path
    plugin: Path

    def run(self, cwd: Path, args: list[str], report_dir: Path | None = None, timeout: float | None = None) -> Run:
        return run_pytest(self.python, cwd, args, report_dir=report_dir, timeout=timeout, pythonpath=self.plugin)


def ensure_venv(lib: Library, plugin: Path, extra: tuple[str, ...] = (), flavour: str = "") -> Venv:
    """`lib`'s venv, made on first use, and the plugin built from `plugin` (see plugin_snapshot).

    The venv lives in ``<cache>/venvs/<lib>-<version>`` (``<lib>-<version>+<flavour>`` for one
    with `extra` packages, so that two scripts do not remake each other's venv). It holds the
    library, ``pip install <unpacked sdist>``, pytest and the library's test deps, `extra`, and
    the plugin's dependencies (not the plugin). It is made again when the library's
    requirements change; the plugin's dependencies are installed again when they change.
    """
    plugin = plugin.resolve()
    if not (plugin / "pyproject.toml").is_file() or not (plugin / "pytest_memleak").is_dir():
        raise SystemExit(f"--plugin {plugin}: not a pytest-memleak source tree (no pyproject.toml and pytest_memleak/)")
    src = fetch_sdist(lib.name, lib.version)
    venv = cache_dir() / "venvs" / (lib.slug + (f"+{flavour}" if flavour else ""))
    python = _venv_python(venv)
    wanted = json.dumps({"python": base_python(), "pytest": PYTEST, "deps": sorted(lib.deps + extra), "install_env": lib.install_env})
    marker = venv / "memleak-bench-requirements.json"
    if not python.exists() or not marker.exists() or marker.read_text() != wanted:
        shutil.rmtree(venv, ignore_errors=True)
        print(f"making the venv {venv}", flush=True)
        _run([base_python(), "-m", "venv", str(venv)])
        with tempfile.TemporaryDirectory(prefix="memleak-bench-build-") as tmp:
            # the library from its sdist, with its runtime dependencies
            _run([str(python), "-m", "pip", "install", "-q", str(_copy_tree(src, Path(tmp)))], env={**os.environ, **dict(lib.install_env)})
        _run([str(python), "-m", "pip", "install", "-q", PYTEST, *lib.deps, *extra])
        marker.write_text(wanted)
    requirements = plugin_requirements(plugin)
    deps_marker = venv / "memleak-bench-plugin-deps.json"
    if not deps_marker.exists() or deps_marker.read_text() != json.dumps(requirements):
        print(f"installing the plugin's dependencies into {venv}", flush=True)
        _run([str(python), "-m", "pip", "install", "-q", *requirements])
        deps_marker.write_text(json.dumps(requirements))
    snapshot = plugin_snapshot(plugin)
    # a copy of the plugin installed in the venv itself (by an older version of this script)
    # must not be what runs: PYTHONPATH comes first on sys.path, check that it wins
    env = {**clean_env(), "PYTHONPATH": str(snapshot)}
    proc = subprocess.run([str(python), "-c", "import pytest_memleak; print(pytest_memleak.__file__)"], capture_output=True, text=True, env=env, cwd=venv)
    if proc.returncode != 0 or not proc.stdout.strip().startswith(str(snapshot)):
        raise SystemExit(f"{venv}: the plugin does not import from {snapshot}: {proc.stdout.strip() or proc.stderr.strip()[-500:]}")
    return Venv(python, snapshot)


@dataclass
class Run:
    seconds: float
    returncode: int | None  # None: killed at the timeout
    last_line: str
    stdout: str
    stderr: str
    report: dict | None = None

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def exit_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit, so that a pytest run under way is killed with this script."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def clean_env() -> dict[str, str]:
    """This environment without settings that would change either mode's behaviour."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("MEMLEAK", "PYTEST_ADDOPTS", "PYTEST_PLUGINS"))}


INTERRUPT_GRACE = 60.0  # seconds a timed-out run gets to end its session after Ctrl-C


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_pytest(
    python: Path | str,
    cwd: Path,
    args: list[str],
    report_dir: Path | None = None,
    timeout: float | None = None,
    pythonpath: Path | None = None,
) -> Run:
    """One timed `python -m pytest -q -p no:cacheprovider *args` in `cwd`.

    With `report_dir`, ``--memleak-report-dir=report_dir`` is added, the directory is emptied
    first, and ``memleak.json`` from it is read into ``Run.report``. The run has a session (and
    process group) of its own. After `timeout` seconds it gets a SIGINT, as from Ctrl-C, then
    `INTERRUPT_GRACE` seconds to end its session, then its process group is killed;
    ``Run.returncode`` is then None and ``Run.seconds`` the timeout. If this process is
    interrupted meanwhile, the run's process group is killed too. `pythonpath` goes first on
    PYTHONPATH (the plugin's snapshot, see plugin_snapshot).
    """
    args = list(args)
    if report_dir is not None:
        shutil.rmtree(report_dir, ignore_errors=True)
        args.append(f"--memleak-report-dir={report_dir}")
    cmd = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    started = time.perf_counter()
    env = clean_env()
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(pythonpath), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        returncode: int | None = proc.returncode
        seconds = time.perf_counter() - started
    except subprocess.TimeoutExpired:
        seconds = time.perf_counter() - started
        # Ctrl-C first: pytest then prints where it was and still ends its session (the plugin
        # writes its report of the tests done so far); whatever is left is killed
        proc.send_signal(signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=INTERRUPT_GRACE)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            stdout, stderr = proc.communicate()
        _kill_group(proc)  # children it left behind
        returncode = None
    except BaseException:  # Ctrl-C or SIGTERM of this script: the run is in a session of its own
        _kill_group(proc)
        raise
    lines = stdout.strip().splitlines()
    last = lines[-1] if lines else stderr.strip()[-300:]
    run = Run(seconds, returncode, last, stdout, stderr)
    if report_dir is not None and (report_dir / "memleak.json").exists():
        run.report = json.loads((report_dir / "memleak.json").read_text())
    return run


def outcome_counts(last_line: str) -> dict[str, int]:
    """pytest's closing line as counts: {"passed": 190, "skipped": 3, ...}."""
    counts: dict[str, int] = {}
    for number, word in re.findall(r"(\d+) (passed|failed|skipped|xfailed|xpassed|errors?|warnings?|deselected|subtests passed|subtests failed)", last_line):
        word = "error" if word.startswith("error") else "warning" if word.startswith("warning") else word
        counts[word] = counts.get(word, 0) + int(number)
    return counts


def count_tests(last_line: str) -> int:
    """Tests that ran, from pytest's closing line (subtests and deselected ones left out)."""
    counts = outcome_counts(last_line)
    return sum(counts.get(k, 0) for k in ("passed", "failed", "skipped", "xfailed", "xpassed", "error"))


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


def failure_text(sections: dict[str, str], nodeid: str) -> str:
    """The section of `failure_sections` that belongs to `nodeid`, or ""."""
    short = nodeid.split("::", 1)[-1].replace("::", ".")
    return sections.get(short) or next((v for k, v in sections.items() if nodeid.endswith(k.replace(".", "::"))), "")
