import gzip
import json

import pytest

from kif.data import (
    SUPERNI_TEMPLATE, Example, get_benchmark, label_set, list_benchmarks, load_task_file,
    read_json, resolve_data_dir, resolve_sequence, sample,
)
from kif.errors import ConfigError, DataError

TASK748 = "superni/task748_glucose_reverse_cause_event_detection/test.json.gz"


# ---- loading the real files ----------------------------------------------------------

def test_flat_layout(data_dir):
    ex = load_task_file(data_dir / "long_sequence/cb/test.json.gz")
    assert len(ex) == 56
    assert ex[0].id == "CB_0"
    assert ex[0].prompt.endswith("Answer:")
    assert ex[0].references == ("contradiction",)
    assert ex == load_task_file(data_dir / "long_sequence/cb/test.json.gz", layout="flat")


def test_superni_layout_list_output(data_dir):
    ex = load_task_file(data_dir / TASK748)
    raw = json.loads(gzip.decompress((data_dir / TASK748).read_bytes()))
    inst = raw["Instances"][2]
    assert isinstance(inst["output"], list) and len(inst["output"]) == 2
    assert ex[2].references == tuple(inst["output"])
    assert ex[2].id == inst["id"]
    assert ex[2].prompt == SUPERNI_TEMPLATE.format(
        definition=" ".join(raw["Definition"]), input=inst["input"])
    assert ex[2].prompt.startswith("Definition: In this task")
    assert ex[2].prompt.endswith("got well.\nOutput:")


def test_plain_and_gzip_load_identically(data_dir, tmp_path):
    src = data_dir / "long_sequence/cb/test.json.gz"
    text = gzip.decompress(src.read_bytes())
    (tmp_path / "plain.json").write_bytes(text)
    (tmp_path / "zipped.json.gz").write_bytes(gzip.compress(text))
    (tmp_path / "disguised.json").write_bytes(gzip.compress(text))  # gzip under a .json name
    want = load_task_file(src)
    for name in ("plain.json", "zipped.json.gz", "disguised.json"):
        assert load_task_file(tmp_path / name) == want


def test_default_ids(tmp_path):
    f = tmp_path / "train.json"
    items = [{"input": "x", "output": "y"}, {"id": 7, "input": "a", "output": "b"}]
    f.write_text(json.dumps(items))
    assert [e.id for e in load_task_file(f)] == ["train-0", "7"]


# ---- bad input ----------------------------------------------------------------------

def _write(tmp_path, content, name="bad.json"):
    f = tmp_path / name
    f.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return f


