import pandas as pd

from medseg.sampling import class_statistics, sampling_table


def test_neg_keep_and_pos_repeat_counts():
    train = pd.DataFrame({"slice_id": [f"s{i}" for i in range(100)],
                          "fg_pixels": [10] * 20 + [0] * 80})
    table = sampling_table(train, neg_keep=0.15, pos_repeat=1.5, seed=0)
    assert table.loc[table.positive == 1, "repeats"].sum() == 30
    assert set(table.loc[table.positive == 1, "repeats"]) == {1, 2}
    assert table.loc[table.positive == 0, "repeats"].sum() == 12
    stats = class_statistics(train, table, pixels_per_slice=100)
    assert stats["slices_before"] == 100 and stats["slices_after"] == 42
    assert stats["fg_share_before"] == 200 / 10_000
    assert abs(stats["fg_share_after"] - 300 / 4_200) < 1e-12
