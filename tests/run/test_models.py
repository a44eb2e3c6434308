"""Model loading, EOS handling, and that a trained model stops on its EOS."""
import pytest
import torch

from kif.data import Example
from kif.encoding import Encoder
from kif.evaluation import _until_eos, generate
from kif.models import load_model
from kif.models.smollm2 import END_OF_TURN, fix_eos
from kif.models.tiny import byte_tokenizer


def test_fix_eos_uses_end_of_turn_not_im_start():
    tok = byte_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", END_OF_TURN]})
    tok.eos_token = "<|im_start|>"  # what a faulty GGUF reader reports
    fix_eos(tok)
    assert tok.eos_token == END_OF_TURN
    assert tok.eos_token_id == tok.convert_tokens_to_ids(END_OF_TURN)


def test_until_eos_cuts_at_first_eos_of_any_kind():
    assert _until_eos([5, 6, 2, 7, 2], [2]) == [5, 6]
    assert _until_eos([5, 9, 6], [2, 9]) == [5]
    assert _until_eos([5, 6], [2]) == [5, 6]


@pytest.mark.parametrize("name,seq2seq", [("tiny-llama", False), ("tiny-t5", True)])
def test_builtin_tiny_models_load(name, seq2seq):
    lm = load_model(name)
    assert lm.is_seq2seq is seq2seq
    assert lm.eos_token_ids == [2] and lm.tokenizer.pad_token_id == 0
    assert not lm.use_chat_template


