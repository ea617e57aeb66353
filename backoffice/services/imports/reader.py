"""Reading CSV files as people make them: encodings, delimiters, quoting, blanks, safe cells."""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backoffice.i18n import _

CHUNK_BYTES = 1 << 20
# Bytes that never appear in a text file (C0 controls but tab, LF, CR; form feed is tolerated).
_CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20)])
# Bytes that Windows-1252 leaves undefined: a file holding them is not Windows-1252 text.
_CP1252_UNDEFINED = b"\x81\x8d\x8f\x90\x9d"
# Deleting every other byte leaves only the suspicious ones (bytes.translate runs in C).
_ORDINARY_BYTES = bytes(b for b in range(256) if b not in _CONTROL_BYTES + _CP1252_UNDEFINED)
_BINARY_SIGNATURES = {
    b"PK\x03\x04": "xlsx",  # zip container: .xlsx, .ods, .docx
    b"\xd0\xcf\x11\xe0": "xls",  # legacy Office
    b"%PDF": "pdf",
}
# A cell an export neutralised (OWASP CSV injection) is read back to what it was.
NEUTRALISED_FIRST = frozenset("=+-@\t\r")
_HEADER_SPACES = re.compile(r"[\s\-]+")


class FileRefused(Exception):
    """The whole file is refused before any row is used; the message is for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class FileInfo:
    """What one pass over the bytes tells: size, fingerprint, encoding and delimiter."""

    size: int
    sha256: str
    encoding: str
    delimiter: str


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KB"


def inspect_file(path: str | Path, max_bytes: int | None = None) -> FileInfo:
    """Hash the file and find how it is written, refusing what is not a CSV text file."""
    path = Path(path)
    size = path.stat().st_size
    if max_bytes and size > max_bytes:
        raise FileRefused(
            _(
                "The file is %(size)s; the limit is %(limit)s. Split it into smaller files.",
                size=_mb(size),
                limit=_mb(max_bytes),
            )
        )
    if size == 0:
        raise FileRefused(_("The file is empty."))
    digest = hashlib.sha256()
    encoding: str | None = None
    utf8_ok = True
    cp1252_ok = True
    decoder: Any = None
    head = b""
    with path.open("rb") as fh:
        first = True
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
            if first:
                first = False
                head = chunk[:65536]
                for signature, kind in _BINARY_SIGNATURES.items():
                    if chunk.startswith(signature):
                        raise FileRefused(_not_text_message(kind))
                if chunk.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                    encoding = "utf-16"
                    decoder = codecs.getincrementaldecoder("utf-16")()
                elif chunk.startswith(codecs.BOM_UTF8):
                    encoding = "utf-8-sig"
                if decoder is None:
                    decoder = codecs.getincrementaldecoder("utf-8")()
            odd = b"" if encoding == "utf-16" else chunk.translate(None, _ORDINARY_BYTES)
            if odd:
                if any(b in _CONTROL_BYTES for b in odd):
                    raise FileRefused(_not_text_message(None))
                cp1252_ok = False
            if utf8_ok:
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    utf8_ok = False
        if utf8_ok:
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                utf8_ok = False
    if encoding == "utf-16":
        if not utf8_ok:
            raise FileRefused(_not_text_message(None))
    elif utf8_ok:
        encoding = encoding or "utf-8"
    elif cp1252_ok and encoding is None:
        encoding = "cp1252"  # Excel on Windows saves "CSV" in the ANSI code page
    else:
        raise FileRefused(_not_text_message(None))
    text = head.decode(encoding, errors="ignore")
    if not text.strip().strip("\ufeff"):
        raise FileRefused(_("The file is empty."))
    return FileInfo(size, digest.hexdigest(), encoding, sniff_delimiter(text))


def _not_text_message(kind: str | None) -> str:
    if kind in ("xlsx", "xls"):
        return _(
            "This is a spreadsheet workbook, not a CSV file. In Excel use File, Save As, "
            "'CSV UTF-8 (comma delimited)', and upload that file."
        )
    return _("This file is not a text (CSV) file.")


def sniff_delimiter(text: str) -> str:
    """Comma or semicolon (tab when neither is there), counted on the header line."""
    header = text.lstrip("\ufeff\r\n").split("\n", 1)[0]
    counts = {d: header.count(d) for d in (",", ";")}
    if not any(counts.values()):
        return "\t" if "\t" in header else ","
    return max(counts, key=lambda d: (counts[d], d == ","))


def normalise_header(name: str) -> str:
    """``' First Name '`` -> ``'first_name'``: case, surrounding and inner spaces ignored."""
    return _HEADER_SPACES.sub("_", name.strip().strip("\ufeff").strip().lower())


def restore_cell(value: str) -> str:
    """Undo an export's neutralisation: ``'=1+2`` is read as ``=1+2`` (and only that)."""
    if len(value) > 1 and value[0] == "'" and value[1] in NEUTRALISED_FIRST:
        return value[1:]
    return value


class CsvRows:
    """The data rows of a CSV file, streamed: ``(line number, trimmed cells)``, blanks skipped.

    ``header`` holds the normalised column names; ``bytes_read`` tells how far the reading is.
    """

    def __init__(self, path: str | Path, info: FileInfo) -> None:
        self._raw = Path(path).open("rb")  # noqa: SIM115 - closed by close()
        self._text = io.TextIOWrapper(self._raw, encoding=info.encoding, newline="")
        # skipinitialspace: "a, b" is two values (the reference files are written that way)
        self._reader = csv.reader(self._text, delimiter=info.delimiter, skipinitialspace=True)
        self.raw_header: list[str] = []
        self.header: list[str] = []
        self.header_line = 0
        self._last_line = 0
        try:
            for cells in self._reader:
                if any(c.strip() for c in cells):
                    self.raw_header = [c.strip() for c in cells]
                    self.header = [normalise_header(c) for c in cells]
                    self.header_line = self._reader.line_num
                    break
        except csv.Error:
            self.close()
            raise FileRefused(_("The first line of the file cannot be read as CSV.")) from None
        self._last_line = self.header_line

    @property
    def bytes_read(self) -> int:
        return self._raw.tell()

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        """Rows as read (cells untrimmed: each value's own rule trims it, and the rejected-rows
        file gives cells back as they were); use ``clean`` for trimmed, restored cells."""
        reader = self._reader
        try:
            for cells in reader:
                line = self._last_line + 1
                self._last_line = reader.line_num
                if not any(cells):
                    continue
                first = cells[0]
                if first.startswith("# ") or (not first.strip() and not "".join(cells).strip()):
                    continue  # a comment line (the templates have some), or only blanks
                yield line, cells
        except csv.Error:
            raise FileRefused(
                _(
                    "Line %(line)d cannot be read as CSV (a quote that is opened and never "
                    "closed?). Nothing was imported.",
                    line=self._last_line + 1,
                )
            ) from None

    def close(self) -> None:
        self._text.close()

    def __enter__(self) -> CsvRows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def clean(value: str) -> str:
    """A cell as a value: trimmed, and read back to what it was if an export neutralised it."""
    return restore_cell(value.strip())


def read_dicts(path: str | Path) -> list[dict[str, str]]:
    """A small file as dicts keyed by normalised header (the seed's reference files)."""
    info = inspect_file(path)
    with CsvRows(path, info) as rows:
        header = rows.header
        return [
            {name: (clean(cells[i]) if i < len(cells) else "") for i, name in enumerate(header)}
            for _line, cells in rows
        ]
