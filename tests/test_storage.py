"""batches/storage.py: the one function that makes a path under data/, and the check of paths
read back from the database. Pure: no database, a temporary DATA_DIR."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batches import storage
from batches.services.batches import new_submission_token


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path) -> Path:
    settings.DATA_DIR = tmp_path / "data"
    return settings.DATA_DIR


def test_a_server_made_name_becomes_a_file_of_its_area(data_dir):
    name = storage.new_name()

    assert storage.data_path("staging", name) == data_dir.resolve() / "staging" / f"{name}.jsonl"
    assert (data_dir / "staging").is_dir()
    assert storage.data_path("results", "7-batch_abc") == data_dir.resolve() / "results" / (
        "7-batch_abc"
    )
    assert storage.data_path("results", "7-batch_abc", "output") == (
        data_dir.resolve() / "results" / "7-batch_abc" / "output.jsonl"
    )


@pytest.mark.parametrize(
    "name",
    ["", "..", ".", "/tmp/x", "../../x", "../results/1-batch_a/output", "a/b", "a\x00b",
     "a.jsonl", "é", "x" * 161, "a b", "a\nb", "a\\b"],
)  # fmt: skip
def test_anything_but_a_server_made_name_is_refused(name):
    with pytest.raises(storage.UnsafePath):
        storage.data_path("staging", name)
    with pytest.raises(storage.UnsafePath):
        storage.data_path("results", "1-batch_a", name)


def test_an_unknown_area_or_too_many_names_are_refused():
    with pytest.raises(storage.UnsafePath):
        storage.data_path("keys", "secret_key")  # type: ignore[arg-type]
    with pytest.raises(storage.UnsafePath):
        storage.data_path("staging", "a", "b")
    with pytest.raises(storage.UnsafePath):
        storage.data_path("results")


def test_a_link_planted_inside_an_area_cannot_lead_out(data_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (data_dir / "results").mkdir(parents=True)
    (data_dir / "results" / "1-batch_a").symlink_to(outside)

    with pytest.raises(storage.UnsafePath):
        storage.data_path("results", "1-batch_a", "output")


def test_new_names_and_submission_tokens_have_the_token_shape():
    for _ in range(50):
        assert storage.is_token(storage.new_name())
        assert storage.is_token(new_submission_token())
    for value in ["", "short", "x" * 25, "a" * 23 + "/", None, 24]:
        assert not storage.is_token(value)


def test_a_stored_path_is_kept_only_while_it_is_one_data_path_would_make(data_dir, tmp_path):
    good = storage.data_path("staging", storage.new_name())

    assert storage.stored_path("staging", str(good)) == good
    assert storage.stored_path("staging", "") is None
    assert storage.stored_path("staging", "/tmp/x.jsonl") is None
    assert storage.stored_path("staging", str(good.parent / ".." / "x.jsonl")) is None
    assert storage.stored_path("staging", "staging/x.jsonl") is None  # not absolute
    assert storage.stored_path("staging", str(good.parent / "a b.jsonl")) is None
    assert storage.stored_path("staging", str(good.with_suffix(".txt"))) is None
    copy = storage.data_path("results", "1-batch_a", "output")
    assert storage.stored_path("results", str(copy)) == copy
    assert storage.stored_path("staging", str(copy)) is None  # another area
    assert storage.stored_path("results", str(copy.parent)) is None  # a folder, not a file


def test_a_restored_name_stays_inside_data(data_dir):
    assert storage.restored_path(PurePosixPath("results/1-batch_a/output.jsonl")) == (
        data_dir.resolve() / "results" / "1-batch_a" / "output.jsonl"
    )
    for bad in ["/etc/passwd", "../x", "results/../../x", "."]:
        with pytest.raises(storage.UnsafePath):
            storage.restored_path(PurePosixPath(bad))


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(name=st.text(max_size=40), area=st.sampled_from(["staging", "results"]))
def test_whatever_the_name_a_path_is_inside_its_area_or_refused(name, area):
    try:
        path = storage.data_path(area, name)
    except storage.UnsafePath:
        return
    root = storage.area_root(area)
    assert path.parent == root
    assert storage.NAME.fullmatch(name)
