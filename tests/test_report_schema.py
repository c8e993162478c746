"""The JSON report's schema ships in the package (``pytest_memleak/memleak.schema.json``), and real reports meet it."""

from __future__ import annotations

import copy
import json
from importlib import resources

import pytest

jsonschema = pytest.importorskip("jsonschema")

SUITE = """
import pytest

KEPT = []

def test_leaks():
    KEPT.append(object())

def test_clean():
    pass

def test_fails():
    assert False

@pytest.mark.memleak(peak="100 MiB")
def test_peak():
    bytearray(1024 * 1024)

@pytest.mark.memleak_soak(duration="0.5s", sample_every="0.05s", expect_leak=False)
def test_soak():
    pass
"""


def _schema() -> dict:
    return json.loads(resources.files("pytest_memleak").joinpath("memleak.schema.json").read_text(encoding="utf-8"))


def test_a_real_report_meets_the_shipped_schema_and_a_broken_one_does_not(pytester: pytest.Pytester) -> None:
    schema = _schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    pytester.makepyfile(test_s=SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--memleak", "--memleak-flamegraph=none")
    result.assert_outcomes(passed=3, failed=2)
    report = json.loads((pytester.path / "reports" / "memleak.json").read_text())
    assert {t["status"] for t in report["tests"]} == {"leak", "clean", "no-verdict"} and report["soaks"]
    jsonschema.validate(report, schema, cls=jsonschema.Draft202012Validator)

    for breaking in (
        lambda r: r["tests"][0].update(status="leaky"),
        lambda r: r["tests"][0].pop("nodeid"),
        lambda r: r["summary"]["by_status"].pop("clean"),
        lambda r: r.update(schema="pytest-memleak/2"),
        lambda r: r["soaks"][0].update(expect_leak="no"),
    ):
        broken = copy.deepcopy(report)
        breaking(broken)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema, cls=jsonschema.Draft202012Validator)
