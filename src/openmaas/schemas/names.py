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

from pydantic import AfterValidator, Field

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
ALIAS_PATTERN = r"^[A-Za-z][A-Za-z0-9._-]{0,63}$"
# Version numbers: at most 9 digits, so they fit every database's integer column.
MAX_VERSION = 999_999_999
_NAME, _VERSION, _ALIAS = NAME_PATTERN[1:-1], "[0-9]{1,9}", ALIAS_PATTERN[1:-1]
# A model version: `name` (its latest), `name:3`, `name@alias`, or its id (`mv_…`, a name too).
MODEL_REF_PATTERN = rf"^({_NAME})(?::({_VERSION})|@({_ALIAS}))?$"  # groups: name, version, alias
# A dataset version: `name` (its latest), `name:3`, or its id (`ds_…`, a name too).
DATASET_REF_PATTERN = rf"^({_NAME})(?::({_VERSION}))?$"  # groups: name, version
# What the OpenAPI document says of a label and a text (below): no control characters (but line
# breaks and tabs in a text).
LABEL_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
# ... and of a file name: a label without '/' or '\\', and not '.' or '..'.
FILE_NAME_PATTERN = r"^(?!\.\.?$)[^\x00-\x1f\x7f-\x9f/\\]*$"
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
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


Label = Annotated[str, AfterValidator(check_label), Field(json_schema_extra={"pattern": LABEL_PATTERN})]
# A file's own name, as a browser or `curl -T` sends it: a label with no folders in it.
FileName = Annotated[
    str, AfterValidator(check_file_name), Field(json_schema_extra={"pattern": FILE_NAME_PATTERN})
]
Text = Annotated[str, AfterValidator(check_text), Field(json_schema_extra={"pattern": TEXT_PATTERN})]
# References, as the OpenAPI document states them; the services parse them (registry/refs.py,
# datasets/refs.py) with these same patterns and name the field a bad one is in.
ModelRefText = Annotated[str, Field(json_schema_extra={"pattern": MODEL_REF_PATTERN})]
DatasetRefText = Annotated[str, Field(json_schema_extra={"pattern": DATASET_REF_PATTERN})]
