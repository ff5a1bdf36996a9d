"""The preflight: each check passes on a sound model and stops the run, naming the setting, when it should."""

import copy
import json
import logging

import pytest
import torch
from helpers import tiny_llama
from influence.engine.model import LOADING, default_gguf_path, load_tokenizer
from influence.inputs.queries import Query
from influence.run.preflight import check_query_tokens, failure_message, run_preflight

LOG = logging.getLogger("test")
SEQUENCES = {"a": [5, 9, 14, 3, 8, 2, 7], "b": [4, 4, 11, 6], "c": [9, 1, 12, 13, 10], "d": [3, 5, 8, 2, 6, 7, 1, 9]}
QUERIES = [Query("capital", "The capital of France is", " Paris"), Query("sky", "The sky is", " blue")]


def _batch_dependent_attention(module, query, key, value, attention_mask, **kwargs):
    """A deliberately broken kernel: every row's keys shifted by the batch's mean key (rows see each other)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key + key.mean(0, keepdim=True), value, attention_mask, **kwargs)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(default_gguf_path())


def save_model(directory, tokenizer, attention=None, model=None):
    (model or tiny_llama(hidden=32, intermediate=64, vocab=len(tokenizer), dtype=torch.float32)).save_pretrained(
        directory
    )
    tokenizer.save_pretrained(directory)
    if attention:
        (directory / LOADING).write_text(json.dumps({"attn_implementation": attention}))
    return directory


def params(dtype="float32"):
    return {"dtype": dtype, "device": "cpu", "trust_remote_code": False, "layers": r"mlp\.(up|down)_proj$"}


def by_check(summary):
    return {f["check"]: f for f in summary["findings"]}


def test_a_sound_float32_model_passes_every_check(tmp_path, tokenizer):
    summary, table = run_preflight(save_model(tmp_path, tokenizer), params(), SEQUENCES, QUERIES, tokenizer, LOG)
    checks = by_check(summary)
    assert summary["passed"] and summary["attn_implementation"] == "sdpa"
    assert checks["dtype"]["status"] == "pass" and checks["dtype"]["value"] > 0.999999  # float32 vs float64
    assert checks["batch"]["value"] < 1e-5 and checks["factors"]["value"] < 1e-5
    assert checks["bos"]["status"] == "pass" and checks["boundary"]["status"] == "pass"
    assert set(table["check"]) == {"dtype", "batch", "factors"} and len(table) == 3 * 4  # 4 layers each


def test_a_batch_dependent_attention_kernel_stops_the_run_naming_the_setting(tmp_path, tokenizer):
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register("batch_dependent", _batch_dependent_attention)
    AttentionMaskInterface.register("batch_dependent", sdpa_mask)
    model_dir = save_model(tmp_path, tokenizer, attention="batch_dependent")
    summary, _ = run_preflight(model_dir, params(), SEQUENCES, QUERIES, tokenizer, LOG)
    assert not summary["passed"] and summary["attn_implementation"] == "batch_dependent"
    assert by_check(summary)["batch"]["status"] == "fail" and by_check(summary)["batch"]["value"] > 1e-2
    assert "batch: " in failure_message(summary) and "model.attn_implementation: eager" in failure_message(summary)


def test_bfloat16_weights_that_lose_the_gradient_fail_the_dtype_check(tmp_path, tokenizer):
    model = tiny_llama(hidden=32, intermediate=64, vocab=len(tokenizer), dtype=torch.float32)
    with torch.no_grad():  # a large shared offset on every embedding: bfloat16's 8-bit mantissa keeps only it
        model.model.embed_tokens.weight.mul_(0.01).add_(64.0)
    summary, _ = run_preflight(
        save_model(tmp_path, tokenizer, model=model), params("bfloat16"), SEQUENCES, QUERIES, tokenizer, LOG
    )
    dtype = by_check(summary)["dtype"]
    assert (
        dtype["status"] == "fail" and dtype["value"] < 0.9 and "bfloat16 gradients against float32" in dtype["detail"]
    )
    assert "model.dtype: float32" in failure_message(summary)


def test_a_doubled_bos_fails_and_a_split_token_boundary_warns(tmp_path, tokenizer):
    tokenizer = copy.deepcopy(tokenizer)  # a tokenizer that adds a BOS, as Llama's does
    tokenizer.bos_token, tokenizer.add_bos_token = "<|endoftext|>", True
    queries = [Query("bos", "<|endoftext|>The capital of France is", " Paris"), Query("space", "The sky is ", "blue")]
    summary, _ = run_preflight(save_model(tmp_path, tokenizer), params(), SEQUENCES, queries, tokenizer, LOG)
    checks = by_check(summary)
    assert checks["bos"]["status"] == "fail" and "query bos" in checks["bos"]["detail"]
    assert checks["boundary"]["status"] == "warn" and "space" in checks["boundary"]["detail"]
    assert "bos" not in checks["boundary"]["detail"]
    with pytest.raises(ValueError, match="query bos"):  # what precondition_queries runs on the run's queries
        check_query_tokens(tokenizer, queries, LOG)
    check_query_tokens(tokenizer, queries[1:], LOG)  # a split boundary only warns
