"""A streamed `multipart/form-data` reader for uploads sent as forms (OpenAI's `/v1/files`): the
one file part goes straight to a writable file, size-limited, the small text fields are kept.

Nothing is buffered beyond a chunk: python-multipart's push parser calls back with slices of each
chunk as it arrives. Knows nothing of HTTP frameworks: the caller hands in the body as chunks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from openmaas import errors

MAX_FIELDS = 16
MAX_FIELD_BYTES = 4096


@dataclass
class Form:
    """The form's text fields, and the file part's name and size (None: no file part came)."""

    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    file_bytes: int = 0


def boundary_of(content_type: str) -> bytes:
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise errors.UnsupportedMediaType(
            "Send the file as multipart/form-data with a 'file' part and a 'purpose' field "
            "(the openai SDK's files.create does).",
            param="file",
        )
    return boundary


def _base_name(raw: str) -> str:
    # Browsers and some clients send a full path; only its last part names the file.
    name = PureWindowsPath(PurePosixPath(raw).name).name.strip()
    return name[:255] or "file"


class _Reader:
    def __init__(self, out: BinaryIO, file_field: str, max_file_bytes: int) -> None:
        self.out, self.file_field, self.max_file_bytes = out, file_field, max_file_bytes
        self.form = Form()
        self.ended = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._name: str | None = None
        self._is_file = False
        self._value = bytearray()

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._header_name.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._disposition, self._name, self._is_file = b"", None, False
        self._value.clear()

    def _header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if self._name == self.file_field:
            if self.form.filename is not None:
                raise errors.InvalidRequest("Send one file per upload.", param=self.file_field)
            self._is_file = True
            self.form.filename = _base_name(filename.decode("utf-8", "replace")) if filename else "file"
        elif len(self.form.fields) >= MAX_FIELDS:
            raise errors.InvalidRequest(f"The form has more than {MAX_FIELDS} fields.", param="body")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.form.file_bytes += end - start
            if self.form.file_bytes > self.max_file_bytes:
                raise errors.PayloadTooLarge(
                    f"The file is larger than {self.max_file_bytes} bytes.", param=self.file_field
                )
            self.out.write(data[start:end])
            return
        self._value.extend(data[start:end])
        if len(self._value) > MAX_FIELD_BYTES:
            raise errors.InvalidRequest(
                f"The form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes.", param=self._name
            )

    def _part_end(self) -> None:
        if not self._is_file and self._name:
            try:
                self.form.fields[self._name] = self._value.decode("utf-8")
            except UnicodeDecodeError:
                raise errors.InvalidRequest(
                    f"The form field {self._name!r} is not UTF-8 text.", param=self._name
                ) from None

    def _end(self) -> None:
        self.ended = True


def read_form(
    chunks: Iterable[bytes], content_type: str, out: BinaryIO, *, file_field: str, max_file_bytes: int
) -> Form:
    """Parse a multipart body: the part named `file_field` is written to `out`, the rest kept as
    text fields. Raises UnsupportedMediaType (not a form), PayloadTooLarge (the file is over
    `max_file_bytes`), InvalidRequest (a malformed or cut-off form)."""
    reader = _Reader(out, file_field, max_file_bytes)
    parser = MultipartParser(boundary_of(content_type), reader.callbacks())  # type: ignore[arg-type]
    try:
        for chunk in chunks:
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise errors.InvalidRequest(f"The multipart form is malformed: {exc}", param="body") from None
    if not reader.ended:
        raise errors.InvalidRequest("The multipart form ended before its closing boundary.", param="body")
    return reader.form
