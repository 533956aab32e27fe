"""What the names people give things may hold.

A resource name (an organisation, deployment, dataset or model) appears in URLs and in references
such as `churn:3`: letters, digits, '.', '_' and '-', starting with a letter or digit. A label (an
API key's name, a plan, a tag, a column) is free text on one line, and a text (a description, a
note) may break lines; neither holds other control characters, which terminals and logs misshow and
PostgreSQL refuses (NUL). A file name is a label without folders (no '/' or '\\').
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINE_BREAKS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def check_label(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (NUL, line breaks, tabs, …)")
    return value


def check_text(value: str) -> str:
    if _CONTROL_BUT_LINE_BREAKS.search(value):
        raise ValueError("must not contain control characters other than line breaks and tabs")
    return value


def check_file_name(value: str) -> str:
    check_label(value)
    if "/" in value or "\\" in value or value in (".", ".."):
        raise ValueError("must be a file's name, without folders")
    return value


Label = Annotated[str, AfterValidator(check_label)]
# A file's own name, as a browser or `curl -T` sends it: a label with no folders in it.
FileName = Annotated[str, AfterValidator(check_file_name)]
Text = Annotated[str, AfterValidator(check_text)]