BAD = {
    "truncated_gzip": gzip.compress(b'[{"input": "x", "output": "y"}]')[:-8],
    "non_utf8": b'[{"input": "\xff\xfe", "output": "y"}]',
    "invalid_json": b'[{"input": "x", "output": }]',
    "not_object": ["just a string"],
    "missing_input": [{"output": "y"}],
    "missing_output": [{"input": "x"}],
    "output_number": [{"input": "x", "output": 3}],
    "input_number": [{"input": 3, "output": "y"}],
    "empty_list": [],
    "empty_output_list": [{"input": "x", "output": []}],
    "output_list_number": [{"input": "x", "output": ["a", 2]}],
    "superni_no_instances": {"Definition": ["d"]},
    "superni_empty": {"Definition": ["d"], "Instances": []},
    "superni_bad_definition": {"Definition": [1], "Instances": [{"input": "x", "output": "y"}]},
    "json_scalar": 42,
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_names_file(tmp_path, case):
    f = _write(tmp_path, BAD[case])
    with pytest.raises(DataError) as err:
        load_task_file(f)
    msg = str(err.value)
    assert msg.startswith(str(f)) and "\n" not in msg


def test_bad_input_names_item_and_key(tmp_path):
    f = _write(tmp_path, [{"input": "x", "output": "y"}] * 3 + [{"input": "x"}])
    with pytest.raises(DataError, match=r"item 3 lacks 'output'"):
        load_task_file(f)
    f = _write(tmp_path, {"Definition": ["d"], "Instances": [{"input": "x", "output": []}]})
    with pytest.raises(DataError, match=r"Instances\[0\] 'output' is an empty list"):
        load_task_file(f)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found") as err:
        read_json(tmp_path / "nope.json.gz")
    assert str(tmp_path / "nope.json.gz") in str(err.value)


def test_layout_mismatch(tmp_path):
    f = _write(tmp_path, [{"input": "x", "output": "y"}])
    with pytest.raises(DataError, match="superni layout needs a JSON object"):
        load_task_file(f, layout="superni")


# ---- sampling ----------------------------------------------------------------------

def _examples(n):
    return [Example(f"e{i}", f"p{i}", (f"r{i}",)) for i in range(n)]


def test_sample_deterministic_and_ordered():
    ex = _examples(100)
    a, b, c = sample(ex, 10, 1), sample(ex, 10, 1), sample(ex, 10, 2)
    assert a == b and len(a) == 10
    assert [e.id for e in a] != [e.id for e in c]
    idx = [ex.index(e) for e in a]
    assert idx == sorted(idx)
    assert sample(ex, None, 0) == ex and sample(ex, 500, 0) == ex


# ---- benchmarks --------------------------------------------------------------------

def test_builtin_orders_match_readme(data_dir):
    ls = get_benchmark("long_sequence", data_dir)
    assert ls.orders["1"] == ("mnli cb wic copa qqp boolq rte imdb yelp amazon sst2 "
                              "dbpedia agnews multirc yahoo").split()
    assert ls.orders["std1"] == ["dbpedia", "amazon", "yahoo", "agnews"]
    assert set(ls.orders) == {"1", "2", "3", "std1", "std2", "std3"}
    sn = get_benchmark("superni", data_dir)
    assert sn.orders["1"] == ("task1572 task363 task1290 task181 task002 task1510 task639 "
                              "task1729 task073 task1590 task748 task511 task591 task1687 "
                              "task875").split()
    for b in (ls, sn):
        for seq in b.orders.values():
            assert set(seq) <= set(b.tasks)
            if len(seq) == 15:
                assert sorted(seq) == sorted(b.orders["1"])
    assert {b.name for b in list_benchmarks(data_dir)} == {"long_sequence", "superni"}


def test_builtin_metrics_and_labels(data_dir):
    ls = get_benchmark("long_sequence", data_dir)
    assert ls.tasks["cb"].metric == "accuracy"
    assert label_set(ls.tasks["cb"].load("test")) == ["contradiction", "entailment", "neutral"]
    assert get_benchmark("superni", data_dir).tasks["task363"].metric == "rougeL"


def test_superni_short_and_full_names(data_dir):
    sn = get_benchmark("superni", data_dir)
    full = resolve_sequence(sn, None, ["task1572_samsum_summary", "task363"])
    assert full == ["task1572", "task363"]
    assert len(sn.tasks["task1572"].load("test")) == 20
    with pytest.raises(ConfigError, match="listed twice"):
        resolve_sequence(sn, None, ["task1572", "task1572_samsum_summary"])


def test_resolve_sequence(data_dir):
    ls = get_benchmark("long_sequence", data_dir)
    assert resolve_sequence(ls, "std2", None) == ["dbpedia", "amazon", "agnews", "yahoo"]
    assert resolve_sequence(ls, "1", ["cb", "rte"]) == ["cb", "rte"]  # explicit list wins
    with pytest.raises(ConfigError, match="unknown task 'nope'.*mnli"):
        resolve_sequence(ls, None, ["cb", "nope"])
    with pytest.raises(ConfigError, match="unknown order"):
        resolve_sequence(ls, "9", None)
    with pytest.raises(ConfigError, match="give an order"):
        resolve_sequence(ls, None, None)


def test_resolve_data_dir(tmp_path, monkeypatch):
    assert resolve_data_dir(tmp_path) == tmp_path
    monkeypatch.setenv("KIF_DATA", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    with pytest.raises(DataError, match="KIF_DATA"):
        resolve_data_dir(tmp_path / "missing")


def test_unknown_benchmark(tmp_path):
    with pytest.raises(ConfigError, match="unknown benchmark"):
        get_benchmark("glue", tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        get_benchmark(str(tmp_path / "b.yaml"), tmp_path)


# ---- custom YAML benchmarks -----------------------------------------------------------

def _custom(tmp_path):
    (tmp_path / "t1").mkdir()
    (tmp_path / "t1" / "test.json").write_text(json.dumps([{"input": "q", "output": "a"}]))
    (tmp_path / "t2.json").write_text(json.dumps(
        {"Definition": ["Say hi."], "Instances": [{"input": "x", "output": ["hi", "hello"]}]}))


VALID_YAML = """\
name: mine
tasks:
  t1: {path: t1, metric: accuracy}
  t2: {path: t2.json, metric: rougeL, layout: superni}
orders:
  a: [t1, t2]
"""


def test_custom_yaml(tmp_path):
    _custom(tmp_path)
    (tmp_path / "b.yaml").write_text(VALID_YAML)
    b = get_benchmark(str(tmp_path / "b.yaml"), tmp_path)
    assert b.name == "mine" and b.orders == {"a": ["t1", "t2"]}
    assert b.tasks["t1"].load("test")[0].references == ("a",)
    assert b.tasks["t2"].load("train")[0].references == ("hi", "hello")  # file serves all splits
    with pytest.raises(DataError, match="no train.json.gz or train.json"):
        b.tasks["t1"].load("train")


BAD_YAML = {
    "unknown top key": (VALID_YAML + "extra: 1\n", "unknown key.*extra"),
    "unknown task key": (VALID_YAML.replace("metric: accuracy}", "metric: accuracy, lr: 1}"),
                         r"tasks\.t1.*lr"),
    "missing metric": (VALID_YAML.replace(", metric: accuracy", ""),
                       r"missing key\(s\) in tasks\.t1: metric"),
    "missing name": (VALID_YAML.replace("name: mine\n", ""), r"missing key\(s\): name"),
    "bad metric": (VALID_YAML.replace("metric: accuracy", "metric: bleu"), r"tasks\.t1\.metric"),
    "bad layout": (VALID_YAML.replace("layout: superni", "layout: csv"), r"tasks\.t2\.layout"),
    "missing path": (VALID_YAML.replace("path: t1", "path: t9"), r"tasks\.t1\.path"),
    "unknown task in order": (VALID_YAML.replace("[t1, t2]", "[t1, t3]"), r"orders\.a.*t3"),
    "duplicate task": (VALID_YAML.replace("orders:", "  t1: {path: t1, metric: rougeL}\norders:"),
                       "duplicate key 't1'"),
    "task twice in order": (VALID_YAML.replace("[t1, t2]", "[t1, t1]"), "twice"),
    "invalid yaml": ("name: [unclosed\n", "invalid YAML"),
    "not a mapping": ("- a\n- b\n", "top level must be a mapping"),
}


@pytest.mark.parametrize("case", sorted(BAD_YAML))
def test_custom_yaml_invalid(tmp_path, case):
    _custom(tmp_path)
    text, pattern = BAD_YAML[case]
    (tmp_path / "b.yaml").write_text(text)
    with pytest.raises(ConfigError, match=pattern) as err:
        get_benchmark(str(tmp_path / "b.yaml"), tmp_path)
    msg = str(err.value)
    assert msg.startswith(str(tmp_path / "b.yaml")) and "\n" not in msg
