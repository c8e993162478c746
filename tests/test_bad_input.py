"""Issue 8, point 5: every setting, from every source, with an invalid value, end to end.

The cases are generated from :data:`pytest_memleak.config.options.SETTINGS` (and the soak marker's
keywords from :data:`pytest_memleak.config.options.SOAK_KEYWORDS`), so a new setting is covered as soon as it
is registered. Each case's value is checked to be one that the setting's own parser rejects.
A case passes when pytest exits with a usage error (exit code 4), the one error line names the
setting as the user wrote it and where it came from, and nothing prints a traceback.

Every case is its own pytest subprocess. They are independent, so they run side by side (a
module fixture starts all the selected ones at once) to keep this file within seconds.
Third-party plugins are not auto-loaded in them (``-p pytest_memleak.plugin`` loads ours), which
halves pytest's start-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _pytest.mark.structures import Mark

from pytest_memleak.config import options
from pytest_memleak.soak import config as soak_cfg

WORDS = ("lots", "maybe", "1.5 parsecs", " ")  # not of the setting's kind at all
NUMBERS = ("-1", "0", "100000000", "2")  # of a numeric kind, outside what the setting takes
TEST_FILE = "def test_bad():\n    pass\n"
WHERE = "test_bad.py::test_bad"


@dataclass(frozen=True)
class Case:
    id: str
    label: str  # the setting, as the user wrote it
    source: str  # where the message must say the value came from ("" when argparse answers)
    value: Any
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    form: str = ""  # the accepted form the message must quote


def _rejects(parse: Any, value: Any) -> bool:
    try:
        parse(value)
    except (ValueError, TypeError):
        return True
    return False


def invalid(setting: options.Setting, kind: tuple[str, ...], *, ini: bool = False) -> str | None:
    """The first value of ``kind`` (else of the other kind) that the setting's parser rejects."""
    for pool in (kind, NUMBERS if kind is WORDS else WORDS):
        for value in pool:
            if ini and not value.strip():
                continue  # an empty ini value means "not set", not a bad value
            if _rejects(setting.parse, value):
                return value
    return None


def names(setting: options.Setting) -> tuple[str, str, str]:
    if setting.name == "enabled":
        return options.ENABLE_CLI, options.ENABLE_ENV, options.ENABLE_INI
    return setting.cli, setting.env, setting.ini


def marker_value(text: str) -> Any:
    """A numeric candidate as the Python number a marker keyword would get."""
    try:
        return int(text)
    except ValueError:
        return text


def setting_cases() -> Iterator[Case]:
    for setting in options.SETTINGS:
        cli, env, ini = names(setting)
        if setting.flag:  # a switch takes no value: argparse refuses one
            yield Case(f"{setting.name}-cli", cli, "", "lots", args=(f"{cli}=lots",))
        else:
            value = invalid(setting, WORDS)
            assert value is not None, f"no invalid command-line value found for {setting.name}"
            yield Case(
                f"{setting.name}-cli",
                cli,
                "the command line",
                value,
                args=(f"{cli}={value}",),
                form=setting.form,
            )
        value = invalid(setting, NUMBERS)
        assert value is not None, f"no invalid environment value found for {setting.name}"
        yield Case(
            f"{setting.name}-env",
            env,
            "the environment",
            value,
            env={env: value},
            form=setting.form,
        )
        value = invalid(setting, WORDS, ini=True)
        if value is not None:  # a path takes any non-empty text
            yield Case(
                f"{setting.name}-ini",
                ini,
                "the ini file",
                value,
                files={"pytest.ini": f"[pytest]\n{ini} = {value}\n"},
                form=setting.form,
            )
            yield Case(
                f"{setting.name}-pyproject",
                ini,
                "the ini file",
                value,
                files={"pyproject.toml": f'[tool.pytest.ini_options]\n{ini} = "{value}"\n'},
                form=setting.form,
            )
        if setting.marker:
            text = invalid(setting, NUMBERS)
            assert text is not None
            value = marker_value(text)
            if not _rejects(setting.parse, value):
                value = text
            yield Case(
                f"{setting.name}-marker",
                f"memleak({setting.name}=...)",
                f"@pytest.mark.memleak on {WHERE}",
                value,
                files={
                    "test_bad.py": f"import pytest\n\n\n@pytest.mark.memleak({setting.name}={value!r})\n{TEST_FILE}"
                },
                form=setting.form,
            )


class MarkedItem:
    """What soak_config reads from an item: its nodeid and its soak markers."""

    nodeid = WHERE

    def __init__(self, mark: Mark) -> None:
        self.mark = mark

    def iter_markers(self, name: str) -> Iterator[Mark]:
        return iter([self.mark] if name == "memleak_soak" else [])


def soak_rejects(key: str, value: Any) -> bool:
    try:
        soak_cfg.soak_config(MarkedItem(Mark("memleak_soak", (), {key: value}, _ispytest=True)))  # type: ignore[arg-type]
    except pytest.UsageError:
        return True
    return False


