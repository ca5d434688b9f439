"""Chat prompt construction: messages -> token ids with the image placeholder expanded.

History placement, two layouts (there is always exactly one image):

* image in the last turn (the default, ``image_in_first_turn=False``): earlier (user, assistant)
  turns are text-only and come *before* the current user turn, which alone carries the image.
  STAMP was trained on single-image, single-turn chats with the image first in the user turn;
  this keeps the image placeholder, the mask tokens and the current question adjacent, as in
  training. A one-turn chat is rendered exactly as the reference code renders it.
* image in the first turn (``image_in_first_turn=True``): the way Qwen2-VL chats about one
  picture are normally laid out, and what a conversation pinned to one frame uses: every turn
  of the conversation then starts with the same ``system + <|vision_start|> image
  <|vision_end|>`` prefix, so the prefix cache serves later turns without preprocessing or the
  vision tower. Without history both layouts are the same prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

from stamp_ros.engine.errors import InputError

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
MAX_QUERY_CHARS = 4000

# Typing these would inject a second image placeholder and break the feature alignment.
_RESERVED = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")


def query_refusal(query: str) -> str:
    """Why a query is refused before it is queued ("" when it may run): the early rule the node
    and the offline tools share, with the wording their error results carry."""
    if not query.strip():
        return "empty query"
    if len(query) > MAX_QUERY_CHARS:
        return f"query too long: {len(query)} characters (max {MAX_QUERY_CHARS})"
    return ""


def _check_text(text: object, what: str, *, allow_empty: bool = False) -> str:
    if not isinstance(text, str):
        raise InputError(f"{what} must be a string, got {type(text).__name__}")
    if not allow_empty and not text.strip():
        raise InputError(f"{what} is empty")
    if len(text) > MAX_QUERY_CHARS:
        raise InputError(f"{what} is {len(text)} characters long; the limit is {MAX_QUERY_CHARS}")
    for token in _RESERVED:
        if token in text:
            raise InputError(f"{what} must not contain the reserved token {token}")
    return text


def _user_turn(text: str, with_image: bool) -> dict:
    if with_image:
        return {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}
    return {"role": "user", "content": text}


def build_messages(
    query: str,
    history: Sequence[tuple[str, str]] | None,
    system_prompt: str | None,
    *,
    image_in_first_turn: bool = False,
) -> list[dict]:
    """The chat in the Qwen2-VL message format, validated (layouts: see the module docstring)."""
    query = _check_text(query, "query")
    messages: list[dict] = []
    if system_prompt:
        messages.append({"role": "system", "content": _check_text(system_prompt, "system prompt")})
    for i, turn in enumerate(history or ()):
        if not isinstance(turn, (tuple, list)) or len(turn) != 2:
            raise InputError(f"history[{i}] must be a (user, assistant) pair")
        user, assistant = turn
        user = _check_text(user, f"history[{i}] user")
        messages.append(_user_turn(user, with_image=image_in_first_turn and i == 0))
        messages.append(
            {
                "role": "assistant",
                "content": _check_text(assistant, f"history[{i}] assistant", allow_empty=True),
            }
        )
    messages.append(_user_turn(query, with_image=not (image_in_first_turn and history)))
    return messages


def encode_prompt(
    tokenizer, messages: list[dict], image_pad_id: int, num_image_tokens: int
) -> list[int]:
    """Render with the checkpoint's chat template, tokenise, expand the single ``<|image_pad|>``."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False).input_ids
    where = [i for i, t in enumerate(ids) if t == image_pad_id]
    if len(where) != 1:
        raise InputError(f"the rendered prompt has {len(where)} image placeholders, expected 1")
    pos = where[0]
    return ids[:pos] + [image_pad_id] * num_image_tokens + ids[pos + 1 :]
