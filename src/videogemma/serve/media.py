"""From a request's video URL to a file the processor may open, and nothing else.

Two kinds of URL are read:
- `data:video/<type>;base64,<data>`: an upload; its decoded size is checked against `max_video_bytes` from the
  base64 length before anything is decoded, then it is written to a private temporary file that is deleted
  as soon as its frames are read;
- `file://<path>`: a file under `--media-root` (absolute, or relative to the root), confined as the dataset
  tools confine paths (`datasets.paths.resolve_in_root`: `..`, absolute paths elsewhere and symlinks leading
  out are refused with 403), with a video suffix, at most `max_video_bytes`.
Anything else (http, ftp, a bare path) is refused: this server fetches nothing and reads no other file.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import mimetypes
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

from videogemma.constants import VIDEO_SUFFIXES
from videogemma.datasets.paths import resolve_in_root
from videogemma.errors import PathOutsideRootError, RecordError
from videogemma.serve.protocol import ApiError

# data:[<media type>][;<parameter>]*;base64,<data>
_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[^;,]*)*?);base64,", re.ASCII)
UPLOAD_LABEL = "the uploaded video"


class MediaResolver:
    """Turns video URLs into readable files; owns the folder uploads are written to while they are read."""

    def __init__(self, media_root: str | os.PathLike | None, max_video_bytes: int) -> None:
        self.media_root = None if media_root is None else Path(media_root)
        self.max_video_bytes = max_video_bytes
        self._uploads = tempfile.TemporaryDirectory(prefix="videogemma-serve-")

    def close(self) -> None:
        self._uploads.cleanup()

    @contextlib.contextmanager
    def open(self, url: str, param: str) -> Iterator[tuple[Path, str]]:
        """(path, label for messages) of the video `url` names; an upload's file is removed afterwards."""
        if url.startswith("data:"):
            path = self._write_upload(url, param)
            try:
                yield path, UPLOAD_LABEL
            finally:
                path.unlink(missing_ok=True)
        elif url.startswith("file://"):
            yield self._media_file(unquote(url[len("file://") :]), param)
        else:
            scheme = url.split(":", 1)[0] if ":" in url[:12] else "a bare path"
            raise ApiError(
                400,
                f"{param}: {scheme!s} URLs are not read; give the video as data:video/mp4;base64,... (an "
                "upload) or as file://PATH under the server's --media-root (this server fetches nothing)",
                param=param,
                code="unsupported_video_url",
            )

    def _write_upload(self, url: str, param: str) -> Path:
        match = _DATA_URL.match(url)
        if match is None:
            raise ApiError(
                400,
                f"{param}: a data URL must be data:video/<type>;base64,<data>",
                param=param,
                code="invalid_video",
            )
        media_type = (match.group("type") or "application/octet-stream").lower()
        if not (media_type.startswith("video/") or media_type == "application/octet-stream"):
            raise ApiError(
                400, f"{param}: {media_type} is not a video type", param=param, code="invalid_video"
            )
        payload = url[match.end() :]
        padding = len(payload) - len(payload.rstrip("="))
        size = len(payload) * 3 // 4 - padding
        if size > self.max_video_bytes:
            raise self._too_large(param, UPLOAD_LABEL, size)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(
                400, f"{param}: the data URL is not valid base64", param=param, code="invalid_video"
            ) from None
        suffix = mimetypes.guess_extension(media_type) or ".mp4"
        path = Path(self._uploads.name) / f"upload-{uuid.uuid4().hex}{suffix}"
        # Private: the upload is the client's; no other user of the machine reads it.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        return path

    def _media_file(self, path: str, param: str) -> tuple[Path, str]:
        if self.media_root is None:
            raise ApiError(
                403,
                f"{param}: this server reads no files (start it with --media-root DIR to serve videos from DIR)",
                param=param,
                code="path_outside_media_root",
            )
        try:
            resolved = resolve_in_root(path, self.media_root, source_file="--media-root", record=param)
        except PathOutsideRootError:
            raise ApiError(
                403, f"{param}: {path!r} is not under the server's --media-root", param=param,
                code="path_outside_media_root",
            ) from None  # fmt: skip
        except RecordError as error:
            raise ApiError(400, f"{param}: {error.reason}", param=param, code="invalid_video") from None
        if resolved.suffix.lower() not in VIDEO_SUFFIXES:
            raise ApiError(
                400, f"{param}: {path!r} is not a video file ({', '.join(VIDEO_SUFFIXES)})", param=param,
                code="invalid_video",
            )  # fmt: skip
        if not resolved.is_file():
            raise ApiError(400, f"{param}: {path!r}: no such video file", param=param, code="video_not_found")
        size = resolved.stat().st_size
        if size > self.max_video_bytes:
            raise self._too_large(param, repr(path), size)
        return resolved, path

    def _too_large(self, param: str, label: str, size: int) -> ApiError:
        return ApiError(
            413,
            f"{param}: {label} is {size} bytes, above the server's limit of {self.max_video_bytes} bytes "
            "(max_video_bytes)",
            param=param,
            code="max_video_bytes",
        )
