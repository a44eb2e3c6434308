import pytest

from kif.errors import ConfigError
from kif.metrics import (
    average_performance, backward_transfer, cl_metrics, clean_prediction, exact_match,
    forward_transfer, normalize_answer, rouge_l, score_each, score_task,
)


@pytest.mark.parametrize("raw, norm", [
    ("The Cat!", "cat"),
    ("  an   apple, a pear ", "apple pear"),
    ("Positive.", "positive"),
    ("theatre", "theatre"),  # articles only as whole words
    ("", ""),
])
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


def test_exact_match():
    assert exact_match("Positive.", ["positive"]) == 100.0
    assert exact_match("the answer", ["Answer"]) == 100.0
    assert exact_match("negative", ["positive"]) == 0.0
    assert exact_match("b", ["a", "B"]) == 100.0  # best over references
    assert exact_match("entailment", "entailment") == 100.0  # a bare string is one reference


def test_rouge_l_hand_computed():
    # LCS "the cat on the mat" = 5 of 6 tokens each side: P = R = F = 5/6.
    assert rouge_l("the cat sat on the mat", ["the cat was on the mat"]) == pytest.approx(250 / 3)
    # 2-token pred vs 4-token ref, LCS 2: P = 1, R = 1/2, F = 2/3.
    assert rouge_l("red fox", ["the red quick fox"]) == pytest.approx(200 / 3)
    # max over references
    assert rouge_l("red fox", ["blue whale", "the red quick fox", "red"]) == pytest.approx(200 / 3)
    assert rouge_l("cats", ["cat"]) == 100.0  # Porter stemming
    assert rouge_l("dog", ["cat"]) == 0.0


def test_score_task():
    preds, refs = ["a", "b", "c", "d"], [["a"], ["x"], ["c", "y"], ["z"]]
    assert score_each("accuracy", preds, refs) == [100.0, 0.0, 100.0, 0.0]
    assert score_task("accuracy", preds, refs) == 50.0
    assert score_task("rougeL", ["the cat sat on the mat", "cat"], [["the cat was on the mat"],
                                                                      ["cat"]]) == pytest.approx(
        (250 / 3 + 100) / 2)
    with pytest.raises(ConfigError, match="unknown metric"):
        score_task("bleu", preds, refs)
    with pytest.raises(ValueError):
        score_task("accuracy", preds, refs[:2])


def test_clean_prediction():
    assert clean_prediction("  \n\n positive \nInput: more") == "positive"
    assert clean_prediction("   ") == ""


# a[j][i]: score on task i after training task j
A = [[60.0, 10.0, 20.0],
     [50.0, 70.0, 30.0],
     [40.0, 65.0, 80.0]]


def test_cl_metrics_full():
    assert average_performance(A) == pytest.approx(185 / 3)      # (40 + 65 + 80) / 3
    assert forward_transfer(A) == pytest.approx(20.0)           # (a[0][1] + a[1][2]) / 2
    assert backward_transfer(A) == pytest.approx(-12.5)         # ((40-60) + (65-70)) / 2
    assert cl_metrics(A) == pytest.approx({"AP": 185 / 3, "FWT": 20.0, "BWT": -12.5})


def test_cl_metrics_partial_run():
    partial = A[:2]  # 2 rows of a 3-task run: formulas over the first 2 tasks
    assert cl_metrics(partial) == pytest.approx({"AP": 60.0, "FWT": 10.0, "BWT": -10.0})
    assert cl_metrics(A, k=2) == cl_metrics(partial)
    one = cl_metrics(A[:1])
    assert one == {"AP": 60.0, "FWT": None, "BWT": None}
    assert cl_metrics([]) == {"AP": None, "FWT": None, "BWT": None}
    with pytest.raises(ValueError):
        cl_metrics(A, k=4)


def test_cl_metrics_none_entries():
    # Only the diagonal and the last row evaluated: FWT undefined, AP/BWT fine.
    a = [[60.0, None, None],
         [None, 70.0, None],
         [40.0, 65.0, 80.0]]
    assert cl_metrics(a)["FWT"] is None
    assert average_performance(a) == pytest.approx(185 / 3)
    assert backward_transfer(a) == pytest.approx(-12.5)
    a[2][0] = None
    assert average_performance(a) is None and backward_transfer(a) is None
    assert average_performance([[1.0]]) == 1.0
    assert average_performance([[1.0, 2.0], [3.0]]) is None  # short row = not evaluated
