"""The findings of a ``prepare`` run: :class:`Issue` (where, what, fix) and :class:`Report`.

Severity: ``error`` stops ``prepare`` (no dataset is written), ``warning`` is fixed or tolerated
and reported, ``info`` is a note (an expected fix, e.g. Roboflow's parent category).
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from thingmask.io_utils import atomic_write_json

__all__ = ["SEVERITIES", "Issue", "Report", "short"]

log = logging.getLogger(__name__)

SEVERITIES = ("error", "warning", "info")
_MARKS = {"error": "ERROR", "warning": "WARNING", "info": "note"}


@dataclass(frozen=True)
class Issue:
    """One finding. ``where`` names file/image/annotation, ``fix`` says what to do (or was done)."""

    severity: str
    rule: str
    where: str
    message: str
    fix: str = ""

    def text(self) -> str:
        line = f"{self.where}: {self.message}" if self.where else self.message
        return line + (f"\n      fix: {self.fix}" if self.fix else "")


@dataclass
class Report:
    """All findings of one ``prepare`` run plus a summary (counts, classes, split).

    ``text()`` is for the notebook and the CLI, ``to_dict()``/``write_json()`` for the output
    folder. ``ok`` is False when any error was found.
    """

    issues: list[Issue] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def add(self, severity: str, rule: str, where: str, message: str, fix: str = "") -> Issue:
        if severity not in SEVERITIES:
            raise ValueError(f"severity {severity!r}: expected one of {SEVERITIES}")
        issue = Issue(severity, rule, where, message, fix)
        self.issues.append(issue)
        return issue

    def error(self, rule: str, where: str, message: str, fix: str = "") -> Issue:
        return self.add("error", rule, where, message, fix)

    def warning(self, rule: str, where: str, message: str, fix: str = "") -> Issue:
        return self.add("warning", rule, where, message, fix)

    def info(self, rule: str, where: str, message: str, fix: str = "") -> Issue:
        return self.add("info", rule, where, message, fix)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def notes(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "info"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def rules(self, severity: str | None = None) -> set[str]:
        """Rule ids found (optionally of one severity) — handy in tests and notebooks."""
        return {i.rule for i in self.issues if severity in (None, i.severity)}

    def counts(self) -> dict[str, int]:
        c = Counter(i.severity for i in self.issues)
        return {s: c.get(s, 0) for s in SEVERITIES}

    def text(self, limit: int = 5) -> str:
        """Human-readable report: summary, then issues grouped by rule (``limit`` shown per rule;
        the JSON report has all of them)."""
        lines = _summary_lines(self.summary)
        c = self.counts()
        lines.append(
            f"{c['error']} error(s), {c['warning']} warning(s), {c['info']} note(s)"
            + ("" if self.ok else " -- errors stop `prepare`; fix them and re-run")
        )
        groups: dict[tuple[str, str], list[Issue]] = defaultdict(list)
        for issue in self.issues:
            groups[(issue.severity, issue.rule)].append(issue)
        for severity in SEVERITIES:
            for (sev, rule), items in groups.items():
                if sev != severity:
                    continue
                lines.append(f"\n{_MARKS[sev]} [{rule}] x{len(items)}")
                for issue in items[:limit]:
                    lines.append("  - " + issue.text())
                if len(items) > limit:
                    lines.append(
                        f"  ... and {len(items) - limit} more like this (all listed in report.json)"
                    )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "counts": self.counts(),
            "summary": self.summary,
            "issues": [asdict(i) for i in self.issues],
        }

    def write_json(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    def log_counts(self, logger: logging.Logger = log) -> None:
        c = self.counts()
        level = logging.ERROR if c["error"] else logging.WARNING if c["warning"] else logging.INFO
        logger.log(
            level,
            "dataset check: %d error(s), %d warning(s), %d note(s)",
            c["error"],
            c["warning"],
            c["info"],
        )


def _summary_lines(summary: Mapping[str, Any]) -> list[str]:
    if not summary:
        return []
    lines = []
    head = f"source: {summary.get('source', '?')} (format: {summary.get('format', '?')})"
    if summary.get("output"):
        head += f" -> {summary['output']}"
    lines.append(head)
    if "images" in summary:
        classes = summary.get("classes") or []
        lines.append(
            f"{summary['images']} images, {summary.get('instances', 0)} instances, "
            f"{len(classes)} classes: {', '.join(classes)}"
        )
    split = summary.get("split")
    if split:
        lines.append(
            f"split ({split.get('how', '')}): train {split['train']['images']} images / "
            f"{split['train']['instances']} instances, val {split['val']['images']} "
            f"images / {split['val']['instances']} instances"
        )
    return lines


def short(value: Any, limit: int = 60) -> str:
    """``value`` as short JSON text for a message (untrusted values: anything JSON can hold)."""
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
