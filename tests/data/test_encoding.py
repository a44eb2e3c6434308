"""Prompt/target encoding: loss only on target tokens, EOS appended, middle truncation."""
import torch

from kif.data import Example
from kif.encoding import IGNORE, Encoder, TrainCollator, truncate_middle
from kif.models.tiny import byte_tokenizer


def _enc(seq2seq=False, **kw):
    tok = byte_tokenizer()
    return Encoder(tok, seq2seq, False, tok.eos_token_id, **kw)


def test_truncate_middle_keeps_head_and_tail():
    assert truncate_middle(list(range(10)), 4) == [0, 1, 8, 9]
    assert truncate_middle(list(range(10)), 5) == [0, 1, 7, 8, 9]
    assert truncate_middle([1, 2], 5) == [1, 2]


def test_causal_labels_mask_the_prompt_and_end_with_eos():
    enc = _enc()
    f = enc.train_features(Example("x", "Q: 1+1? Answer:", ("two",)))
    prompt = list("Q: 1+1? Answer:".encode())
    target = list(" two".encode())
    # byte ids are offset by the 4 special tokens; the prompt is masked, the target + EOS is not
    assert len(f["input_ids"]) == len(prompt) + len(target) + 1
    assert f["labels"][: len(prompt)] == [IGNORE] * len(prompt)
    assert f["labels"][len(prompt):] == f["input_ids"][len(prompt):]
    assert f["labels"][-1] == enc.eos_token_id == 2
    assert enc.tokenizer.decode(f["input_ids"][len(prompt):-1]) == " two"


def test_seq2seq_labels_are_the_target_only():
    enc = _enc(seq2seq=True)
    f = enc.train_features(Example("x", "question", ("yes",)))
    assert enc.tokenizer.decode(f["input_ids"]) == "question"
    assert f["labels"][-1] == 2 and enc.tokenizer.decode(f["labels"][:-1]) == "yes"


def test_target_truncated_but_keeps_eos():
    enc = _enc(max_target_length=3)
    f = enc.train_features(Example("x", "p", ("abcdef",)))
    assert [t for t in f["labels"] if t != IGNORE] == f["labels"][-3:]
    assert f["labels"][-1] == 2 and len([t for t in f["labels"] if t != IGNORE]) == 3


def test_prompt_truncated_to_max_input_length():
    enc = _enc(max_input_length=10)
    assert len(enc.prompt_ids("x" * 100)) == 10


def test_collator_pads_right_and_ignores_padding_in_labels():
    batch = TrainCollator(pad_token_id=0)([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
                                          {"input_ids": [5], "labels": [5]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [5, -100, -100]]
    assert batch["labels"].dtype == torch.long


def test_target_logits_only_gives_the_same_loss_and_gradients():
    """Left padding + logits_to_keep must not change the loss (only skip prompt logits)."""
    from kif.models import load_model

    lm = load_model("tiny-llama")
    enc = Encoder(lm.tokenizer, False, False, 2)
    feats = [enc.train_features(Example(str(i), p, (t,))) for i, (p, t) in
             enumerate([("short q. Answer:", "yes"), ("a much longer question here. Answer:", "no way"),
                         ("mid q. Answer:", "maybe")])]
    results = []
    for only in (False, True):
        batch = TrainCollator(0, target_logits_only=only)(feats)
        lm.model.zero_grad()
        out = lm.model(**batch)
        out.loss.backward()
        grad = lm.model.model.layers[0].self_attn.q_proj.weight.grad.clone()
        results.append((out.loss.detach(), grad, out.logits.shape[1]))
    (loss_a, grad_a, len_a), (loss_b, grad_b, len_b) = results
    torch.testing.assert_close(loss_a, loss_b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad_a, grad_b, atol=1e-5, rtol=1e-4)
    assert len_b == 1 + len(" no way") + 1 < len_a  # target tokens + EOS + the predicting position


def test_left_padded_collator_positions_and_window():
    batch = TrainCollator(0, target_logits_only=True)([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
                                                       {"input_ids": [5, 9], "labels": [-100, 9]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 5, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 1]]
    assert batch["logits_to_keep"] == 3 and batch["labels"].tolist() == [[-100, 6, 7], [-100, -100, 9]]
