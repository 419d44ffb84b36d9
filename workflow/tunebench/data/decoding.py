"""Raw bytes → text, refusing files that would decode into garbage rather than fail.

latin-1 decodes any byte and UTF-8 decodes any ASCII-compatible file, so a UTF-16 file, or one with NUL bytes,
would otherwise reach the label check as text like ' n e u t r a l ' and fail there with a misleading message.

`read_text` is the one place these checks live: every loader reads its text files through it before parsing,
and the hf loader runs it on the local data files that the datasets library then parses itself.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

from tunebench.data.errors import DataError

# UTF-32 first: its little-endian mark begins with UTF-16's.
BYTE_ORDER_MARKS = [
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
]

# C0 control characters other than tab, LF and CR: no text format we read has a use for them.
CONTROL_CHARACTER = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
CONTROL_NAMES = ("NUL SOH STX ETX EOT ENQ ACK BEL BS HT LF VT FF CR SO SI DLE DC1 DC2 DC3 DC4 NAK SYN ETB CAN "
                 "EM SUB ESC FS GS RS US").split()

# How much of a file the UTF-16 guess looks at, and the share of NUL bytes on one side that gives it away:
# ASCII text in UTF-16 has a NUL in every other byte; real UTF-8 or latin-1 text has none.
SNIFF_BYTES = 4096
UTF16_NUL_SHARE = 0.3


def read_text(path: Path, encoding: str) -> str:
    """The file's text in `encoding` ("utf-8" or "latin-1"); a UTF-8 byte-order mark is dropped (for UTF-8)."""
    data = path.read_bytes()
    name = "UTF-8" if encoding == "utf-8" else encoding
    if data.startswith(codecs.BOM_UTF8):
        if encoding != "utf-8":
            raise DataError(f"{path}: file is UTF-8 (byte-order mark found); expected {name}")
        data = data[len(codecs.BOM_UTF8):]
    for mark, found in BYTE_ORDER_MARKS:
        if data.startswith(mark):
            raise DataError(f"{path}: file is {found} (byte-order mark found); convert it to {name}")
    if _looks_utf16(data):
        raise DataError(f"{path}: file looks UTF-16 (no byte-order mark, but NUL bytes in every other "
                        f"position); convert it to {name}")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        line_start = data.rfind(b"\n", 0, e.start) + 1
        line = data.count(b"\n", 0, e.start) + 1
        # Only UTF-8 can fail here (latin-1 decodes every byte). Bytes that are not UTF-8 but are text almost
        # always come from a single-byte code page: Windows-1252 (Excel's "CSV") or latin-1.
        raise DataError(f"{path}, line {line}: bytes not valid {name} at column {e.start - line_start + 1}: "
                        f"{data[max(line_start, e.start - 10):e.end + 10]!r}; the file is in another encoding "
                        f"(Windows-1252 or latin-1?): convert it to {name}") from None
    found = CONTROL_CHARACTER.search(text)
    if found:
        line = text.count("\n", 0, found.start()) + 1
        column = found.start() - (text.rfind("\n", 0, found.start()) + 1) + 1
        raise DataError(f"{path}, line {line}: {describe_control(found.group())} in the text (column {column}); "
                        f"a text file should hold none: remove it, or check how the file was exported")
    return text


def _looks_utf16(data: bytes) -> bool:
    head = data[:SNIFF_BYTES]
    if len(head) < 4:
        return False
    even, odd = head[0::2], head[1::2]
    even_nul, odd_nul = even.count(0) / len(even), odd.count(0) / len(odd)
    return max(even_nul, odd_nul) >= UTF16_NUL_SHARE and min(even_nul, odd_nul) < UTF16_NUL_SHARE / 3


def first_control_character(text: str) -> str | None:
    """How the first C0 control character (not tab, LF, CR) in `text` is named, or None."""
    found = CONTROL_CHARACTER.search(text)
    return describe_control(found.group()) if found else None


def describe_control(char: str) -> str:
    return f"control character U+{ord(char):04X} ({CONTROL_NAMES[ord(char)]})"
