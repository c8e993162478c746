"""The GitHub step summary: leaks, inconclusive tests and soak verdicts as Markdown."""

from __future__ import annotations

import html
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pytest_memleak.config.units import format_duration, format_size
from pytest_memleak.report.summary import ordered, soaks_of, summarize, tests_of, unexpected
from pytest_memleak.results import CLEAN, INCONCLUSIVE, LEAK, NO_VERDICT, LeakResult, SoakResult

MAX_SUMMARY_ROWS = 50  # rows per table in the GitHub step summary
MAX_SUMMARY_BYTES = 900_000  # GitHub refuses step summaries over 1 MiB

_MD_ESCAPES = {ord(c): f"&#{ord(c)};" for c in "\\|`*_[]~@"}
_AUTOLINK = re.compile(r"(?i)(://|www\.)")
_VERDICT = {LEAK: "🔴 leak", CLEAN: "🟢 clean", INCONCLUSIVE: "🟡 inconclusive", NO_VERDICT: "no verdict"}


def _md_cell(value: Any, code: bool = False) -> str:
    """Table-cell text for GitHub Markdown: HTML-escaped, pipes and newlines neutralised."""
    text = html.escape(" ".join(("" if value is None else str(value)).split()), quote=False)
    # Markdown still applies inside inline HTML: neutralise every character that could start
    # a table cell, code span, emphasis, strikethrough, link or autolink.
    text = _AUTOLINK.sub(lambda m: "&#58;//" if m.group(1) == "://" else m.group(1)[:3] + "&#46;", text.translate(_MD_ESCAPES))
    return f"<code>{text}</code>" if code and text else text


def github_summary(
    tests: Iterable[Mapping[str, Any] | LeakResult],
    soaks: Iterable[Mapping[str, Any] | SoakResult],
    *,
    max_rows: int = MAX_SUMMARY_ROWS,
    report: str | None = None,
) -> str:
    """A Markdown summary for ``$GITHUB_STEP_SUMMARY``. ``report`` (optional) names the HTML report."""
    test_list, soak_list = tests_of("the GitHub summary", tests), soaks_of("the GitHub summary", soaks)
    summary = summarize(test_list, soak_list)
    by_status = summary.by_status
    leaks = [t for t in ordered(test_list) if t.status == LEAK]
    inconclusive = [t for t in test_list if t.status == INCONCLUSIVE]
    lines = ["## pytest-memleak", "", f"**{summary.headline}.**" if leaks or summary.soaks_leaking else f"{summary.headline}."]
    lines.append(
        f"{by_status[CLEAN]:,} clean · {by_status[LEAK]:,} leaking · "
        f"{by_status[INCONCLUSIVE]:,} inconclusive · {by_status[NO_VERDICT]:,} no verdict"
    )
    lines.append("")
    def table(header: str, align: str, rows: list[str]) -> list[str]:
        """A Markdown table of at most ``max_rows`` rows, and a row saying how many more there are."""
        more = [f"| … and {len(rows) - max_rows:,} more |" + " |" * (header.count("|") - 2)] if len(rows) > max_rows else []
        return [header, align, *rows[:max_rows], *more]

    if leaks:
        lines += table("| Test | Retained / run | Top site | Why |", "|---|---:|---|---|", [
            f"| {_md_cell(t.nodeid, code=True)} | {format_size(t.retained_per_run)}/run "
            f"| {_md_cell(t.sites[0].site if t.sites else '', code=True) or '—'} | {_md_cell(t.reason)} |"
            for t in leaks
        ])
        lines.append("")
    if inconclusive:
        lines += ["<details><summary>Inconclusive tests</summary>", ""]
        lines += table("| Test | Why |", "|---|---|", [f"| {_md_cell(t.nodeid, code=True)} | {_md_cell(t.reason)} |" for t in inconclusive])
        lines += ["", "</details>", ""]
    if soak_list:
        lines += table("| Soak | Verdict | Trend | Time to limit | Expected |", "|---|---|---:|---|---|", [_soak_row(s) for s in ordered(soak_list)])
        lines.append("")
    if report:
        lines += [f"Full report: {_md_cell(report, code=True)}", ""]
    return "\n".join(lines)


def _soak_row(s: SoakResult) -> str:
    if not s.memory_limit:
        to_limit = "no limit"
    elif s.time_to_limit is None:
        to_limit = "never"
    else:
        to_limit = f"{format_duration(s.time_to_limit)} to {format_size(s.memory_limit)}"
    expected = "—"
    if s.expect_leak is not None:
        expected = ("leak" if s.expect_leak else "no leak") + (" ⚠️ mismatch" if unexpected(s) else " ✓")
    return (
        f"| {_md_cell(s.nodeid, code=True)} | {_md_cell(_VERDICT.get(s.status, s.status))} | "
        f"{format_size(s.slope_per_hour, signed=True)}/h | {_md_cell(to_limit)} | {expected} |"
    )


def append_github_summary(text: str, env: Mapping[str, str] = os.environ) -> str | None:
    """Append ``text`` to the file named by ``$GITHUB_STEP_SUMMARY``, when that is set.

    Returns None on success (or when the variable is unset), else a one-line problem.
    """
    target = env.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    data = text if text.endswith("\n") else text + "\n"
    encoded = data.encode("utf-8", "replace")
    if len(encoded) > MAX_SUMMARY_BYTES:
        cut = encoded[:MAX_SUMMARY_BYTES].decode("utf-8", "ignore")
        data = cut[: cut.rfind("\n") + 1] + "\n… (summary truncated; see the HTML report)\n"
    try:
        with open(target, "a", encoding="utf-8", errors="replace") as handle:
            handle.write("\n" + data)
    except OSError as exc:
        return f"could not append to $GITHUB_STEP_SUMMARY ({target}): {exc}"
    return None
