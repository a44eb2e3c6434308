import gzip
import json

import pytest

from kif.data import (
    SUPERNI_TEMPLATE, Example, get_benchmark, label_set, list_benchmarks, load_task_file,
    read_json, resolve_data_dir, resolve_sequence, sample,
)
from kif.data.benchmarks import check_labels, describe_benchmark
from kif.data.loaders import GroupBy, read_jsonl
from kif.errors import ConfigError, DataError

TASK748 = "superni/task748_glucose_reverse_cause_event_detection/test.json.gz"


# ---- loading the real files ----------------------------------------------------------

def test_flat_layout(full_data):
    ex = load_task_file(full_data / "long_sequence/cb/test.json.gz")
    assert len(ex) == 56
    assert ex[0].id == "CB_0"
    assert ex[0].prompt.endswith("Answer:")
    assert ex[0].references == ("contradiction",)
    assert ex == load_task_file(full_data / "long_sequence/cb/test.json.gz", layout="flat")


def test_superni_layout_list_output(full_data):
    ex = load_task_file(full_data / TASK748)
    raw = json.loads(gzip.decompress((full_data / TASK748).read_bytes()))
    inst = raw["Instances"][2]
    assert isinstance(inst["output"], list) and len(inst["output"]) == 2
    assert ex[2].references == tuple(inst["output"])
    assert ex[2].id == inst["id"]
    assert ex[2].prompt == SUPERNI_TEMPLATE.format(
        definition=" ".join(raw["Definition"]), input=inst["input"])
    assert ex[2].prompt.startswith("Definition: In this task")
    assert ex[2].prompt.endswith("got well.\nOutput:")


def test_plain_and_gzip_load_identically(full_data, tmp_path):
    src = full_data / "long_sequence/cb/test.json.gz"
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
    # pinned: ungrouped sampling draws exactly what it always drew
    assert [e.id for e in a] == ["e8", "e15", "e17", "e32", "e57", "e60", "e63", "e72", "e83", "e97"]
    assert [e.id for e in sample(ex, 7, 42)] == ["e3", "e14", "e28", "e31", "e35", "e81", "e94"]


def _grouped(sizes: str):
    """Examples x0.. whose groups are given by letters, e.g. "aaabbcccd"."""
    return [Example(f"x{i}", "p", ("r",), g) for i, g in enumerate(sizes)]


def test_sample_keeps_whole_groups():
    ex = _grouped("aaabbccccd")  # a:3 b:2 c:4 d:1
    for seed in range(20):
        for n in range(1, 10):
            got = sample(ex, n, seed)
            assert got == sample(ex, n, seed)                     # deterministic
            kept = {e.group for e in got}
            assert got == [e for e in ex if e.group in kept]      # whole groups, original order
            assert len(kept) == max(1, round(n * 4 / 10 + 1e-9))  # the cap is a share of the groups
    # a cap below the smallest group keeps one group rather than none
    assert len({e.group for e in sample(_grouped("aaabbb"), 2, 0)}) == 1
    assert sample(ex, 10, 0) == ex and sample(ex, None, 0) == ex
    # groups split across the file (not adjacent) are still kept whole
    mixed = _grouped("abab" + "cc")
    for seed in range(10):
        kept = {e.group for e in sample(mixed, 3, seed)}
        assert sample(mixed, 3, seed) == [e for e in mixed if e.group in kept]


# ---- JSON Lines, prompt templates, groups --------------------------------------------

