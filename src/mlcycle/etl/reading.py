"""The bytes a run loads are the bytes its lineage names.

A run records each file's size and SHA-256 when it starts (`FileCheck`). Every parser
then reads the file through a `CheckedFile`, one handle hashed while it is read:

- the first reading (the validation pass) hashes what the parser consumes and, at the
  end of the file, compares it with the recorded SHA-256; it also keeps a short digest
  of every read call;
- a later reading of the same file (the write pass of a large input, a worker's second
  task) compares each read call with the first reading's digest *before* the parser
  sees the bytes, so no row of a changed file is ever written under the old hash.

A file that changed raises `SourceChanged`, naming the file.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from mlcycle.errors import SourceChanged, StructuralError


@dataclass
class FileCheck:
    """What one file's bytes must be for the whole run."""

    size: int
    sha256: str
    reads: list[bytes] = field(default_factory=list)
    """Digest of each read call of the first complete reading (empty until then)."""
    complete: bool = False
    """The first reading reached the end and matched size and SHA-256."""


def measure(path: Path) -> FileCheck:
    """Size and SHA-256 of a file, from one reading of it."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return FileCheck(size, digest.hexdigest())


def not_utf8(path: Path | str, offset: int) -> StructuralError:
    return StructuralError(f"{path}: not UTF-8 text (an invalid byte at offset {max(offset, 0):,})")


def changed(path: Path | str, what: str) -> SourceChanged:
    return SourceChanged(
        f"{path}: the file changed while the ETL read it ({what}); nothing read from the "
        "changed bytes was loaded. Rerun the ETL once the file is complete"
    )


def _digest(data: bytes | memoryview) -> bytes:
    return hashlib.blake2b(data, digest_size=8).digest()


class CheckedFile(io.RawIOBase):
    """A read-only binary file checked against `check` (see the module's docstring)."""

    def __init__(self, path: Path, check: FileCheck | None, utf8: bool = False) -> None:
        super().__init__()
        self.path = path
        self.check = check
        self._text = codecs.getincrementaldecoder("utf-8")() if utf8 else None
        self._fh = path.open("rb")
        self._hash = hashlib.sha256()
        self._pos = 0
        self._sequential = True
        self._reads: list[bytes] = []
        self._calls = 0
        self._ended = False
        if check is not None and os.fstat(self._fh.fileno()).st_size != check.size:
            size = os.fstat(self._fh.fileno()).st_size
            self._fh.close()
            raise changed(path, f"{check.size:,} bytes at the start of the run, {size:,} now")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = self._fh.seek(offset, whence)
        if target == 0 and whence == io.SEEK_SET:  # a parser starting over: so does the check
            self._hash, self._reads, self._calls, self._ended = hashlib.sha256(), [], 0, False
            self._sequential = True
            if self._text is not None:
                self._text.reset()
        elif target != self._pos:
            self._sequential = False
        self._pos = target
        return target

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self._fh.readinto(buffer)
        if n is None:
            return 0
        data = memoryview(buffer)[:n]
        self._account(data)
        if self._text is not None:
            self._utf8(data, final=n == 0)
        self._pos += n
        if n == 0:
            self._at_end()
        return n

    def _account(self, data: memoryview) -> None:
        check = self.check
        if check is None or not len(data):
            return
        if check.complete:  # a later reading: every call as the first reading made it
            k = self._calls
            if k >= len(check.reads) or check.reads[k] != _digest(data):
                raise changed(self.path, f"read {k + 1} differs from the first reading")
        else:
            self._reads.append(_digest(data))
            if self._sequential:
                self._hash.update(data)
        self._calls += 1

    def _utf8(self, data: memoryview, final: bool) -> None:
        """Text files must be UTF-8: checked as the bytes pass (C speed, no copy kept)."""
        assert self._text is not None
        try:
            self._text.decode(data, final)
        except UnicodeDecodeError as err:
            raise not_utf8(self.path, self._pos + err.start) from err

    def _at_end(self) -> None:
        check = self.check
        if check is None or check.complete or self._ended:
            return
        self._ended = True
        if self._sequential and self._pos == check.size:
            digest = self._hash.hexdigest()
        else:  # read out of order (Parquet): hash the file as it is now
            digest = measure(self.path).sha256
        if digest != check.sha256:
            raise changed(
                self.path, f"SHA-256 {check.sha256[:12]}… at the start, {digest[:12]}… when read"
            )
        check.reads = self._reads
        check.complete = True

    def finish(self) -> None:
        """The parser is done: a first reading that never asked past the last byte (a
        Parquet reader stops at the footer) is checked here."""
        if self.check is not None and not self.check.complete and not self._ended:
            self._at_end()

    def close(self) -> None:
        self._fh.close()
        super().close()


__all__ = ["CheckedFile", "FileCheck", "changed", "measure", "not_utf8"]
