"""_model_record: the directory rule and the one reader of a model's record."""

from __future__ import annotations

import json

import pytest

from ansible_collections.burst.golden_ami.plugins.module_utils._model_record import (
    RECORD_FORMAT,
    RECORD_NAME,
    ModelCacheError,
    load_record,
    model_dir_name,
)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"repo_id": "not-a-repo"}, "repo_id 'not-a-repo' is not of the form 'org/name'"),
        ({"source": "hub"}, "repo_id None is not of the form 'org/name'"),
        ({"source": "s3", "prefix": "/"}, "an s3 source with an empty prefix needs a name"),
        ({"source": "url"}, "a url source needs a name"),
    ],
)
def test_the_rule_names_what_is_missing(model, message):
    with pytest.raises(ModelCacheError) as error:
        model_dir_name(model)
    assert str(error.value) == message


def test_a_missing_damaged_or_foreign_record_is_none_unless_required(tmp_path):
    assert load_record(str(tmp_path)) is None
    (tmp_path / RECORD_NAME).write_text("{")
    assert load_record(str(tmp_path)) is None
    (tmp_path / RECORD_NAME).write_text(json.dumps({"format": RECORD_FORMAT + 1, "version": "v", "files": []}))
    assert load_record(str(tmp_path)) is None
    record = {"format": RECORD_FORMAT, "version": "v", "files": []}
    (tmp_path / RECORD_NAME).write_text(json.dumps(record))
    assert load_record(str(tmp_path)) == record


def test_a_required_record_says_what_is_wrong(tmp_path):
    path = tmp_path / RECORD_NAME
    with pytest.raises(
        ModelCacheError, match=r"holds no model record \(\.burst-model\.json\): install it with model_cache"
    ):
        load_record(str(tmp_path), required=True)
    path.write_text("{")
    with pytest.raises(ModelCacheError, match=r"the model record .* is not JSON"):
        load_record(str(tmp_path), required=True)
    path.write_text(json.dumps({"version": "v"}))
    with pytest.raises(ModelCacheError, match=r"the model record .* is not one model_cache wrote"):
        load_record(str(tmp_path), required=True)
    # What modelcar_image packs: any record that lists files and names a version.
    path.write_text(json.dumps({"version": "v", "files": []}))
    assert load_record(str(tmp_path), required=True) == {"version": "v", "files": []}