def soak_cases() -> Iterator[Case]:
    for key in soak_cfg.DEFAULTS:
        for kind, pool in (("word", ("lots", "1.5 parsecs")), ("number", (0, -1, 2, True))):
            value = next((v for v in pool if soak_rejects(key, v)), None)
            if value is None:
                continue
            yield Case(
                f"soak-{key}-{kind}",
                f"memleak_soak({key}=...)",
                f"@pytest.mark.memleak_soak on {WHERE}",
                value,
                files={
                    "test_bad.py": f"import pytest\n\n\n@pytest.mark.memleak_soak({key}={value!r})\n{TEST_FILE}"
                },
            )


def other_cases() -> Iterator[Case]:
    """Marker shapes and config forms that are not one setting's value."""
    module = "import pytest\n\n\n{mark}\n" + TEST_FILE
    yield Case(
        "memleak-unknown-keyword", "'retaind'", f"@pytest.mark.memleak on {WHERE}", None,
        files={"test_bad.py": module.format(mark="@pytest.mark.memleak(retaind='1 KiB')")},
    )  # fmt: skip
    yield Case(
        "memleak-positional", "positional", f"@pytest.mark.memleak on {WHERE}", None,
        files={"test_bad.py": module.format(mark="@pytest.mark.memleak('1 KiB')")},
    )  # fmt: skip
    yield Case(
        "no_memleak-unknown-keyword", "'why'", f"@pytest.mark.no_memleak on {WHERE}", None,
        files={"test_bad.py": module.format(mark="@pytest.mark.no_memleak(why='cache')")},
    )  # fmt: skip
    yield Case(
        "soak-unknown-keyword", "'lenght'", f"@pytest.mark.memleak_soak on {WHERE}", None,
        files={"test_bad.py": module.format(mark="@pytest.mark.memleak_soak(lenght='30s')")},
    )  # fmt: skip
    yield Case(
        "toml-list", "memleak_runs", "pyproject.toml", None,
        files={"pyproject.toml": '[tool.pytest]\nmemleak_runs = ["a", "b"]\n'},
    )  # fmt: skip
    yield Case(
        "override-ini", "memleak_runs", "--override-ini", "lots",
        args=("-o", "memleak_runs=lots"), files={"pytest.ini": "[pytest]\nmemleak_runs = 3\n"},
    )  # fmt: skip


CASES = [*setting_cases(), *soak_cases(), *other_cases()]
# pytest reads a [tool.pytest] table, with native TOML values, from 9.0 on; before, it is ignored.
NATIVE_TOML = pytest.mark.skipif(
    int(pytest.__version__.split(".")[0]) < 9, reason="pytest before 9.0 reads no [tool.pytest] table (native TOML values)"
)


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str
    root: Path


def clean_environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMLEAK", "PYTEST_"))}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return env


ARGS = ("-p", "pytest_memleak.plugin", "-p", "no:cacheprovider", "-q")


def prepare(case: Case, root: Path) -> None:
    for name, text in {"test_bad.py": TEST_FILE, **case.files}.items():
        (root / name).write_text(text)


def run_case(case: Case, root: Path, autoload: bool = False) -> Done:
    """One case as ``python -m pytest``, the way a user runs it."""
    prepare(case, root)
    env = {**clean_environ(), **case.env}
    if autoload:
        del env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *(ARGS if not autoload else ARGS[2:]), *case.args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Done(done.returncode, done.stdout, done.stderr, root)


# Imports pytest and the plugin once, then forks one child per case: each child is a fresh
# process that runs ``pytest.main`` in the case's folder, with the case's environment and its
# output in files there. A hundred cases take seconds instead of a minute.
FORK_SERVER = r"""
import json, os, sys, traceback

import pytest
import pytest_memleak.plugin  # noqa: F401  imported once, before the forks

cases = json.load(sys.stdin)
limit = max(2, os.cpu_count() or 2)
running, codes = {}, {}


def reap():
    pid, status = os.wait()
    codes[running.pop(pid)] = os.waitstatus_to_exitcode(status)


for case in cases:
    while len(running) >= limit:
        reap()
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            os.chdir(case["root"])
            os.environ.clear()
            os.environ.update(case["env"])
            for fd, name in ((1, "stdout.txt"), (2, "stderr.txt")):
                target = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(target, fd)
                os.close(target)
            code = int(pytest.main(case["args"]))
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    running[pid] = case["id"]
while running:
    reap()
print(json.dumps(codes))
"""


