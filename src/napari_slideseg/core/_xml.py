"""Hardened XML parsing and plain XML writing for annotation files.

Annotation files come from strangers, so the parser is expat with every entity
mechanism refused: an internal or external entity declaration, an unparsed entity or a
reference to an external entity aborts the parse (this blocks "billion laughs"
expansion and external-entity file or network reads), as defusedxml does. Elements the
formats do not model are kept as :class:`RawElement` trees and written back verbatim.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from xml.parsers import expat

from .errors import MalformedAnnotationError, UnsafeAnnotationError

__all__ = ["RawElement", "make_parser", "parse_file", "quote_attr", "write_raw"]


@dataclass(eq=False)
class RawElement:
    """An XML element kept verbatim: tag, attributes (in file order), children, text."""

    tag: str
    attrib: dict[str, str] = field(default_factory=dict)
    children: list[RawElement] = field(default_factory=list)
    text: str = ""



def make_parser(path: Path | str) -> Any:
    """An expat parser that refuses DTD entities and external references."""
    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)

    def refuse(*_args: Any) -> None:
        line, col = parser.CurrentLineNumber, parser.CurrentColumnNumber + 1
        raise UnsafeAnnotationError(
            f"{path}: line {line}, column {col}: the file declares or references XML "
            "entities, which annotation files never need; refusing to read it (entity "
            "expansion and external entities are a known attack on XML readers).")

    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    return parser


def parse_file(path: Path, parser: Any, stream: IO[bytes] | None = None) -> None:
    """Run ``parser`` over the file, turning expat errors into a package error."""
    try:
        if stream is not None:
            parser.ParseFile(stream)
        else:
            with open(path, "rb") as fh:
                parser.ParseFile(fh)
    except expat.ExpatError as exc:
        raise MalformedAnnotationError(
            f"{path}: line {exc.lineno}, column {exc.offset + 1}: malformed XML "
            f"({expat.ErrorString(exc.code)}).") from None


class RawBuilder:
    """Builds :class:`RawElement` trees from expat callbacks for unmodelled elements."""

    def __init__(self) -> None:
        self.stack: list[RawElement] = []

    def start(self, tag: str, attrib: dict[str, str]) -> RawElement:
        element = RawElement(tag, dict(attrib))
        if self.stack:
            self.stack[-1].children.append(element)
        self.stack.append(element)
        return element

    def end(self) -> RawElement | None:
        """Close the current element; returns the root when the whole tree is closed."""
        element = self.stack.pop()
        return None if self.stack else element

    def data(self, text: str) -> None:
        if self.stack:
            self.stack[-1].text += text


_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
                          "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"})
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def quote_attr(value: object) -> str:
    """An attribute value, escaped and in double quotes."""
    return '"' + str(value).translate(_ESCAPES) + '"'


def format_attrs(attrib: dict[str, Any]) -> str:
    return "".join(f" {k}={quote_attr(v)}" for k, v in attrib.items())


def write_raw(element: RawElement, write: Callable[[str], Any], indent: str = "") -> None:
    """Write a raw element tree with tab indentation."""
    head = f"{indent}<{element.tag}{format_attrs(element.attrib)}"
    text = element.text.strip()
    if not element.children and not text:
        write(head + "/>\n")
        return
    if not element.children:
        write(f"{head}>{text.translate(_TEXT_ESCAPES)}</{element.tag}>\n")
        return
    write(head + ">" + (text.translate(_TEXT_ESCAPES) if text else "") + "\n")
    for child in element.children:
        write_raw(child, write, indent + "\t")
    write(f"{indent}</{element.tag}>\n")
