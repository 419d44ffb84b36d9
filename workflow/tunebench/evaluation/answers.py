"""Parsers for freely generated answers.

An answer that cannot be read is None — never silently mapped to a class (one peer benchmark maps it to
"neutral") and never dropped (another leaves failed answers out of the RMSE); `runner.score` counts it wrong
or charges it the configured penalty.
"""

from __future__ import annotations

import re

# A word boundary that also treats '-' and apostrophes as part of a word, so "negative" is not found in
# "non-negative" or "negatively" (and "bullish" not in "un-bullish").
_BEFORE = r"(?<![\w'-])"
_AFTER = r"(?![\w'-])"

# A signed decimal: -0.5, +.25, −0.3 (Unicode minus), 1e-3. Not part of a word ("Q3") or of a longer number.
_NUMBER = re.compile(r"(?<![\w.])([-+\u2212]?)(\d+(?:\.\d*)?|\.\d+)(?:[eE]([-+]?\d+))?")


def parse_label(text: str | None, verbalizers: dict[str, str]) -> str | None:
    """The label whose answer word the text gives, or None.

    Rules (case-insensitive, whole words only): if the answer starts with a label word, that label; otherwise
    the label if exactly one label's word occurs anywhere; otherwise (none, or several different ones) None.
    """
    if not text or not text.strip():
        return None
    found: list[tuple[int, str]] = []
    for label, word in verbalizers.items():
        # Flexible whitespace inside multi-word answers ("very positive").
        pattern = r"\s+".join(re.escape(w) for w in word.split())
        for m in re.finditer(_BEFORE + pattern + _AFTER, text, flags=re.IGNORECASE):
            found.append((m.start(), label))
    if not found:
        return None
    first_pos, first_label = min(found)
    leading = text[:first_pos].strip(" \t\n\"'`*:.-([{")
    if not leading:
        return first_label
    labels = {label for _, label in found}
    return first_label if len(labels) == 1 else None


def parse_number(text: str | None) -> float | None:
    """The first signed decimal number in the text, or None (an empty answer or no number)."""
    if not text:
        return None
    m = _NUMBER.search(text)
    if not m:
        return None
    sign, digits, exponent = m.groups()
    value = float(f"{digits}e{exponent}" if exponent else digits)
    return -value if sign in ("-", "\u2212") else value
