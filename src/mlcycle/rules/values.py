"""The scalar vocabulary every path shares: what counts as a number, a boolean, a
missing value, and how a value is written as text."""

from __future__ import annotations

from mlcycle.spec import FALSE_STRINGS, NUMBER_LIMIT, TRUE_STRINGS, value_text

RECORD_ERROR = "__record_error__"
"""Column that carries a per-record parse error (e.g. a JSONL line that is not JSON)."""
MISSING = "__missing__"
"""The category a missing value of a nullable category column becomes in model input."""
NUMBER_PATTERN = r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?"
"""A number written as text (whole match; surrounding blanks are stripped first)."""
NON_FINITE_PATTERN = r"[+-]?(inf|infinity|nan)"
"""Text that reads as a non-finite number (case-insensitive): never a valid value."""

__all__ = [
    "FALSE_STRINGS",
    "MISSING",
    "NON_FINITE_PATTERN",
    "NUMBER_LIMIT",
    "NUMBER_PATTERN",
    "RECORD_ERROR",
    "TRUE_STRINGS",
    "value_text",
]