def _trained_on(name, ex, steps):
    """A tiny model overfitted on one example: (model, encoder, training batch)."""
    torch.manual_seed(0)
    lm = load_model(name)
    enc = Encoder(lm.tokenizer, lm.is_seq2seq, False, 2)
    batch = {k: torch.tensor([v]) for k, v in enc.train_features(ex).items()}
    opt = torch.optim.Adam(lm.model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = lm.model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return lm.model, enc, batch


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5"])
def test_trained_model_stops_on_eos(name):
    """Overfit one example: generation must return exactly the target, cut at EOS."""
    ex = Example("a", "Say hi. Answer:", ("hi",))
    model, enc, _ = _trained_on(name, ex, 150)
    out = generate(model, enc, [enc.prompt_ids(ex.prompt)], [2], max_new_tokens=12)
    assert out[0].strip() == "hi"


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5"])
def test_rank_labels_picks_the_trained_label_and_matches_loss(name):
    """Ranking = argmax of the total target log-probability, which is -loss * n_tokens."""
    from kif.evaluation import label_scores, rank_labels

    ex = Example("a", "Pick. Answer:", ("Good",))
    model, enc, batch = _trained_on(name, ex, 60)
    prompt = enc.prompt_ids(ex.prompt)
    assert rank_labels(model, enc, [prompt, prompt], ["Bad", "Good"], batch_size=3) == ["Good", "Good"]
    n_target = sum(1 for t in batch["labels"][0].tolist() if t != -100)
    with torch.no_grad():
        mean_nll = model(**batch).loss.item()
    got = label_scores(model, enc, [prompt], ["Bad", "Good"])[0, 1].item()
    assert got == pytest.approx(-mean_nll * n_target, rel=1e-4)


def test_evaluation_is_shared_out_across_processes(monkeypatch):
    """Two simulated ranks each do a disjoint round-robin share of the batches; their union
    is exactly the one-process result (predictions and label scores)."""
    from kif import dist
    from kif.evaluation import label_scores

    torch.manual_seed(0)
    lm = load_model("tiny-llama")
    enc = Encoder(lm.tokenizer, False, False, 2)
    prompts = [enc.prompt_ids(f"question {i} {'x' * (i % 5)}. Answer:") for i in range(11)]
    labels = ["yes", "no", "maybe"]
    full_texts = generate(lm.model, enc, prompts, [2], batch_size=2, max_new_tokens=3)
    full_scores = label_scores(lm.model, enc, prompts, labels, batch_size=4)
    parts = []
    monkeypatch.setattr(dist, "merge_from_all", lambda part: parts.append(part) or _complete(part))
    for rank in (0, 1):
        monkeypatch.setattr(dist, "rank_world", lambda rank=rank: (rank, 2))
        generate(lm.model, enc, prompts, [2], batch_size=2, max_new_tokens=3)
        label_scores(lm.model, enc, prompts, labels, batch_size=4)
    gen0, ls0, gen1, ls1 = parts
    assert not set(gen0) & set(gen1) and len(gen0) == 6 and len(gen1) == 5  # 6 batches of <= 2
    assert {**gen0, **gen1} == dict(enumerate(full_texts))
    assert not set(ls0) & set(ls1) and len(ls0) + len(ls1) == 33
    for (i, j), s in {**ls0, **ls1}.items():
        assert s == full_scores[i, j].item()


class _complete(dict):
    """A stand-in for the other ranks' results: any missing key reads as a placeholder."""

    def __missing__(self, key):
        return ""


def test_shared_prefix_length_leaves_every_prompt_a_token():
    from kif.evaluation import shared_prefix_length

    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2  # the shorter keeps its last token
    assert shared_prefix_length([[1, 2, 3]]) == 2
    assert shared_prefix_length([[7], [7]]) == 0
    assert shared_prefix_length([[1, 2], [3, 2]]) == 0
    assert shared_prefix_length([]) == 0


def test_prefix_cache_gives_the_same_predictions(monkeypatch):
    """The shared prefix encoded once (padding between prefix and suffix) must not change a
    single greedy token. Weights x4 make a random tiny model's outputs prompt-dependent."""
    import kif.evaluation as ev

    torch.manual_seed(0)
    lm = load_model("tiny-llama")
    with torch.no_grad():
        for p in lm.model.parameters():
            p.mul_(4)
    enc = Encoder(lm.tokenizer, False, False, 2)
    prompts = [enc.prompt_ids(f"Shared instruction: classify this. Input: {'word ' * (i % 7)}item {i}. Answer:")
               for i in range(13)]
    plain = generate(lm.model, enc, prompts, [2], batch_size=4, max_new_tokens=6, prefix_cache=False)
    assert len(set(plain)) >= 10  # prompt-dependent outputs
    encoded = []
    real = ev._prefix_cache
    monkeypatch.setattr(ev, "_prefix_cache", lambda m, prefix, d: encoded.append(len(prefix)) or real(m, prefix, d))
    assert generate(lm.model, enc, prompts, [2], batch_size=4, max_new_tokens=6) == plain
    assert encoded == [ev.shared_prefix_length(prompts)] and encoded[0] >= 40  # encoded once, ~all shared text


def test_prefix_cache_skipped_for_seq2seq(monkeypatch):
    import kif.evaluation as ev

    lm = load_model("tiny-t5")
    enc = Encoder(lm.tokenizer, True, False, 2)
    monkeypatch.setattr(ev, "_prefix_cache", lambda *a: pytest.fail("seq2seq has no decoder prefix to share"))
    prompts = [enc.prompt_ids(f"Shared instruction here, long enough. Input {i}") for i in range(3)]
    assert len(generate(lm.model, enc, prompts, [2], max_new_tokens=2)) == 3


@pytest.mark.parametrize("precision", ["bf16", "fp32", "auto"])
def test_eval_autocast_follows_precision(precision):
    """eval.precision: bf16 autocast where asked (auto = bf16 only on a GPU that has it)."""
    from kif.torchutil import eval_autocast, use_bf16

    expect = {"bf16": True, "fp32": False, "auto": use_bf16("auto")}[precision]

    ex = Example("a", "Say hi. Answer:", ("hi",))
    model, enc, _ = _trained_on("tiny-llama", ex, 150)
    seen = []
    model.register_forward_pre_hook(lambda *a: seen.append(torch.is_autocast_enabled("cpu")))
    with eval_autocast(precision, model):
        out = generate(model, enc, [enc.prompt_ids(ex.prompt)], [2], max_new_tokens=12)
    assert seen and set(seen) == {expect}
    assert out[0].strip() == "hi"  # the overfitted answer survives bf16 matmuls
