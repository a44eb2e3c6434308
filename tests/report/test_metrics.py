import pytest

from kif.data.benchmarks import label_set
from kif.errors import ConfigError
from kif.metrics import (
    CL_METRICS, METRICS, NORMALIZATIONS, Metric, answer_set, answer_text, average_performance,
    backward_transfer, canonical_answer, cl_line, cl_metrics, clean_prediction, describe_normalization,
    exact_match, forward_transfer, joint_score, normalize_answer, rouge_l, score_each,
    score_task, set_match, token_f1,
)


@pytest.mark.parametrize("raw, harness, lenient", [
    ("The Cat!", "the cat", "cat"),
    ("  an   apple, a pear ", "an apple a pear", "apple pear"),
    ("Positive.", "positive", "positive"),
    ("theatre", "theatre", "theatre"),  # articles only as whole words
    ("Business & Finance", "business finance", "business finance"),
    ("", "", ""),
])
def test_normalize_answer(raw, harness, lenient):
    assert normalize_answer(raw) == harness  # harness is the default
    assert normalize_answer(raw, "harness") == harness
    assert normalize_answer(raw, "lenient") == lenient


def test_exact_match():
    assert exact_match("Positive.", ["positive"]) == 100.0
    assert exact_match("the answer", ["Answer"], "lenient") == 100.0
    assert exact_match("negative", ["positive"]) == 0.0
    assert exact_match("b", ["a", "B"]) == 100.0  # best over references
    assert exact_match("entailment", "entailment") == 100.0  # a bare string is one reference


def test_harness_vs_lenient_issue_examples():
    # The O-LoRA/SAPT harness keeps articles: "the entailment" is wrong there, right in kif's
    # lenient form.
    assert exact_match("the entailment", ["entailment"]) == 0.0
    assert exact_match("the entailment", ["entailment"], "harness") == 0.0
    assert exact_match("the entailment", ["entailment"], "lenient") == 100.0
    # Multi-line generation: harness scores all of it, lenient its first line.
    gen = "  the cat sat\non the mat\n"
    assert answer_text(gen, "harness") == "the cat sat\non the mat"
    assert answer_text(gen, "lenient") == "the cat sat"
    ref = ["the cat sat on the mat"]
    harness, lenient = Metric("rougeL"), Metric("rougeL", normalization="lenient")
    assert harness.score(harness.answer(gen), ref) == pytest.approx(100.0)
    # "the cat sat" vs 6 tokens: LCS 3, P = 1, R = 1/2, F = 2/3
    assert lenient.score(lenient.answer(gen), ref) == pytest.approx(200 / 3)
    # exact match on a multi-line generation: whole text under harness
    assert Metric().score(Metric().answer("Yes\nbecause"), ["yes"]) == 0.0
    lenient_em = Metric(normalization="lenient")
    assert lenient_em.score(lenient_em.answer("Yes\nbecause"), ["yes"]) == 100.0
    with pytest.raises(ConfigError, match="unknown normalization 'squad'.*harness, lenient"):
        Metric(normalization="squad")
    assert describe_normalization("harness").startswith("harness: lowercase")
    assert set(NORMALIZATIONS) == {"harness", "lenient", "lower_strip"}


@pytest.mark.parametrize("norm", ["harness", "lenient"])
def test_answers_that_normalise_to_nothing(norm):
    # COPA's gold "A" is "" under SQuAD normalisation: it must not match every empty-ish answer.
    decoys = ["", ".", "the", "???", "  ", "a the"]
    for gold in ("A", "a", "The", "???", "."):
        for d in decoys:
            if canonical_answer(d, norm) != canonical_answer(gold, norm):
                assert exact_match(d, [gold], norm) == 0.0, (d, gold)
                assert set_match(d, [gold], ",", norm) == 0.0, (d, gold)
                if d != "a the":  # f1 gives "a the" partial credit against "a", by design
                    assert token_f1(d, [gold], norm) == 0.0, (d, gold)
    assert canonical_answer("A", "lenient") == "a"            # articles kept as the fallback
    assert exact_match("A.", ["A"], norm) == 100.0             # punctuation still ignored
    assert exact_match("the", ["A"], norm) == 0.0
    assert exact_match("???", ["???"], norm) == 100.0          # all punctuation: raw form
    assert exact_match("?", ["???"], norm) == 0.0
    assert exact_match("", [""], norm) == 100.0


@pytest.mark.parametrize("norm", ["harness", "lenient"])
def test_long_sequence_label_sets(full_data, norm):
    """Every label set of the Long Sequence benchmark (read with kif's loader): each label
    matches itself, never another label nor an empty-ish answer, under both normalisations."""
    from kif.data import get_benchmark

    bench = get_benchmark("long_sequence", full_data)
    decoys = ["", ".", "the", "???"]
    for name, task in bench.tasks.items():
        labels = label_set(task.load("train"))
        assert len(labels) >= 2, name
        for gold in labels:
            for metric in ("accuracy", "f1", "set_match"):
                m = Metric(metric, normalization=norm)
                assert m.score(gold, [gold]) == 100.0, (name, gold, metric)
                for other in labels:
                    if other != gold and metric != "f1":  # f1 gives partial credit by design
                        assert m.score(other, [gold]) == 0.0, (name, other, gold, metric)
                for d in decoys:
                    assert m.score(d, [gold]) == 0.0, (name, d, gold, metric)


