"""Speed switches must not change what is learnt: torch.compile, bf16 autocast, SDPA attention."""
import shutil

import pytest
import torch

from kif.config import TrainConfig
from kif.data import Example
from kif.encoding import Encoder
from kif.training import train_task


def _peft_tiny_llama(attn=None):
    from peft import LoraConfig, TaskType, get_peft_model

    from kif.models import load_model

    torch.manual_seed(0)
    lm = load_model("tiny-llama", attn_implementation=attn)
    # dropout 0: compiled and eager dropout draw different masks, so they would differ by design
    model = get_peft_model(lm.model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, lora_alpha=8,
                                                lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                                                init_lora_weights="gaussian"))
    return model, lm.tokenizer


def _lora(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


def _train(compiled: bool = False, precision: str = "fp32", attn=None, stats=None) -> dict[str, torch.Tensor]:
    model, tokenizer = _peft_tiny_llama(attn)
    enc = Encoder(tokenizer, False, False, 2)
    examples = [Example(str(i), f"question {i} {'x' * (i % 3)}. Answer:", ("yes" if i % 2 else "no",))
                for i in range(8)]
    cfg = TrainConfig(epochs=2, learning_rate=1e-2, batch_size=4, torch_compile=compiled, precision=precision,
                      logging_steps=100)
    out = train_task(model, enc, examples, cfg, seed=3, show_progress=False)
    if stats is not None:
        stats.update(out)
    return _lora(model)


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile (inductor) needs a C compiler on CPU")
def test_compiled_training_matches_eager():
    init = _lora(_peft_tiny_llama()[0])
    eager, compiled = _train(), _train(compiled=True)
    moved = max(float((eager[k] - init[k]).abs().max()) for k in eager)
    worst = max(float((compiled[k] - eager[k]).abs().max()) for k in eager)
    # inductor fuses kernels (other summation order): equal up to float rounding, which is
    # 1000x below how far training moved the adapter
    assert moved > 1e-2
    assert worst < 1e-5 * max(1.0, moved / 1e-2), (worst, moved)


def test_bf16_autocast_keeps_lora_weights_fp32_and_learns_alike():
    fp32_stats, bf16_stats = {}, {}
    fp32 = _train(stats=fp32_stats)
    bf16 = _train(precision="bf16", stats=bf16_stats)
    assert all(t.dtype == torch.float32 for t in bf16.values())  # master weights stay fp32
    assert bf16_stats["loss"] == pytest.approx(fp32_stats["loss"], rel=0.03)
    for k in fp32:  # bf16 matmuls (8-bit mantissa): close to the same adapter (Adam amplifies
        # rounding in the smallest gradients, so not to the last digit)
        assert float((bf16[k] - fp32[k]).norm() / fp32[k].norm()) < 0.15, k


def test_sdpa_and_eager_attention_train_the_same_adapter():
    sdpa, eager = _train(attn="sdpa"), _train(attn="eager")
    for k in sdpa:
        torch.testing.assert_close(sdpa[k], eager[k], atol=1e-5, rtol=1e-4)


def test_length_bucket_order_hand_case():
    from kif.training import length_bucket_order

    g = torch.Generator().manual_seed(0)
    lengths = [1, 2, 3, 4, 5, 6, 7, 8]
    order = length_bucket_order(lengths, 2, generator=g)
    assert sorted(order) == list(range(8))
    chunks = [sorted(lengths[i] for i in order[c:c + 2]) for c in range(0, 8, 2)]
    assert chunks[0] == [7, 8]  # the longest chunk first
    assert sorted(chunks) == [[1, 2], [3, 4], [5, 6], [7, 8]]  # neighbours in length share a batch


def test_length_bucket_order_megabatches():
    from kif.training import length_bucket_order

    g = torch.Generator().manual_seed(1)
    lengths = list(range(102, 0, -1))
    order = length_bucket_order(lengths, 4, megabatch_chunks=5, generator=g)  # megabatches of 20
    assert sorted(order) == list(range(102))
    for c in range(0, 100, 4):
        chunk = [lengths[i] for i in order[c:c + 4]]
        assert chunk == sorted(chunk, reverse=True)  # each chunk is a sorted run of its megabatch
    # the short chunk (102 = 25 x 4 + 2) comes last: here the whole last megabatch, sorted
    tail = [lengths[i] for i in order[-2:]]
    assert tail == sorted(tail, reverse=True)


def test_length_bucket_order_is_unchanged_when_the_chunk_divides_the_task():
    """The evidence grid's cells (96 or 288 examples, chunks of 8) ran before the short chunk
    was taken at a random place; with no short chunk the order is the one recorded then."""
    from kif.training import length_bucket_order

    lengths = [(i * 37) % 23 + 1 for i in range(16)]
    order = length_bucket_order(lengths, 4, megabatch_chunks=2, generator=torch.Generator().manual_seed(3))
    assert order == [13, 14, 4, 12, 1, 9, 10, 5, 7, 2, 15, 0, 8, 3, 11, 6]


def test_the_short_chunk_is_not_the_shortest_examples():
    """Replay's case: 96 long examples and 2 short memory ones, chunks of 8. Cut from the end
    of the length order, the two short ones were a batch of their own, the epoch's last
    step, in every epoch. Now the short chunk is two neighbours in length at a random place,
    and the two short examples nearly always sit in a full chunk with long ones."""
    from kif.training import length_bucket_order

    lengths = [200 + i for i in range(96)] + [30, 31]
    rank = sorted(range(98), key=lambda i: -lengths[i])
    alone, places = 0, set()
    for seed in range(50):
        order = length_bucket_order(lengths, 8, generator=torch.Generator().manual_seed(seed))
        assert sorted(order) == list(range(98))
        tail = order[-2:]
        alone += sorted(tail) == [96, 97]
        assert rank.index(tail[1]) - rank.index(tail[0]) == 1  # neighbours in the length order
        places.add(max(lengths[i] for i in tail))
        for c in range(0, 96, 8):
            chunk = [lengths[i] for i in order[c:c + 8]]
            assert chunk == sorted(chunk, reverse=True)
    assert alone <= 1 and len(places) > 25  # 1 place in 97 is the short pair; the rest spread out


def test_length_buckets_pad_far_less_than_hf_for_a_small_task_with_a_big_batch():
    """1,000 examples, batch 128: HF's sampler degenerates to random order (one chunk per
    megabatch); kif's sorts the whole task."""
    from transformers.trainer_pt_utils import get_length_grouped_indices

    from kif.training import length_bucket_order

    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(20, 400, (1000,), generator=g).tolist()

    def padding(order):
        chunks = [order[c:c + 128] for c in range(0, len(order), 128)]
        slots = sum(max(lengths[i] for i in c) * len(c) for c in chunks)
        return 1 - sum(lengths) / slots

    ours = padding(length_bucket_order(lengths, 128, generator=g))
    hf = padding(get_length_grouped_indices(lengths, 128, generator=g))
    # sorted chunks of 128 span ~49 of the 380 length units: ~12 % padding is what is left
    assert ours < 0.15 and hf > 0.3 and ours < hf / 3, (ours, hf)


def test_trainer_uses_length_buckets():
    """train_task with group_by_length: the batches are the sorted chunks of the task."""
    model, tokenizer = _peft_tiny_llama()
    enc = Encoder(tokenizer, False, False, 2)
    examples = [Example(str(i), "q" + "x" * (3 * i) + ". Answer:", ("yes",)) for i in range(12)]
    widths = []
    model.register_forward_pre_hook(lambda m, a, kw: widths.append(tuple(kw["attention_mask"].sum(-1).tolist())),
                                    with_kwargs=True)
    cfg = TrainConfig(epochs=1, learning_rate=1e-3, batch_size=4, group_by_length=True, logging_steps=100)
    train_task(model, enc, examples, cfg, seed=0, show_progress=False)
    lengths = sorted(len(enc.train_features(e)["input_ids"]) for e in examples)
    assert sorted(tuple(sorted(w)) for w in widths) == [tuple(lengths[c:c + 4]) for c in range(0, 12, 4)]