def test_jsonl_loads_like_json(tmp_path):
    items = [{"id": "a", "input": "x\u2028y", "output": "1"}, {"id": "b", "input": "z", "output": ["2", "3"]}]
    (tmp_path / "list.json").write_text(json.dumps(items))
    lines = "\n".join(json.dumps(i, ensure_ascii=False) for i in items)
    (tmp_path / "t.jsonl").write_text(lines + "\n\n", encoding="utf-8")   # blank lines skipped
    (tmp_path / "t.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    want = load_task_file(tmp_path / "list.json")
    assert want[0].prompt == "x\u2028y"  # a line separator inside a string is not a new line
    assert load_task_file(tmp_path / "t.jsonl") == want == load_task_file(tmp_path / "t.jsonl.gz")
    assert read_jsonl(tmp_path / "t.jsonl") == items
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "test.jsonl").write_text(lines)
    (tmp_path / "d" / "train.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    (tmp_path / "b.yaml").write_text("name: j\ntasks:\n  t: {path: d, metric: accuracy}\n")
    b = get_benchmark(tmp_path / "b.yaml")
    assert b.tasks["t"].split_file("train").name == "train.jsonl.gz"
    assert b.tasks["t"].load("test") == want
    assert [e.id for e in load_task_file(_write(tmp_path, {"input": "q", "output": "a"}, "dev.jsonl"))] == ["dev-0"]
    with pytest.raises(DataError, match=r"list.jsonl: item 0 must be an object, got list"):
        load_task_file(_write(tmp_path, items, "list.jsonl"))  # a JSON list on one line is not JSON Lines
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "x", "output": "y"}\n{"input": \n')
    with pytest.raises(DataError, match=r"bad.jsonl: invalid JSON on line 2"):
        load_task_file(bad)


def test_prompt_template_composes_fields(tmp_path, caplog):
    items = [{"instruction": "Add.", "input": "1+1", "n": 3, "output": "2"}]
    f = _write(tmp_path, items, "t.json")
    ex = load_task_file(f, prompt_template="{instruction}\n{input} (n={n})")
    assert ex[0].prompt == "Add.\n1+1 (n=3)" and ex[0].references == ("2",)
    # a template need not use input at all; then input is not required
    only = _write(tmp_path, [{"question": "q?", "output": "a"}], "q.json")
    assert load_task_file(only, prompt_template="Q: {question}")[0].prompt == "Q: q?"
    with pytest.raises(DataError, match=r"item 0 lacks 'context'"):
        load_task_file(f, prompt_template="{context} {input}")
    with pytest.raises(DataError, match=r"item 0 'x' must be a string or a number, got list"):
        load_task_file(_write(tmp_path, [{"x": [1], "output": "a"}], "l.json"), prompt_template="{x}")
    for bad in ("{0}", "{}", "{a.b}", "{unclosed", "no fields", "{input} -> {output}"):
        with pytest.raises(ConfigError, match="prompt_template"):
            load_task_file(f, prompt_template=bad)
    # superni layout: {definition} is the task's definition
    sn = _write(tmp_path, {"Definition": ["Say hi."], "Instances": [{"input": "x", "lang": "en", "output": "hi"}]},
                "sn.json")
    assert load_task_file(sn, prompt_template="{definition} [{lang}] {input}")[0].prompt == "Say hi. [en] x"
    # without a template, fields nothing uses are named in one warning line, not dropped silently
    caplog.clear()
    with caplog.at_level("WARNING", logger="kif"):
        assert load_task_file(f)[0].prompt == "1+1"
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "\n" not in msgs[0]
    assert msgs[0].startswith(f"{f}: ignored field(s) instruction, n ") and "prompt_template" in msgs[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="kif"):
        load_task_file(f, prompt_template="{instruction}\n{input}")
        load_task_file(_write(tmp_path, [{"id": 1, "input": "x", "output": "y"}], "plain.json"))
    assert [r.getMessage() for r in caplog.records] == [f"{f}: ignored field(s) n (not in the prompt; "
                                                       "a task's prompt_template can compose them)"]


def test_group_by(tmp_path):
    items = [{"id": "d1-t1-area", "turn": "d1-t1", "input": "a", "output": "x"},
             {"id": "d1-t1-price", "turn": "d1-t1", "input": "b", "output": "y"},
             {"id": "d1-t2-area", "turn": 7, "input": "c", "output": "z"}]
    f = _write(tmp_path, items, "t.json")
    assert [e.group for e in load_task_file(f)] == [None, None, None]
    assert [e.group for e in load_task_file(f, group_by=GroupBy(field="turn"))] == ["d1-t1", "d1-t1", "7"]
    assert [e.group for e in load_task_file(f, group_by=GroupBy(id_prefix_sep="-"))] == ["d1-t1", "d1-t1", "d1-t2"]
    with pytest.raises(DataError, match=r"item 0 lacks 'dialogue' \(the task's group_by field\)"):
        load_task_file(f, group_by=GroupBy(field="dialogue"))
    with pytest.raises(DataError, match=r"item 0 id 'd1-t1-area' has no group prefix before '/'"):
        load_task_file(f, group_by=GroupBy(id_prefix_sep="/"))
    with pytest.raises(DataError, match=r"item 0 lacks 'id'"):
        load_task_file(_write(tmp_path, [{"input": "a", "output": "b"}], "n.json"), group_by=GroupBy(id_prefix_sep="-"))
    with pytest.raises(ConfigError, match="exactly one"):
        GroupBy(field="a", id_prefix_sep="-")
    with pytest.raises(ConfigError, match="exactly one"):
        GroupBy()


def test_label_check_only_for_classification_tasks(tmp_path, full_data):
    """Free-form tasks are never refused for test answers unseen in training; a task that
    declares classification: true (and every built-in Long Sequence task) is."""
    (tmp_path / "gen").mkdir()
    (tmp_path / "gen" / "train.json").write_text(json.dumps([{"input": "q1", "output": "Paris"}]))
    (tmp_path / "gen" / "test.json").write_text(json.dumps([{"input": "q2", "output": "Rome"}]))
    (tmp_path / "b.yaml").write_text("name: g\ntasks:\n  free: {path: gen, metric: accuracy}\n"
                                     "  cls: {path: gen, metric: accuracy, classification: true}\n")
    b = get_benchmark(tmp_path / "b.yaml")
    for name in ("free", "cls"):
        t = b.tasks[name]
        train, test = t.load("train"), t.load("test")
        if name == "free":
            assert not t.classification
            check_labels(t, label_set(train), test)  # no error
        else:
            with pytest.raises(DataError, match=r"label\(s\) \['Rome'\] of task 'cls'"):
                check_labels(t, label_set(train), test)
    ls = get_benchmark("long_sequence", full_data)
    assert all(t.classification for t in ls.tasks.values())
    assert not any(t.classification for t in get_benchmark("superni", full_data).tasks.values())


def test_custom_benchmark_needs_no_data_dir(tmp_path, monkeypatch):
    _custom(tmp_path)
    (tmp_path / "b.yaml").write_text(VALID_YAML)
    monkeypatch.setenv("KIF_DATA", str(tmp_path / "nowhere"))  # a built-in would fail here
    monkeypatch.chdir(tmp_path)
    assert get_benchmark(str(tmp_path / "b.yaml")).name == "mine"
    assert get_benchmark(str(tmp_path / "b.yaml"), None).name == "mine"
    with pytest.raises(DataError, match="nowhere"):
        get_benchmark("long_sequence")


# ---- benchmarks --------------------------------------------------------------------

def test_builtin_orders_match_readme(full_data):
    ls = get_benchmark("long_sequence", full_data)
    assert ls.orders["1"] == ("mnli cb wic copa qqp boolq rte imdb yelp amazon sst2 "
                              "dbpedia agnews multirc yahoo").split()
    assert ls.orders["std1"] == ["dbpedia", "amazon", "yahoo", "agnews"]
    assert set(ls.orders) == {"1", "2", "3", "std1", "std2", "std3"}
    sn = get_benchmark("superni", full_data)
    assert sn.orders["1"] == ("task1572 task363 task1290 task181 task002 task1510 task639 "
                              "task1729 task073 task1590 task748 task511 task591 task1687 "
                              "task875").split()
    for b in (ls, sn):
        for seq in b.orders.values():
            assert set(seq) <= set(b.tasks)
            if len(seq) == 15:
                assert sorted(seq) == sorted(b.orders["1"])
    assert {b.name for b in list_benchmarks(full_data)} == {"long_sequence", "superni", "superni_unseen"}


def test_builtin_metrics_and_labels(full_data):
    ls = get_benchmark("long_sequence", full_data)
    assert ls.tasks["cb"].metric == "accuracy"
    assert label_set(ls.tasks["cb"].load("test")) == ["contradiction", "entailment", "neutral"]
    assert get_benchmark("superni", full_data).tasks["task363"].metric == "rougeL"


def test_superni_short_and_full_names(full_data):
    sn = get_benchmark("superni", full_data)
    full = resolve_sequence(sn, None, ["task1572_samsum_summary", "task363"])
    assert full == ["task1572", "task363"]
    assert len(sn.tasks["task1572"].load("test")) == 20
    with pytest.raises(ConfigError, match="listed twice"):
        resolve_sequence(sn, None, ["task1572", "task1572_samsum_summary"])


def test_resolve_sequence(full_data):
    ls = get_benchmark("long_sequence", full_data)
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
    with pytest.raises(DataError, match=r"no train.json, train.jsonl \(or .gz\) for task t1"):
        b.tasks["t1"].load("train")


BAD_YAML = {
    "unknown top key": (VALID_YAML + "extra: 1\n", "unknown key.*extra"),
    "unknown task key": (VALID_YAML.replace("metric: accuracy}", "metric: accuracy, lr: 1}"),
                         r"tasks\.t1.*lr"),
    "missing metric": (VALID_YAML.replace(", metric: accuracy", ""),
                       r"missing key\(s\) in tasks\.t1: metric"),
    "missing name": (VALID_YAML.replace("name: mine\n", ""), r"missing key\(s\): name"),
    "bad metric": (VALID_YAML.replace("metric: accuracy", "metric: bleu"),
                   r"tasks\.t1\.metric 'bleu' not one of accuracy, rougeL, f1, set_match$"),
    "bad layout": (VALID_YAML.replace("layout: superni", "layout: csv"), r"tasks\.t2\.layout"),
    "missing path": (VALID_YAML.replace("path: t1", "path: t9"), r"tasks\.t1\.path"),
    "unknown task in order": (VALID_YAML.replace("[t1, t2]", "[t1, t3]"), r"orders\.a.*t3"),
    "duplicate task": (VALID_YAML.replace("orders:", "  t1: {path: t1, metric: rougeL}\norders:"),
                       "duplicate key 't1'"),
    "task twice in order": (VALID_YAML.replace("[t1, t2]", "[t1, t1]"), "twice"),
    "invalid yaml": ("name: [unclosed\n", "invalid YAML"),
    "delimiter without set_match": (VALID_YAML.replace("metric: accuracy}", "metric: accuracy, delimiter: ';'}"),
                                    r"tasks\.t1\.delimiter only applies to metric set_match"),
    "empty delimiter": (VALID_YAML.replace("metric: accuracy}", "metric: set_match, delimiter: ''}"),
                        r"tasks\.t1\.delimiter must be a non-empty string"),
    "group_by both": (VALID_YAML.replace("metric: accuracy}", "metric: accuracy, group_by: {field: a, id_prefix_sep: '-'}}"),
                      r"tasks\.t1\.group_by needs exactly one of field"),
    "group_by unknown key": (VALID_YAML.replace("metric: accuracy}", "metric: accuracy, group_by: {prefix: a}}"),
                             r"unknown key\(s\) in tasks\.t1\.group_by: prefix"),
    "group_by not a mapping": (VALID_YAML.replace("metric: accuracy}", "metric: accuracy, group_by: turn}"),
                               r"tasks\.t1\.group_by must be a mapping"),
    "bad prompt_template": (VALID_YAML.replace("metric: accuracy}", "metric: accuracy, prompt_template: '{0}'}"),
                            r"tasks\.t1\.prompt_template '\{0\}': \{0\} is not a field name"),
    "prompt_template not a string": (VALID_YAML.replace("metric: accuracy}", "metric: accuracy, prompt_template: 3}"),
                                     r"tasks\.t1\.prompt_template must be a string"),
    "classification not bool": (VALID_YAML.replace("metric: accuracy}", "metric: accuracy, classification: yes please}"),
                                r"tasks\.t1\.classification must be true or false"),
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


def test_custom_yaml_new_keys_and_listing(tmp_path):
    (tmp_path / "dst").mkdir()
    turns = [{"id": f"d1-t{t}-{s}", "turn": f"d1-t{t}", "input": f"slot {s}?", "output": "x; y"}
             for t in (1, 2) for s in ("area", "price")]
    for split in ("train", "test"):
        (tmp_path / "dst" / f"{split}.jsonl").write_text("\n".join(json.dumps(i) for i in turns))
    (tmp_path / "b.yaml").write_text("""\
name: dst
tasks:
  dst: {path: dst, metric: set_match, delimiter: ";", group_by: {field: turn}}
  byid: {path: dst, metric: f1, group_by: {id_prefix_sep: "-"}, prompt_template: "Q: {input}"}
""")
    b = get_benchmark(tmp_path / "b.yaml")
    t = b.tasks["dst"]
    assert (t.metric, t.delimiter, t.group_by, t.classification) == ("set_match", ";", GroupBy(field="turn"), False)
    assert t.scoring("lenient").normalization == "lenient" and t.scoring().delimiter == ";"
    assert t.metric_label == "set_match ';', joint by field turn"
    assert b.tasks["byid"].metric_label == "f1, joint by id up to its last '-'"
    assert [e.group for e in b.tasks["byid"].load("test")] == ["d1-t1", "d1-t1", "d1-t2", "d1-t2"]
    assert b.tasks["byid"].load("test")[0].prompt == "Q: slot area?"
    lines = describe_benchmark(b)
    assert lines[0] == "dst"
    assert lines[1] == f"  dst: set_match ';', joint by field turn; train 4 (2 groups), test 4 (2 groups); {tmp_path / 'dst'}"
