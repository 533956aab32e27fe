"""Dataset references: an id, a name (its latest version) or name:version."""

from __future__ import annotations

import pytest

from openmaas import errors
from openmaas.datasets.refs import DatasetRef, parse_dataset_ref


def test_dataset_references() -> None:
    assert parse_dataset_ref("ds_abc").id == "ds_abc"
    assert parse_dataset_ref("cancer:2").version == 2
    assert parse_dataset_ref("cancer") == DatasetRef("cancer")
    for bad in ("", "cancer:x", ":2", "a/b"):
        with pytest.raises(errors.ValidationFailed) as caught:
            parse_dataset_ref(bad, param="dataset")
        assert caught.value.param == "dataset"
