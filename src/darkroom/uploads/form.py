"""A multipart/form-data request body read as a stream: file parts go straight to staging files.

FastAPI's ``File()`` parameters parse the whole form before the endpoint runs, spooling each
file to a temporary file that is then read back into one ``bytes`` and written again to storage.
Here python-multipart's streaming ``MultipartParser`` is fed from ``request.stream()``; each file
part's data is written to a :class:`~darkroom.storage.staging.StagingFile` in the
storage's staging directory as it arrives (bench/FINDINGS.md, fourth pass).

Limits are enforced while reading: a file past ``max_file_bytes`` is refused with 413
``file_too_large`` at once (nothing more is read or written), as are too many files or fields
and oversized text fields. On any error, a client that disconnects included, every staging file
is removed. Fields may come in any order; the caller validates them once the body has ended.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from darkroom.errors import DarkroomError, PayloadTooLarge, Unprocessable
from darkroom.storage.staging import SmallFile, StagedFile, StagingFile

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks


@dataclass
class StreamedForm:
    """The text fields (every value, in order) and the file parts of one form: staged in files,
    or kept in memory when small (:data:`SMALL_FILE_BYTES`)."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, list[StagedFile | SmallFile]] = field(default_factory=dict)

    def first(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None

    def discard(self) -> None:
        """Remove the staging files that were not stored (idempotent)."""
        for staged in (f for files in self.files.values() for f in files):
            if isinstance(staged, StagedFile):
                staged.path.unlink(missing_ok=True)


SMALL_FILE_BYTES = 64 * 1024
"""A file part of at most this many bytes is kept in memory (:class:`~darkroom.storage.staging.SmallFile`)
instead of being staged in a file: it is checked on the event loop and stored with one write. A
staging file costs four hand-offs to worker threads (create and write, fsync, check, move) and a
removal; for the 95-byte image of bench figure 3 those were most of the upload's cost (tenth pass,
bench/FINDINGS.md)."""


@dataclass(frozen=True)
class FormLimits:
    max_file_bytes: int
    max_file_mb: float
    max_files: int
    max_fields: int = 32
    max_field_bytes: int = 64 * 1024


class _Part:
    def __init__(self) -> None:
        self.header_name = b""
        self.header_value = b""
        self.disposition = b""
        self.name = ""
        self.text: bytearray | None = None
        self.file: StagingFile | None = None
        self.received = 0


class _Reader:
    """python-multipart's callbacks are synchronous: they collect, ``read`` writes after each chunk."""

    def __init__(self, staging_dir: Path, limits: FormLimits, charset: str) -> None:
        self.staging_dir = staging_dir
        self.limits = limits
        self.charset = charset
        self.part = _Part()
        self.form = StreamedForm()
        self.open_files: list[StagingFile] = []
        self.chunks: list[tuple[StagingFile, bytes | memoryview]] = []
        self.finished: list[tuple[str, StagingFile]] = []
        self.file_count = 0
        self.field_count = 0
        self.ended = False

    def _decode(self, value: bytes) -> str:
        try:
            return value.decode(self.charset)
        except UnicodeDecodeError:
            return value.decode("latin-1")

    # -- callbacks --
    def on_part_begin(self) -> None:
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.part.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.part.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.part.header_name.lower() == b"content-disposition":
            self.part.disposition = self.part.header_value
        self.part.header_name = self.part.header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.part.disposition)
        if b"name" not in options:
            raise Unprocessable("Every form part needs a name.", code="validation_error")
        self.part.name = self._decode(options[b"name"])
        if b"filename" in options:
            self.file_count += 1
            if self.file_count > self.limits.max_files:
                raise Unprocessable(
                    f"At most {self.limits.max_files} files per request; more were sent.",
                    code="too_many_files",
                )
            name = self._decode(options[b"filename"])
            self.part.file = StagingFile(self.staging_dir, name or None)
            self.open_files.append(self.part.file)
        else:
            self.field_count += 1
            if self.field_count > self.limits.max_fields:
                raise Unprocessable("The form has too many fields.", code="validation_error")
            self.part.text = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        part.received += end - start
        if part.file is not None:
            if part.received > self.limits.max_file_bytes:  # refused before this chunk is written
                raise PayloadTooLarge(
                    f"{part.file.name or 'file'} is larger than the {self.limits.max_file_mb:g} MB "
                    "limit per file.",
                    code="file_too_large",
                )
            # A view of the received chunk, not a copy (the staging file keeps it until written)
            self.chunks.append(
                (part.file, data if start == 0 and end == len(data) else memoryview(data)[start:end])
            )
        elif part.text is not None:
            part.text += data[start:end]
            if part.received > self.limits.max_field_bytes:
                raise PayloadTooLarge(f"The form field {part.name!r} is too large.", code="request_too_large")

    def on_part_end(self) -> None:
        part = self.part
        if part.file is not None:
            self.finished.append((part.name, part.file))
        elif part.text is not None:
            self.form.fields.setdefault(part.name, []).append(self._decode(bytes(part.text)))

    def on_end(self) -> None:
        self.ended = True

    # -- the loop --
    async def drain(self) -> None:
        """Write what the callbacks collected, then finish the parts that ended."""
        chunks, self.chunks = self.chunks, []
        for staging, chunk in chunks:
            await staging.write(chunk)
        finished, self.finished = self.finished, []
        for name, staging in finished:
            # A small file stays in memory; a bigger one is written, and its fsync runs on while
            # the rest of the body is read and the file checked
            done = staging.take_small(SMALL_FILE_BYTES) or await staging.complete()
            self.form.files.setdefault(name, []).append(done)

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_end": self.on_end,
        }


async def read_form(request: Request, staging_dir: Path, limits: FormLimits) -> StreamedForm:
    """Read a multipart/form-data body; file parts are staged in ``staging_dir`` (written, their
    fsync under way: :meth:`StagedFile.durable` before storing them). An
    application/x-www-form-urlencoded body (text fields only) is read whole.

    The caller owns the returned form's staging files: store them, then :meth:`StreamedForm.discard`
    (which leaves alone what was already moved away)."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type == b"application/x-www-form-urlencoded":  # text fields only (no files)
        try:
            async with request.form(max_fields=limits.max_fields) as parsed:
                fields: dict[str, list[str]] = {}
                for name, value in parsed.multi_items():
                    if isinstance(value, str):
                        fields.setdefault(name, []).append(value)
                return StreamedForm(fields=fields)
        except ClientDisconnect:
            raise DarkroomError("The client went away during the upload.") from None
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise Unprocessable(
            "Send the form as multipart/form-data (files in the 'files' field).", code="validation_error"
        )
    charset = params.get(b"charset", b"utf-8").decode("latin-1")
    try:
        charset = codecs.lookup(charset).name
    except LookupError:
        charset = "latin-1"
    reader = _Reader(staging_dir, limits, charset)
    parser = MultipartParser(params[b"boundary"], reader.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            await reader.drain()
        parser.finalize()
        await reader.drain()
        if not reader.ended:
            raise Unprocessable("The form ends before its closing boundary.", code="validation_error")
    except MultipartParseError as exc:
        _discard(reader)
        raise Unprocessable(
            f"The form is not valid multipart/form-data: {exc}", code="validation_error"
        ) from None
    except ClientDisconnect:
        _discard(reader)
        raise DarkroomError("The client went away during the upload.") from None
    except BaseException:  # a refusal (413 mid-stream), a cancelled request
        _discard(reader)
        raise
    return reader.form


def _discard(reader: _Reader) -> None:
    for staging in reader.open_files:
        staging.discard()
