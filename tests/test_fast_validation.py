"""A misspelt ``method_args`` key fails before any method module (and so torch, 2+ s to
import) is loaded: ``kif.methods.registry.static_option_keys`` reads the keys from the
source with ``ast`` (issue 14, "fails in under 2 s")."""
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import kif.methods
from kif.config import load_config
from kif.errors import ConfigError
from kif.methods.registry import all_methods, option_keys, option_keys_of, static_option_keys

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(all_methods()))
def test_source_reader_matches_every_method(name):
    """Guards the AST reader against drift: for every registered method the keys read from the
    source are exactly the imported Options' fields (and aliases)."""
    assert static_option_keys(name) == option_keys_of(all_methods()[name].Options)


def test_keys_of_methods_sharing_a_file_and_composed_options():
    """kif.py registers kif and kiflora; kif_m.py composes KIF's options with kif/replay's."""
    assert {"temperature", "top_fraction"} <= static_option_keys("kif") == static_option_keys("kiflora")
    assert {"temperature", "memory_fraction", "gen_weight", "replay_mode"} <= static_option_keys("kiflora-m")
    assert static_option_keys("olora") == {"lambda_1", "lambda_2", "orth_norm"}  # IncLoRA.Options base
    assert static_option_keys("seqlora") == frozenset()  # CLMethod's MethodOptions: no keys


def test_unknown_to_the_reader_falls_back_to_importing():
    assert option_keys("no-such-method") is None and option_keys("json:dumps") is None


THROWAWAY = '''
from pydantic import ConfigDict, Field, model_validator
from .base import CLMethod, MethodOptions
from .registry import register


@register
class Aliased(CLMethod):
    name = "aliased-test"

    class Options(MethodOptions):
        factor: float = Field(1.0, alias="scale")


class Lenient(MethodOptions):
    model_config = ConfigDict(extra="allow")


@register
class LenientMethod(CLMethod):
    name = "lenient-test"
    Options = Lenient


@register
class Renaming(CLMethod):
    name = "renaming-test"

    class Options(MethodOptions):
        factor: float = 1.0

        @model_validator(mode="before")
        @classmethod
        def _old_name(cls, v):
            return v
'''


def test_reader_gives_up_where_the_source_cannot_say(tmp_path, monkeypatch):
    """Aliases are keys; extra keys allowed or a before-validator: unknown (None), never a false error."""
    (tmp_path / "throwaway_options.py").write_text(textwrap.dedent(THROWAWAY))
    monkeypatch.setattr(kif.methods, "__path__", [*kif.methods.__path__, str(tmp_path)])
    assert static_option_keys("aliased-test") == {"factor", "scale"}
    assert static_option_keys("lenient-test") is None
    assert static_option_keys("renaming-test") is None


def test_override_typo_names_the_flag():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["method=kif", "method_args.temprature=0.1"])
    assert str(err.value) == ("--set method_args.temprature=0.1: method_args.temprature: unknown key "
                              "(method 'kif')")


WRAPPER = """
import sys
from kif.cli import main
rc = main(sys.argv[1:])
print("torch imported:", "torch" in sys.modules)
sys.exit(rc)
"""


def test_cli_typo_fails_without_importing_torch(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: kiflora-m\nmodel: /nonexistent/model\nmethod_args: {memory_fracton: 0.1}\n")
    (tmp_path / "wrapper.py").write_text(WRAPPER)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, str(tmp_path / "wrapper.py"), "run", str(cfg), "-o",
                        str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip() == (f"kif: error: {cfg}: method_args.memory_fracton: unknown key "
                                "(method 'kiflora-m')")
    assert p.stdout.strip() == "torch imported: False"
    print(f"misspelt method_args: exit 2 after {wall:.2f} s, torch never imported")
