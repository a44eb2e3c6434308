"""A misspelt ``method_args`` key (top level or ``per_task``) and an unknown method name fail
before any method module (and so torch, 2+ s to import) is loaded: config validation reads
the built-in methods' options from ``kif.methods.options`` and their names from
``kif.methods.registry.BUILTIN``, both torch-free (issue 14, "fails in under 2 s"; issue 32:
no source reading)."""
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import kif.methods
from kif.configure import load_config, validate_config
from kif.errors import ConfigError
from kif.methods import options
from kif.methods.registry import BUILTIN, all_methods, get_method, method_spec

from helpers import REPO

METHODS_DIR = Path(kif.methods.__file__).parent


def test_builtin_table_is_every_method_of_the_package():
    """BUILTIN is what validation knows without importing: every method module of kif/methods
    registers exactly the listed names, with the listed options class and joint flag."""
    ours = {n: c for n, c in all_methods().items() if Path(sys.modules[c.__module__].__file__).parent == METHODS_DIR}
    assert sorted(ours) == sorted(BUILTIN)
    for name, cls in ours.items():
        spec = BUILTIN[name]
        assert (cls.Options, cls.joint, cls.__module__) == (spec.options, spec.joint, f"kif.methods.{spec.module}")


def test_keys_of_methods_sharing_a_file_and_composed_options():
    """kif.py registers kif and kiflora; kif_m.py composes KIF's options with the replay's."""
    keys = {name: set(spec.options.model_fields) for name, spec in BUILTIN.items()}
    assert {"temperature", "top_fraction"} <= keys["kif"] == keys["kiflora"]
    assert {"temperature", "memory_fraction", "gen_weight", "replay_mode"} <= keys["kiflora-m"]
    assert keys["olora"] == {"lambda_1", "lambda_2", "orth_norm"} and keys["seqlora"] == set()


def test_names_not_listed():
    with pytest.raises(ConfigError, match="unknown method 'no-such-method'"):
        method_spec("no-such-method")
    with pytest.raises(ConfigError, match="'json:dumps' is not a CLMethod subclass"):
        method_spec("json:dumps")


def test_shared_options_are_composed_not_inherited():
    """The memory's and the generative replay's keys are top-level keys of the methods that use
    them (as users write them), and no options class reaches BaseModel by two paths."""
    assert set(options.MemoryOptions.model_fields) == set(options.ReplayOptions.model_fields)
    for spec in BUILTIN.values():
        assert all(len(c.__bases__) == 1 for c in spec.options.__mro__[:-1]), spec.name  # single inheritance
    assert options.KIFLoRAMOptions().units == "lora_rank1" and options.KIFMOptions().units == "matrix"
    with pytest.raises(TypeError, match="already a key"):
        options.compose(options.SAPTOptions, options.MemoryOptions)


def test_replay_schedule_checks_come_with_the_composed_fields():
    with pytest.raises(ConfigError, match="method_args.replay_lr_scheduler: 'cosin' is not one of"):
        validate_config({"method": "kif-m", "method_args": {"replay_lr_scheduler": "cosin"}})
    with pytest.raises(ConfigError, match="replay_lr_scheduler constant has no warm-up"):
        validate_config({"method": "kiflora-m", "method_args": {"replay_warmup_steps": 5}})
    cfg = validate_config({"method": "kif-m", "method_args": {"replay_lr_scheduler": "linear",
                                                              "replay_warmup_steps": 5}})
    assert cfg.method_args == {"replay_lr_scheduler": "linear", "replay_warmup_steps": 5}


def test_a_typo_is_reported_before_a_bad_value():
    with pytest.raises(ConfigError) as err:
        validate_config({"method": "kif", "method_args": {"beta": 7, "temprature": 0.1}})
    assert str(err.value) == "config: method_args.temprature: unknown key (method 'kif')"


def test_override_typo_names_the_flag():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["method=kif", "method_args.temprature=0.1"])
    assert str(err.value) == ("--set method_args.temprature=0.1: method_args.temprature: unknown key "
                              "(method 'kif')")


THROWAWAY = '''
from kif.methods.base import CLMethod
from kif.methods.options import MethodOptions
from kif.methods.registry import register


@register
class Dropped(CLMethod):
    name = "dropped-test"

    class Options(MethodOptions):
        factor: float = 1.0
'''


def test_method_dropped_into_the_package_is_imported_to_validate(tmp_path, monkeypatch):
    """A module not in BUILTIN is found by importing it (no torch-free path for it)."""
    (tmp_path / "dropped_method.py").write_text(textwrap.dedent(THROWAWAY))
    monkeypatch.setattr(kif.methods, "__path__", [*kif.methods.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "kif.methods.dropped_method", raising=False)
    assert method_spec("dropped-test").options is get_method("dropped-test").Options
    with pytest.raises(ConfigError, match="method_args.factr: unknown key"):
        validate_config({"method": "dropped-test", "method_args": {"factr": 1}})


WRAPPER = """
import sys
from kif.cli import main
rc = main(sys.argv[1:])
print("torch imported:", "torch" in sys.modules)
sys.exit(rc)
"""

CASES = {
    "method_args": ("method: kiflora-m\nmethod_args: {memory_fracton: 0.1}\n",
                    "method_args.memory_fracton: unknown key (method 'kiflora-m')"),
    "per_task.method_args": ("method: olora\ntasks: [cb, copa]\nper_task: {method_args: {lambda_3: [1, 2]}}\n",
                             "per_task.method_args.lambda_3[0]: unknown key"),
    # a key the method reads once: a per-task value would be ignored
    "per_task once": ("method: kiflora\ntasks: [cb, copa]\nper_task: {method_args: {ortho_weight: [0.1, 0.5]}}\n",
                      "per_task.method_args.ortho_weight: method 'kiflora' reads ortho_weight once for the "
                      "whole run; not a per-task value (per-task keys: none)"),
    "unknown method": ("method: kiflra\n", "method: unknown method 'kiflra' (known: ema, ewc, "),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_fails_without_importing_torch(tmp_path, case):
    """Exit 2, one line, nothing written, torch never imported (no model, no data either:
    both point nowhere)."""
    text, message = CASES[case]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: /nonexistent/model\nbenchmark: /nonexistent/bench.yaml\n{text}")
    (tmp_path / "wrapper.py").write_text(WRAPPER)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, str(tmp_path / "wrapper.py"), "run", str(cfg), "-o",
                        str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert p.stderr.strip().startswith(f"kif: error: {'' if case == 'unknown method' else f'{cfg}: '}{message}")
    assert p.stdout.strip() == "torch imported: False"
    assert not (tmp_path / "out").exists()
    print(f"{case}: exit 2 after {wall:.2f} s, torch never imported")
