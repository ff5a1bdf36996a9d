"""Conversations (`messages`: system/user/assistant turns) rendered by the tokenizer's own chat template.

A chat query scores only its final assistant turn: the template renders the turns before it with the
generation prompt (`<|im_start|>assistant\\n` for SmolLM2) as the prompt, and what the full conversation adds
after that, the reply and its end-of-turn marker (`Paris.<|im_end|>`), as the completion. The rendered text
already holds the template's special tokens (a BOS where the template writes one), so it is tokenised with
`add_special_tokens=False`: adding them again is how a chat template doubles the BOS.
"""

from __future__ import annotations

ROLES = ("system", "user", "assistant")


def check_messages(messages: object, where: str) -> tuple[tuple[str, str], ...]:
    """(role, content) pairs of a `messages` list; errors name `where` and the turn.

    The last turn must be the assistant's (the reply to attribute) and come after a user turn.
    """
    if not isinstance(messages, list) or len(messages) < 2:
        raise ValueError(
            f"{where}: 'messages' must be a list of at least two turns (a user turn, then the assistant's)."
        )
    turns = []
    for index, turn in enumerate(messages):
        here = f"{where}, messages[{index}]"
        if not isinstance(turn, dict) or set(turn) != {"role", "content"}:
            raise ValueError(f"{here} must be a mapping with exactly the keys role and content.")
        if turn["role"] not in ROLES:
            raise ValueError(f"{here}: role {turn['role']!r} is not one of {list(ROLES)}.")
        if not isinstance(turn["content"], str) or not turn["content"].strip():
            raise ValueError(f"{here} ({turn['role']}): 'content' must be a non-empty string.")
        turns.append((turn["role"], turn["content"]))
    if turns[-1][0] != "assistant":
        raise ValueError(f"{where}: the last turn is {turns[-1][0]!r}; it must be the assistant's reply to attribute.")
    if not any(role == "user" for role, _ in turns[:-1]):
        raise ValueError(f"{where}: no user turn before the assistant's reply.")
    return tuple(turns)


def plain_text(turns: tuple[tuple[str, str], ...]) -> str:
    """The turns as `role: content` lines, for what reads text rather than tokens (TF-IDF, reports)."""
    return "\n".join(f"{role}: {content}" for role, content in turns)


def render_reply(tokenizer, turns: tuple[tuple[str, str], ...], where: str) -> tuple[str, str]:
    """(prompt, completion) as the chat template renders them: everything before the final assistant turn,
    with the generation prompt, and what the whole conversation adds after it (trailing whitespace dropped:
    the newline after an end-of-turn marker is not part of the reply)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"{where} gives 'messages', but the model's tokenizer has no chat template; give prompt and "
            "completion instead, or use a chat model (its tokenizer_config.json holds the template)."
        )
    messages = [{"role": role, "content": content} for role, content in turns]
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise ValueError(
            f"{where}: the chat template renders the conversation so that it does not begin with its own "
            "generation prompt, so the reply's tokens cannot be told apart; give prompt and completion instead."
        )
    return prompt, full[len(prompt) :].rstrip()
