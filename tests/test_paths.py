"""Workdir paths through etils.epath: local relative paths made absolute (orbax needs them), URLs kept."""

import os

from etils import epath

from ego_jax.train import paths


def test_relative_local_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    got = paths.absolute("work/dir")
    assert isinstance(got, epath.Path) and os.fspath(got) == os.path.join(str(tmp_path), "work", "dir")
    assert paths.absolute(got) == got


def test_bucket_url_is_kept_as_is():
    assert os.fspath(paths.absolute("gs://bucket/workdir") / "stage") == "gs://bucket/workdir/stage"
