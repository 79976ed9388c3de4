"""medseg.model_runs: the run id that every fold checkpoint and ensemble.json of one k-fold training
carry changes with anything that makes it another training (params, split, sampling), and only then."""
from __future__ import annotations

from medseg import paths
from medseg.model_runs import run_id


def test_the_run_id_follows_the_params_the_split_and_the_sampling(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths.SPLIT_CSV.parent.mkdir(parents=True)
    paths.SPLIT_CSV.write_text("slice_id,split,fold\na,train,0\nb,train,1\n")
    paths.SAMPLING_CSV.write_text("slice_id,repeats\na,1\nb,2\n")
    train = {"epochs": 12, "lr": 0.003}
    first = run_id(train, {"type": "dice_bce"})
    assert run_id(dict(reversed(train.items())), {"type": "dice_bce"}) == first  # key order is not a new run
    assert len(first) == 16 and int(first, 16) >= 0
    assert run_id(train | {"lr": 0.001}, {"type": "dice_bce"}) != first
    paths.SAMPLING_CSV.write_text("slice_id,repeats\na,1\nb,3\n")
    second = run_id(train, {"type": "dice_bce"})
    assert second != first
    paths.SPLIT_CSV.write_text("slice_id,split,fold\na,train,1\nb,train,0\n")
    assert run_id(train, {"type": "dice_bce"}) not in (first, second)
