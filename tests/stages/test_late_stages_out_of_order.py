"""visualize run before its train and evaluate inputs exist: one line naming the file and the stage."""
from tests.conftest import make_workdir, stage


def test_visualize_before_training_names_the_train_stage(tmp_path):
    work = make_workdir(tmp_path)
    result = stage(work, "stages.visualize")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: results/train/unet/folds.tsv: missing; run the train_unet stage first")
    assert not (work / "results/plots").exists()
