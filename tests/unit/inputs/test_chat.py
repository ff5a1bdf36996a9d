"""Chat-format queries: the tokenizer's own template, and only the final assistant turn scored."""

import copy

import pytest
from influence.engine.data import IGNORE, query_batches
from influence.engine.model import default_gguf_path, load_tokenizer
from influence.inputs.queries import load_queries

EXAMPLE = "scripts/influence/inputs/resources/chat_queries.yaml"


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(default_gguf_path())  # SmolLM2-135M-Instruct's real tokenizer and chat template


def test_a_chat_query_scores_exactly_the_final_assistant_reply(tokenizer):
    queries = {q.id: q for q in load_queries(EXAMPLE)}
    query = queries["chat_follow_up"]
    ids, labels = query.token_ids(tokenizer)
    messages = [{"role": r, "content": c} for r, c in query.messages]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    # the ids are the template's rendering (without the newline after the last end-of-turn), nothing added
    assert ids == tokenizer(rendered.rstrip(), add_special_tokens=False).input_ids
    scored = [token for token in labels if token != IGNORE]
    assert tokenizer.decode(scored) == "Mercury is the closest planet to the Sun.<|im_end|>"
    first = labels.index(scored[0])
    assert all(label == IGNORE for label in labels[:first]) and labels[first:] == ids[first:]
    # the earlier assistant turn ("Jupiter.") is context, not scored
    assert "Jupiter" in tokenizer.decode(ids[:first]) and "Jupiter" not in tokenizer.decode(scored)
    assert tokenizer.decode(ids[:first]).endswith("<|im_start|>assistant\n")


def test_chat_queries_batch_like_plain_ones_and_read_as_plain_text(tokenizer):
    queries = load_queries(EXAMPLE)
    batch = query_batches(tokenizer, queries, batch_size=8)[0]
    assert batch["input_ids"].shape[0] == 3
    counts = (batch["labels"] != IGNORE).sum(1).tolist()
    assert counts == [len(q.token_ids(tokenizer)[1]) - q.token_ids(tokenizer)[1].count(IGNORE) for q in queries]
    water = queries[1]
    assert water.prompt.startswith("system: You are a concise chemistry tutor.\nuser: What is")
    assert water.completion == "H2O." and "H2O." in water.text


def test_the_template_bos_is_not_doubled(tokenizer):
    tokenizer = copy.deepcopy(tokenizer)  # a Llama-style tokenizer: adds a BOS, and its template writes one too
    tokenizer.bos_token, tokenizer.add_bos_token = "<|endoftext|>", True
    tokenizer.chat_template = "{{ bos_token }}" + tokenizer.chat_template
    query = load_queries(EXAMPLE)[0]
    ids, _ = query.token_ids(tokenizer)
    bos = tokenizer.bos_token_id
    assert ids[0] == bos and ids[1] != bos and ids.count(bos) == 1
    messages = [{"role": r, "content": c} for r, c in query.messages]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert tokenizer(rendered).input_ids[:2] == [bos, bos]  # what tokenising it with special tokens would give


def test_a_tokenizer_without_chat_template_is_named(tokenizer):
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="query 'chat_capital_france' gives 'messages'.*no chat template"):
        load_queries(EXAMPLE)[0].token_ids(tokenizer)


@pytest.mark.parametrize(
    "messages,message",
    [
        ("[{role: user, content: hi}]", "at least two turns"),
        ("[{role: user, content: hi}, {role: bot, content: yo}]", r"messages\[1\]: role 'bot'"),
        ("[{role: assistant, content: hi}, {role: user, content: yo}]", "must be the assistant's reply"),
        ("[{role: system, content: hi}, {role: assistant, content: yo}]", "no user turn"),
        ("[{role: user, content: hi}, {role: assistant, content: ' '}]", r"messages\[1\] \(assistant\)"),
        ("[{role: user, text: hi}, {role: assistant, content: yo}]", "exactly the keys role and content"),
    ],
)
def test_bad_conversations_name_the_query_and_turn(tmp_path, messages, message):
    path = tmp_path / "queries.yaml"
    path.write_text(f"- id: q\n  messages: {messages}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_queries(path)


def test_messages_and_prompt_together_are_refused(tmp_path):
    path = tmp_path / "queries.yaml"
    path.write_text("- {id: q, prompt: a, messages: [{role: user, content: a}, {role: assistant, content: b}]}\n")
    with pytest.raises(ValueError, match="either messages or prompt"):
        load_queries(path)
