"""The fault suite's table: each fault case adds a row; pytest prints them at the end."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

FAULT_ROWS: list[FaultRow] = []


@dataclass(frozen=True)
class FaultRow:
    case: str
    sent: int
    failed: int
    recovered_s: float | None = None
    note: str = ""


@pytest.fixture
def fault_table() -> list[FaultRow]:
    return FAULT_ROWS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FAULT_ROWS:
        return
    terminalreporter.section("fault suite (real tritonserver)")
    terminalreporter.line(f"{'case':<52}{'sent':>7}{'failed':>8}{'recovered':>11}  note")
    for row in FAULT_ROWS:
        recovered = f"{row.recovered_s:.1f} s" if row.recovered_s is not None else "-"
        terminalreporter.line(
            f"{row.case:<52}{row.sent:>7}{row.failed:>8}{recovered:>11}  {row.note}"
        )
