"""`--cache`: prepared arrays are reused only when the same settings and the same generator code made them."""

from __future__ import annotations

import numpy as np
import pytest

from deepxray.training import cache as cache_module
from deepxray.training.cache import load_or_prepare
from deepxray.training.chest_data import ChestSource, ChestTrainingSet, load_or_build_chest


class Preparer:
    """A stand-in for rendering (the arrays hold the settings they were made from), counting its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, settings: str):
        def prepare() -> dict:
            self.calls += 1
            return {"settings": np.array(settings)}

        return prepare


def load(path) -> dict:
    with np.load(path) as data:
        return {"settings": data["settings"]}


def save(data: dict, path, stamp: str) -> None:
    with open(path, "wb") as file:
        np.savez(file, **data, **{cache_module.STAMP_KEY: np.array(stamp)})


def prepared(path, settings: str, preparer: Preparer) -> str:
    return str(load_or_prepare(path, settings, preparer(settings), load, save, what="arrays")["settings"])


def test_a_cache_is_read_back_for_the_same_settings_and_prepared_again_for_others(tmp_path, capsys):
    path, preparer = tmp_path / "arrays.npz", Preparer()
    assert prepared(path, "n=4", preparer) == "n=4" and preparer.calls == 1 and path.is_file()
    assert prepared(path, "n=4", preparer) == "n=4" and preparer.calls == 1
    assert f"using cached arrays {path}" in capsys.readouterr().out
    assert prepared(path, "n=8", preparer) == "n=8" and preparer.calls == 2
    assert "from other settings or other preparing code: preparing them again" in capsys.readouterr().out
    assert prepared(path, "n=8", preparer) == "n=8" and preparer.calls == 2  # the new arrays replaced the old


def test_changed_preparing_code_prepares_the_arrays_again(tmp_path, monkeypatch):
    path, preparer = tmp_path / "arrays.npz", Preparer()
    prepared(path, "n=4", preparer)
    monkeypatch.setattr(cache_module, "code_fingerprint", lambda: "other phantom code")
    prepared(path, "n=4", preparer)
    assert preparer.calls == 2


@pytest.mark.parametrize("old_file", ["no stamp", "not an npz", "half written"])
def test_an_unstamped_or_unreadable_file_is_prepared_again_and_replaced(old_file, tmp_path):
    path, preparer = tmp_path / "arrays.npz", Preparer()
    if old_file == "no stamp":  # a cache from before stamps
        np.savez(path, settings=np.array("n=4"))
    elif old_file == "not an npz":
        path.write_bytes(b"not arrays")
    else:
        prepared(path, "n=4", preparer)
        path.write_bytes(path.read_bytes()[:100])
    calls = preparer.calls
    assert prepared(path, "n=4", preparer) == "n=4" and preparer.calls == calls + 1
    assert prepared(path, "n=4", preparer) == "n=4" and preparer.calls == calls + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays.npz"]  # no ".partial" left behind


def test_the_cache_is_written_at_the_path_given_whatever_its_suffix(tmp_path):
    path, preparer = tmp_path / "arrays.cache", Preparer()
    prepared(path, "n=4", preparer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays.cache"]
    prepared(path, "n=4", preparer)
    assert preparer.calls == 1


def test_chest_training_films_come_from_the_cache_only_for_the_same_source(tmp_path, monkeypatch):
    path = tmp_path / "chest.npz"
    films = load_or_build_chest(ChestSource(seed=5, n=3), path, progress=False)
    again = load_or_build_chest(ChestSource(seed=5, n=3), path, progress=False)
    for name in ("views", "labels", "ids", "masks"):
        np.testing.assert_array_equal(getattr(again, name), getattr(films, name))

    def no_rendering(*args, **kwargs) -> ChestTrainingSet:
        raise AssertionError("rendered although the cache holds these films")

    monkeypatch.setattr("deepxray.training.chest_data.build_chest_set", no_rendering)
    load_or_build_chest(ChestSource(seed=5, n=3), path, progress=False)
    with pytest.raises(AssertionError, match="rendered although"):  # another seed: the cache does not hold it
        load_or_build_chest(ChestSource(seed=6, n=3), path, progress=False)
