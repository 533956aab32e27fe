"""Validation of class-folder archives: every file must decode as the media its bytes announce,
all files must be of one kind (images or audio), and every class folder must hold files.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from openmaas.datasets.archive import ArchiveLimits, BoundedReader, archive_layout, open_archive
from openmaas.datasets.formats import MEDIA_EXTENSIONS, DatasetFormat, MediaKind, media_kind
from openmaas.datasets.media import image_info, wav_info
from openmaas.datasets.report import DatasetSchema, IssueCollector, ValidationReport


def validate_archive(path: Path, limits: ArchiveLimits | None = None) -> ValidationReport:
    """Read each entry once (bounded), record image sizes / sample rates and report problems."""
    limits = limits or ArchiveLimits()
    issues = IssueCollector()
    schema = DatasetSchema()
    kinds: set[str] = set()
    rows = 0
    with open_archive(path) as archive:
        layout = archive_layout(archive, limits)
        reader = BoundedReader(archive, limits)
        for name in layout.stray_files:
            issues.add("file_outside_class_folder", "files must sit inside a class folder", file=name)
        for label in layout.empty_classes:
            issues.add("empty_class", f"class folder {label!r} holds no files", file=label + "/")
        for label, infos in layout.files.items():
            good = sum(_check_entry(info, reader.read(info), schema, kinds, issues) for info in infos)
            rows += good
            if good == 0:
                issues.add("empty_class", f"class folder {label!r} holds no readable files", file=label + "/")
            schema.classes[label] = good
    if len(kinds) > 1:
        issues.add("mixed_media", f"the archive mixes media kinds: {sorted(kinds)}", file=path.name)
    schema.media_kind = "image" if kinds == {"image"} else "audio" if kinds == {"audio"} else None
    if len([count for count in schema.classes.values() if count]) < 2:
        issues.add("single_class", "an archive needs at least two non-empty class folders", file=path.name)
    return ValidationReport(DatasetFormat.ZIP, rows, schema, issues.issues, issues.truncated)


def _check_entry(
    info: zipfile.ZipInfo, data: bytes, schema: DatasetSchema, kinds: set[str], issues: IssueCollector
) -> bool:
    """Record one file's facts; return whether it is usable."""
    name = info.filename
    actual = media_kind(data[:16])
    claimed = MEDIA_EXTENSIONS.get(Path(name).suffix.lower())
    if actual is None:
        code = "unreadable_image" if claimed in (MediaKind.PNG, MediaKind.JPEG) else "unsupported_file"
        issues.add(code, "not a PNG, JPEG or WAV file", file=name)
        return False
    if claimed is not None and claimed != actual:
        issues.add("type_mismatch", f"named {claimed.value} but the content is {actual.value}", file=name)
        return False
    try:
        if actual == MediaKind.WAV:
            audio = wav_info(data)
            schema.sample_rates[audio.sample_rate] = schema.sample_rates.get(audio.sample_rate, 0) + 1
            kinds.add("audio")
        else:
            width, height, mode = image_info(data)
            size = f"{width}x{height}"
            schema.image_sizes[size] = schema.image_sizes.get(size, 0) + 1
            schema.image_modes[mode] = schema.image_modes.get(mode, 0) + 1
            kinds.add("image")
    except ValueError as exc:
        code = "unreadable_audio" if actual == MediaKind.WAV else "unreadable_image"
        issues.add(code, f"cannot decode: {exc}", file=name)
        return False
    return True
