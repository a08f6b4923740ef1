"""The one rule for labels and texts, on real files: labels read as written (stripped, no NaN
coercion), ids vs names, refusals that name the row and the fix, and advice that, followed,
ends in a correct dataset or a second clear refusal. nclass is taken from the data when null."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from utils.config_schema import DatasetConfig
from utils.data import DataError, load_text_dataset


def csv_file(path: Path, rows, header=("text", "label")) -> str:
    lines = [",".join(header)] + [",".join(f'"{c}"' if c is not None else "" for c in r)
                                  for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def jsonl_file(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def load(path: str, **kw):
    return load_text_dataset(DatasetConfig(name="t", path=path, **kw))


def refusal(path: str, **kw) -> str:
    with pytest.raises(DataError) as err:
        load(path, **kw)
    return str(err.value)


def by_label(ds) -> dict:
    out: dict = {}
    for t, y in zip(ds.train_texts + ds.test_texts, ds.train_labels + ds.test_labels):
        out[t] = ds.class_names[y]
    return out


def test_none_and_na_are_class_names_and_nclass_is_inferred(tmp_path):
    rows = [(f"text {i}", ["None", "NA", "null"][i % 3]) for i in range(15)]
    ds = load(csv_file(tmp_path / "d.csv", rows))               # nclass left out: from the data
    assert ds.class_names == ["NA", "None", "null"]
    assert by_label(ds) == dict(rows)
    msg = refusal(csv_file(tmp_path / "d.csv", rows), nclass=4)
    assert "dataset.nclass is 4" in msg and "3 classes" in msg and "dataset.nclass=3" in msg


def test_stray_spaces_are_stripped_not_new_classes(tmp_path):
    """Silent-wrong case 5: `sports`, ` sports`, `sports ` were three classes (and the nclass
    advice led there)."""
    rows = [(f"t{i}", [" sports", "sports ", "sports", "tech", " tech "][i % 5]) for i in range(20)]
    ds = load(csv_file(tmp_path / "d.csv", rows), nclass=2)
    assert ds.class_names == ["sports", "tech"]
    assert by_label(ds) == {t: y.strip() for t, y in rows}


def test_letter_case_needs_confirmation_and_both_ways_out_work(tmp_path):
    rows = [(f"t{i}", ["Sports", "sports", "tech"][i % 3]) for i in range(18)]
    msg = refusal(csv_file(tmp_path / "d.csv", rows))
    assert "'Sports' vs 'sports'" in msg and "dataset.nclass=3" in msg
    # advice 1: confirm they are different classes
    assert load(csv_file(tmp_path / "d.csv", rows), nclass=3).class_names == ["Sports", "sports",
                                                                              "tech"]
    # advice 2: write them the same way
    fixed = [(t, y.lower()) for t, y in rows]
    ds = load(csv_file(tmp_path / "e.csv", fixed))
    assert ds.class_names == ["sports", "tech"] and by_label(ds) == dict(fixed)


def test_jsonl_numbers_mixed_with_strings_refused_with_rows(tmp_path):
    """Silent-wrong case 3: ints and strings ("2" and "10") of 12 classes were merged."""
    rows = [{"text": f"t{i}", "label": (i % 12) if i % 12 < 10 else str(i % 12)}
            for i in range(48)]
    msg = refusal(jsonl_file(tmp_path / "d.jsonl", rows), nclass=12)
    assert "row 11" in msg and "mix numbers and strings" in msg and "every label as" in msg
    # advice: every label a number -> 12 classes, nothing merged
    ds = load(jsonl_file(tmp_path / "n.jsonl", [{**r, "label": int(r["label"])} for r in rows]))
    assert ds.nclass == 12 and by_label(ds) == {r["text"]: str(int(r["label"])) for r in rows}
    # advice: every label a string -> the same 12 classes (digits are ids)
    ds = load(jsonl_file(tmp_path / "s.jsonl", [{**r, "label": str(r["label"])} for r in rows]))
    assert ds.nclass == 12 and by_label(ds) == {r["text"]: str(int(r["label"])) for r in rows}


def test_ids_mixed_with_names_refused(tmp_path):
    rows = [(f"t{i}", ["sports", "tech", "2"][i % 3]) for i in range(12)]
    msg = refusal(csv_file(tmp_path / "d.csv", rows))
    assert "d.csv row 3" in msg and "ids and class names" in msg


def test_blank_label_refused_with_row(tmp_path):
    rows = [(f"t{i}", "a" if i % 2 else "b") for i in range(10)]
    rows[6] = ("t6", None)
    msg = refusal(csv_file(tmp_path / "d.csv", rows))
    assert "d.csv row 7" in msg and "label is blank" in msg
    rows_json = [{"text": t, "label": y} for t, y in rows]
    assert "d.jsonl row 7" in refusal(jsonl_file(tmp_path / "d.jsonl", rows_json))


def test_blank_texts_dropped_with_a_count_never_nan(tmp_path, caplog):
    """Silent-wrong case 4: 24 blank cells became the text "nan" (23 dropped as duplicates)."""
    rows = [(f"article {i}", "ab"[i % 2]) for i in range(40)]
    rows += [(None, "ab"[i % 2]) for i in range(24)] + [("   ", "a")]
    ds = load(csv_file(tmp_path / "d.csv", rows), dedup=False, nclass=2)
    texts = ds.train_texts + ds.test_texts
    assert len(texts) == 40 and "nan" not in texts and all(t.strip() for t in texts)
    assert "dropped 25 rows whose text is blank" in caplog.text
    only_blank = [(None, "a"), (None, "b")]
    assert "every text" in refusal(csv_file(tmp_path / "e.csv", only_blank))
    # an empty row (text and label both blank, as spreadsheets export) is dropped, not refused
    ds = load(csv_file(tmp_path / "f.csv", rows[:40] + [(None, None)]), dedup=False, nclass=2)
    assert len(ds.train_texts + ds.test_texts) == 40


def test_a_label_line_without_text_is_dropped_in_both_spellings(tmp_path, caplog):
    from utils.readers import read_sst_file, read_trec_file
    (tmp_path / "s.txt").write_text("1 good film\n0\n0 \n1 great\n")
    texts, labels, _ = read_sst_file(tmp_path / "s.txt")
    assert texts == ["good film", "great"] and labels == [1, 1]
    assert "dropped 2 lines with a label but no text (lines 2, 3)" in caplog.text
    (tmp_path / "t.txt").write_text("DESC:manner How do I read?\nNUM:date\n")
    assert read_trec_file(tmp_path / "t.txt")[:2] == (["How do I read?"], ["DESC"])


def test_fractions_refused_integer_floats_are_ids(tmp_path):
    rows = [(f"t{i}", ["0.0", "1.0", "2.0"][i % 3]) for i in range(12)]
    assert load(csv_file(tmp_path / "d.csv", rows)).class_names == ["0", "1", "2"]
    rows[4] = ("t4", "1.5")
    msg = refusal(csv_file(tmp_path / "d.csv", rows))
    assert "row 5" in msg and "'1.5' is a fraction" in msg
    js = [{"text": f"t{i}", "label": [0.0, 1.0, 0.5][i % 3]} for i in range(9)]
    assert "row 3" in refusal(jsonl_file(tmp_path / "d.jsonl", js))


def test_ids_starting_at_one_and_stray_ids(tmp_path):
    rows = [(f"t{i}", str(1 + i % 4)) for i in range(16)]           # ids 1..4
    msg = refusal(csv_file(tmp_path / "d.csv", rows))
    assert "subtract 1" in msg and len(msg) < 400
    ds = load(csv_file(tmp_path / "e.csv", [(t, str(int(y) - 1)) for t, y in rows]))
    assert ds.class_names == ["0", "1", "2", "3"]
    stray = [(f"t{i}", str(i % 3)) for i in range(12)] + [("t99", "100000")]
    msg = refusal(csv_file(tmp_path / "f.csv", stray))
    assert "row 13" in msg and "100000" in msg and len(msg) < 400      # not an 889 KB line
    negative = [(f"t{i}", str(i % 3)) for i in range(12)] + [("t99", "-1")]
    assert "row 13" in refusal(csv_file(tmp_path / "g.csv", negative))


def test_single_class_refused_without_impossible_advice(tmp_path):
    msg = refusal(csv_file(tmp_path / "d.csv", [(f"t{i}", "only") for i in range(6)]))
    assert "at least 2" in msg and "nclass=1" not in msg


def test_jsonl_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": }\n')
    assert f"{path}:2" in refusal(str(path))


def test_multilabel_decisions_take_the_top_class_when_none_passes_the_threshold():
    """dataset.at_least_one_label: a row with no logit above 0 takes its top class (a few-shot
    classifier's logits are all negative); rows with classes above 0 keep exactly those."""
    import torch

    from utils.training import multilabel_predictions, scores_from_logits

    logits = torch.tensor([[-1.0, -2.0, -3.0], [0.5, -1.0, 2.0], [-3.0, -0.5, -2.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    assert multilabel_predictions(logits, False).tolist() == [[0, 0, 0], [1, 0, 1], [0, 0, 0]]
    assert multilabel_predictions(logits, True).tolist() == [[1, 0, 0], [1, 0, 1], [0, 1, 0]]
    plain, one = scores_from_logits(logits, labels), scores_from_logits(logits, labels, True)
    assert plain["accuracy"] == pytest.approx(1 / 3) and one["accuracy"] == 1.0
    assert plain["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 2)) and one["micro_f1"] == 1.0
    assert multilabel_predictions(torch.zeros(0, 3), True).shape == (0, 3)