def test_token_f1_hand_computed():
    pred = "the cat sat on the mat"
    # harness keeps articles: 6 vs 6 tokens, common cat/on/mat = 3 -> P = R = 1/2 -> 50
    assert token_f1(pred, ["a cat lay on a mat"]) == pytest.approx(50.0)
    # lenient drops them: 4 vs 4 tokens, common 3 -> P = R = 3/4 -> 75
    assert token_f1(pred, ["a cat lay on a mat"], "lenient") == pytest.approx(75.0)
    # best over references: "the cat sat" -> common the/cat/sat = 3, P = 3/6, R = 1 -> 2/3
    assert token_f1(pred, ["a cat lay on a mat", "The cat sat."]) == pytest.approx(200 / 3)
    # repeated tokens count as often as both sides have them: common a:1, b:1 -> P = R = 2/3
    assert token_f1("a a b", ["a b b"]) == pytest.approx(200 / 3)
    assert token_f1("x", ["y"]) == 0.0
    assert token_f1("", ["y"]) == 0.0 and token_f1("", [""]) == 100.0
    assert Metric("f1").score(pred, ["The cat sat."]) == pytest.approx(200 / 3)


def test_set_match_hand_computed():
    assert set_match("b ;  a;c", ["a;b;c"], ";") == 100.0      # reordered, extra spaces
    assert set_match("  B ,a ", ["a, b"]) == 100.0              # default delimiter ","
    assert set_match("new  york, paris", ["Paris,New York"]) == 100.0
    assert set_match("a,a,b,", ["b,a"]) == 100.0                # repeats, trailing delimiter
    assert set_match("a,b", ["a,b,c"]) == 0.0                    # missing item
    assert set_match("a,b,c,d", ["a,b,c"]) == 0.0                # extra item
    assert set_match("a;b", ["a,b"], ";") == 0.0                 # one item "a,b" vs two
    assert set_match("", [""]) == 100.0 and set_match("", ["a"]) == 0.0   # "" = empty set
    assert set_match("c,d", ["a,b", "d, c"]) == 100.0           # best over references
    assert answer_set(" Area=North ; price=cheap", ";") == {"areanorth", "pricecheap"}
    m = Metric("set_match", delimiter=";")
    assert score_each(m, ["x;y", "y"], [["y ; x"], ["x;y"]]) == [100.0, 0.0]
    with pytest.raises(ConfigError, match="delimiter"):
        Metric("set_match", delimiter="")


def test_joint_score_over_groups():
    scores = [100.0, 100.0, 0.0, 100.0, 100.0, 100.0]
    groups = ["t1", "t2", "t1", "t3", "t2", "t3"]  # a group's examples need not be adjacent
    assert joint_score(scores, groups) == pytest.approx(200 / 3)     # t2, t3 right; t1 not
    assert joint_score(scores) == pytest.approx(500 / 6)             # no groups: the mean
    assert joint_score(scores, [None] * 6) == pytest.approx(500 / 6)
    # an example without a group is a group of its own: t1 wrong, t2 right, 2 singletons right
    assert joint_score(scores, ["t1", "t2", "t1", None, "t2", None]) == pytest.approx(75.0)
    assert joint_score([99.9, 100.0], ["g", "g"]) == 0.0             # every example must be 100
    # a joint set_match task (dialogue state tracking: one slot per example, a turn = a group)
    preds = ["north", "cheap", "2", "centre", "moderate"]
    refs = [["north"], ["cheap"], ["3"], ["centre; north"], ["moderate"]]
    turns = ["d1-t1", "d1-t1", "d1-t2", "d2-t1", "d2-t1"]
    m = Metric("set_match", delimiter=";")
    assert score_each(m, preds, refs) == [100.0, 100.0, 0.0, 0.0, 100.0]
    assert score_task(m, preds, refs, turns) == pytest.approx(100 / 3)
    with pytest.raises(ValueError):
        joint_score([100.0], ["a", "b"])


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
    with pytest.raises(ConfigError, match="unknown metric") as err:
        score_task("bleu", preds, refs)
    assert "accuracy, rougeL, f1, set_match" in str(err.value) and "\n" not in str(err.value)
    assert METRICS == ("accuracy", "rougeL", "f1", "set_match")
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


def test_cl_metrics_registry_joint_runs_and_log_line():
    """One registry: the results record has a field per metric; a joint run's one row gives AP
    (its mean, gaps left out) and no transfer; the log line formats each metric or "-"."""
    from kif.results import Results

    assert [m.name for m in CL_METRICS] == ["AP", "FWT", "BWT"]
    assert all(m.name in Results.model_fields and m.help for m in CL_METRICS)
    assert cl_metrics([[80.0, None, 60.0]], joint=True) == {"AP": 70.0, "FWT": None, "BWT": None}
    assert cl_metrics([], joint=True) == {"AP": None, "FWT": None, "BWT": None}
    assert cl_line({"AP": 185 / 3, "FWT": None, "BWT": -12.5}) == "AP=61.67 FWT=- BWT=-12.50"
    res = Results(method="seqlora", model="m", tasks=["a", "b", "c"], matrix=A)
    res.update_metrics()
    assert cl_line(res) == "AP=61.67 FWT=20.00 BWT=-12.50" and cl_line({"AP": True}) == "AP=- FWT=- BWT=-"


def test_lower_strip_only_lowercases_and_trims():
    assert normalize_answer("  London, UK  ", "lower_strip") == "london, uk"
    assert normalize_answer("The  Cat!", "lower_strip") == "the  cat!"  # inner spaces, articles, "!" kept
    assert exact_match("London, UK\n", ["london, uk"], "lower_strip") == 100.0
    assert exact_match("london uk", ["London, UK"], "lower_strip") == 0.0
    assert answer_text(" a\nb ", "lower_strip") == "a\nb"  # the whole generation, as harness
    assert canonical_answer("   ", "lower_strip") == ""
