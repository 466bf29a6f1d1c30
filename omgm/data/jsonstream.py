"""Stream the members of one top-level JSON object, one ``(key, value)`` at a time, in file order.

The E-VQA knowledge base is a single JSON object of ~2M entries; the published code ``json.load``s it
whole. This reader holds one entry (plus a read-ahead chunk) in memory, uses the C-accelerated
``json`` decoder for each value, and reports the byte offset after every value so that an import can
resume from where it stopped. Standard library only.
"""
from __future__ import annotations

import codecs
import json
import re
from pathlib import Path
from typing import Any, Iterator

from omgm.errors import OmgmError

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class JsonStreamError(OmgmError, ValueError):
    """The file is not one JSON object of members; the message names the file and byte offset."""


class _Buffer:
    """A decoded window over a UTF-8 file that knows the byte offset of its first character."""

    def __init__(self, fh, chunk_bytes: int, byte0: int) -> None:
        self.fh = fh
        self.chunk = chunk_bytes
        self.dec = codecs.getincrementaldecoder("utf-8")()
        self.text = ""
        self.pos = 0
        self.byte0 = byte0          # byte offset of text[0]
        self.mark_pos = 0           # a position whose byte offset is known (offsets only move forward)
        self.mark_byte = byte0
        self.eof = False

    def fill(self) -> bool:
        """Append one chunk; drop the consumed prefix first. False at end of file."""
        if self.eof:
            return False
        if self.pos > 0:
            self.byte0 = self.byte_offset(self.pos)
            self.text, self.pos = self.text[self.pos:], 0
            self.mark_pos, self.mark_byte = 0, self.byte0
        raw = self.fh.read(self.chunk)
        at = self.fh.tell() - len(raw)
        try:
            if not raw:
                self.eof = True
                self.text += self.dec.decode(b"", final=True)
                return False
            self.text += self.dec.decode(raw)
        except UnicodeDecodeError as exc:
            raise JsonStreamError(f"not UTF-8 text near byte {at + max(0, exc.start)}: a JSON file must be "
                                  f"UTF-8") from None
        return True

    def byte_offset(self, pos: int | None = None) -> int:
        """Byte offset of text position ``pos``; cost proportional to the text since the last call."""
        pos = self.pos if pos is None else pos
        if pos < self.mark_pos:  # only on error paths
            return self.byte0 + len(self.text[:pos].encode("utf-8"))
        self.mark_byte += len(self.text[self.mark_pos:pos].encode("utf-8"))
        self.mark_pos = pos
        return self.mark_byte

    def skip_ws(self) -> str:
        """Skip whitespace and return the next character ('' at end of file) without consuming it."""
        while True:
            self.pos = _WS.match(self.text, self.pos).end()
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.fill():
                return ""

    def decode_value(self) -> Any:
        """Decode one JSON value at the cursor, reading more of the file until it is complete."""
        while True:
            try:
                value, end = _DECODER.raw_decode(self.text, self.pos)
            except RecursionError:
                raise JsonStreamError(f"a value nested too deeply at byte {self.byte_offset()}") from None
            except json.JSONDecodeError as exc:
                if self.fill():
                    continue
                raise JsonStreamError(f"malformed JSON at byte {self.byte_offset(exc.pos)}: {exc.msg}") from None
            # a number could be cut by the chunk boundary; objects and strings cannot end early
            if end == len(self.text) and not self.eof and isinstance(value, (int, float)):
                if self.fill():
                    continue
            self.pos = end
            return value


def iter_object_members(path: str | Path, start_byte: int = 0,
                        chunk_bytes: int = 1 << 20) -> Iterator[tuple[str, Any, int]]:
    """Yield ``(key, value, end_byte)`` for each member of the file's top-level object.

    ``end_byte`` is the offset just after the value; passing it back as ``start_byte`` resumes with the
    next member. Raises :class:`JsonStreamError` (naming the file and offset) on malformed input.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            fh.seek(start_byte)
            buf = _Buffer(fh, chunk_bytes, start_byte)
            buf.fill()
            first = start_byte == 0
            if first:
                if buf.text.startswith("\ufeff"):
                    buf.pos = 1
                if buf.skip_ws() != "{":
                    raise JsonStreamError("expected '{' at the start of the file (a JSON object keyed by URL)")
                buf.pos += 1
            while True:
                ch = buf.skip_ws()
                if ch == "}":
                    buf.pos += 1
                    if buf.skip_ws() != "":
                        raise JsonStreamError(f"data after the closing '}}' at byte {buf.byte_offset()}: more "
                                              f"than one JSON value in the file (concatenated objects?)")
                    return
                if ch == "":
                    raise JsonStreamError(f"unexpected end of file at byte {buf.byte_offset()}: the file "
                                          f"looks truncated (no closing '}}')")
                if not first:
                    if ch != ",":
                        raise JsonStreamError(f"expected ',' or '}}' at byte {buf.byte_offset()}, got {ch!r}")
                    buf.pos += 1
                    buf.skip_ws()
                first = False
                key_at = buf.byte_offset()
                key = buf.decode_value()
                if not isinstance(key, str):
                    raise JsonStreamError(f"expected a string key at byte {key_at}")
                if buf.skip_ws() != ":":
                    raise JsonStreamError(f"expected ':' after key {key!r} at byte {buf.byte_offset()}")
                buf.pos += 1
                buf.skip_ws()
                value = buf.decode_value()
                yield key, value, buf.byte_offset()
    except JsonStreamError as exc:
        raise JsonStreamError(f"{path}: {exc}") from None
