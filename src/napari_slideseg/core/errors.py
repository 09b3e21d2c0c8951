"""The package's error types.

Every error napari-slideseg raises on purpose derives from :class:`SlideSegError`,
so that a caller (the CLI, the napari reader, a user's script) can catch one type.
Each message names the file and says what to do about it.
"""

from __future__ import annotations

__all__ = [
    "SlideSegError",
    "Cancelled",
    "SlideNotFoundError",
    "UnsupportedSlideError",
    "CorruptTileError",
    "AnnotationError",
    "AnnotationNotFoundError",
    "MalformedAnnotationError",
    "UnsafeAnnotationError",
    "InvalidGeometryError",
]


class SlideSegError(Exception):
    """Base class of every error raised by napari-slideseg."""


class SlideNotFoundError(SlideSegError, FileNotFoundError):
    """The slide path does not exist."""


class UnsupportedSlideError(SlideSegError):
    """No backend can open the file (unknown format, damaged header, unsupported codec)."""


class CorruptTileError(SlideSegError):
    """The slide opened, but pixel data in the requested region cannot be decoded."""


class AnnotationError(SlideSegError):
    """An annotation file cannot be read or written."""


class AnnotationNotFoundError(AnnotationError, FileNotFoundError):
    """The annotation path does not exist."""


class MalformedAnnotationError(AnnotationError):
    """The file is not well-formed XML/JSON, or not an annotation format we know."""


class UnsafeAnnotationError(MalformedAnnotationError):
    """The XML declares or references entities (entity expansion, external entities)."""


class InvalidGeometryError(AnnotationError):
    """A region has NaN, infinite or non-numeric coordinates, or too few vertices."""


class Cancelled(SlideSegError):
    """A long run was cancelled by the user (nothing half-written is left behind)."""
