"""Where a report is drawn: the session's report files, from typed results.

* :mod:`.summary`: results read back typed; counts, what needs attention, the headline;
* :mod:`.json_file`: ``memleak.json``;
* :mod:`.html_page`, with ``templates/report.html.j2`` and ``static/report.css``: ``memleak.html``;
  :mod:`.charts` draws its SVG charts;
* :mod:`.github`: the GitHub step summary;
* :mod:`.files`: atomic writes and the report directory's check.

The terminal's text is :mod:`pytest_memleak.report.terminal`. Writing is atomic: a crash or a failed
serialisation never leaves a half-written report, and the previous one stays. The writers
return None and raise :class:`OSError` otherwise (:class:`ReportWriteError` for anything that is
not an I/O error), so one ``except OSError`` is enough for the caller.
"""

from __future__ import annotations

from pytest_memleak.report.files import (
    ReportWriteError,
    atomic_write,
    atomic_write_text,
    ensure_dir,
)
from pytest_memleak.report.github import append_github_summary, github_summary
from pytest_memleak.report.html_page import write_html
from pytest_memleak.report.json_file import SCHEMA, write_json
from pytest_memleak.report.summary import soaks_of, tests_of

__all__ = [
    "SCHEMA",
    "ReportWriteError",
    "append_github_summary",
    "atomic_write",
    "atomic_write_text",
    "ensure_dir",
    "github_summary",
    "soaks_of",
    "tests_of",
    "write_html",
    "write_json",
]