def run_cases(cases: list[Case], roots: list[Path]) -> dict[str, Done]:
    jobs = []
    for case, root in zip(cases, roots, strict=True):
        prepare(case, root)
        jobs.append(
            {
                "id": case.id,
                "root": str(root),
                "env": {**clean_environ(), **case.env},
                "args": [*ARGS, *case.args],
            }
        )
    server = subprocess.run(  # not from the checkout: `python -c` imports from its working directory first
        [sys.executable, "-c", FORK_SERVER],
        input=json.dumps(jobs),
        cwd=roots[0].parent if roots else None,
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert server.returncode == 0, server.stderr
    codes = json.loads(server.stdout)
    return {
        case.id: Done(
            codes[case.id],
            (root / "stdout.txt").read_text(),
            (root / "stderr.txt").read_text(),
            root,
        )
        for case, root in zip(cases, roots, strict=True)
    }


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Done]:
    """Runs every selected case, the first time one is asked for."""
    selected: set[str] = set()
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if item.module is request.module:  # type: ignore[attr-defined]
            selected.update(
                [params["case"].id] if "case" in params else [params.get("case_id", "")]
            )
    cases = [c for c in CASES if c.id in selected]
    return run_cases(cases, [tmp_path_factory.mktemp(c.id.replace(".", "_")) for c in cases])


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=NATIVE_TOML if c.id.startswith("toml") else ()) for c in CASES])
def test_invalid_value_is_a_usage_error_naming_setting_and_source(
    case: Case, outcomes: dict[str, Done]
) -> None:
    done = outcomes[case.id]
    text = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, text
    assert "Traceback" not in text and "INTERNALERROR" not in text, text
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, text
    message = errors[0] if case.source else done.stderr  # argparse answers on two lines
    assert case.label in message, f"the message does not name {case.label}: {message}"
    if case.source and f"config option '{case.label}' expects a string" in message:
        return  # pytest >= 9.2 checks TOML value types itself: its own usage error names key and file
    if case.source:
        assert message.startswith("ERROR: pytest-memleak: "), message
        assert case.source in message, (
            f"the message does not say the value came from {case.source}: {message}"
        )
    if case.value is not None and case.source:
        assert f"invalid value {case.value!r} for {case.label} from " in message, message
    if case.form:
        assert message.endswith(f"; expected {case.form}"), message


def test_every_setting_and_source_has_a_case() -> None:
    ids = {c.id for c in CASES}
    for setting in options.SETTINGS:
        assert {f"{setting.name}-cli", f"{setting.name}-env"} <= ids
        if setting.marker:
            assert f"{setting.name}-marker" in ids
        if setting.parse not in (options.BY_NAME["report_dir"].parse, options.BY_NAME["ignore"].parse):
            assert f"{setting.name}-ini" in ids  # (any non-empty ini text is a path, or a glob)
    for key in soak_cfg.DEFAULTS:
        assert any(i.startswith(f"soak-{key}-") for i in ids), key


@pytest.mark.parametrize("setting", options.SETTINGS, ids=[s.name for s in options.SETTINGS])
def test_parse_setting_names_the_setting_the_source_and_the_form(setting: options.Setting) -> None:
    for kind in (WORDS, NUMBERS):
        value = invalid(setting, kind)
        assert value is not None
        with pytest.raises(pytest.UsageError) as info:
            options.parse_setting(setting, value, "the environment", setting.env)
        message = str(info.value)
        assert message.startswith(
            f"pytest-memleak: invalid value {value!r} for {setting.env} from the environment"
        )
        assert message.endswith(f"; expected {setting.form}")


VALID_TOML = """
[tool.pytest]
memleak = true
memleak_runs = 2
memleak_retained = 4096
memleak_confirm_seconds = 0.5
memleak_report_dir = "out"
"""


@NATIVE_TOML
def test_native_toml_values_are_valid_input(tmp_path: Path) -> None:
    """pytest 9's ``[tool.pytest]`` table keeps TOML types: a bool or a number is a valid value, not bad input."""
    (tmp_path / "pyproject.toml").write_text(VALID_TOML)
    (tmp_path / "test_ok.py").write_text("def test_ok():\n    pass\n")
    done = run_case(Case("valid-toml", "", "", None), tmp_path, autoload=True)
    text = done.stdout + done.stderr
    if done.returncode == pytest.ExitCode.USAGE_ERROR and "expects a string, got" in text:
        pytest.skip("this pytest (>= 9.2) refuses non-string TOML values for string ini keys itself")
    assert done.returncode == 0, text
    assert "memleak summary" in text and (tmp_path / "out" / "memleak.json").exists(), text


SMOKE = ["retained-cli", "runs-env", "top-marker"]


@pytest.mark.parametrize("case_id", SMOKE)
def test_the_same_answer_from_python_m_pytest(
    case_id: str, outcomes: dict[str, Done], tmp_path: Path
) -> None:
    """The forked cases answer as ``python -m pytest`` does, with every installed plugin loaded."""
    case = next(c for c in CASES if c.id == case_id)
    real = run_case(case, tmp_path, autoload=True)
    assert real.returncode == pytest.ExitCode.USAGE_ERROR, real.stderr

    def first_error(stderr: str) -> str:
        # other installed plugins may warn first (pytest-asyncio about an unset loop scope)
        return next(line for line in stderr.splitlines() if line.startswith("ERROR"))

    assert first_error(real.stderr.replace(str(tmp_path), "<root>")) == (
        first_error(outcomes[case_id].stderr).replace(str(outcomes[case_id].root), "<root>")
    )
