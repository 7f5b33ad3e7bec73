"""TemplateError, and how values and names are shown in its messages.

Every message says where the problem is, then what is wrong:

    "<where>: template '<name>', parameter '<p>': <what is wrong>"

`where` is "request" for a template or values sent over HTTP, or a file path relative to the templates folder;
the template and parameter parts are left out when they do not apply (or are not yet known to be valid names).
Values from a request are shown clipped, so an error message stays short whatever was sent.
"""

from __future__ import annotations

_CLIP = 60


def clip(text: str, limit: int = _CLIP) -> str:
    """text cut to `limit` characters, with "..." when it was longer."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def kind(value) -> str:
    """The JSON kind of a value, with its article: "a string", "an object", ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def shown(value) -> str:
    """A short rendering of a value for a message: scalars as written (strings quoted and clipped), containers
    by their kind. Integers too large to print cheaply are shown by their size."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 128 else f"an integer of {value.bit_length()} bits"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return repr(clip(value))
    return kind(value)


def names(items, limit: int = 10) -> str:
    """'a', 'b', 'c' (and N more): a list of names for a message, each clipped."""
    items = list(items)
    text = ", ".join(f"'{clip(str(i))}'" for i in items[:limit])
    return text + (f" (and {len(items) - limit} more)" if len(items) > limit else "")


class TemplateError(ValueError):
    """A template, a parameter value or a templates file that is refused. The message names where.

    Attributes: where (str), template (str | None), parameter (str | None), and what (the bare description,
    without the where/template/parameter prefix)."""

    def __init__(self, what: str, *, where: str = "request", template: str | None = None, parameter: str | None = None):
        self.where = where
        self.template = template
        self.parameter = parameter
        self.what = what
        parts = [where]
        named = []
        if template is not None:
            named.append(f"template '{clip(template, 100)}'")
        if parameter is not None:
            named.append(f"parameter '{clip(parameter, 100)}'")
        if named:
            parts.append(", ".join(named))
        super().__init__(": ".join(parts) + ": " + what)
