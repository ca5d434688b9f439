"""Load a STAMP checkpoint (full model or PEFT LoRA adapter) into stock transformers classes.

STAMP is Qwen2-VL plus four added tokens and a ``Linear(hidden, 1)`` head called ``classifier``
that stock transformers does not know about, so the head is read from the safetensors files
ourselves. Loading is deliberately strict: ``trust_remote_code=False``, safetensors only, and a
clear :class:`CheckpointError` for anything that is not a STAMP checkpoint, because a silently
random classifier or a missing ``<|mask|>`` token would produce plausible-looking garbage masks.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from stamp_ros.engine.defaults import DEFAULT_MODEL
from stamp_ros.engine.errors import CheckpointError

logger = logging.getLogger("stamp_ros.engine")

STAMP_TOKENS = ("<|seg|>", "<|mask|>", "<|yes|>", "<|no|>")
DEVICES = ("auto", "cuda", "cpu")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2")

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
# classifier.weight, base_model.model.classifier.weight,
# base_model.model.classifier.modules_to_save.default.weight, ...
_CLASSIFIER_KEY = re.compile(
    r"^(?:.*\.)?classifier(?P<saved>\.modules_to_save\.[^.]+)?\.(?P<param>weight|bias)$"
)


@dataclass(frozen=True)
class SpecialTokens:
    """Token ids the engine needs; looked up once so the hot path never touches the tokenizer."""

    seg: int
    mask: int
    yes: int
    no: int
    image_pad: int
    vision_start: int
    vision_end: int
    im_start: int
    im_end: int
    stop_ids: tuple[int, ...]
    """Generation stops at any of these (``<|im_end|>`` and the configured EOS ids)."""
    pad: int | None = None


@dataclass
class LoadedStamp:
    """Everything :class:`StampSegmenter` needs, already on the target device and dtype."""

    model: torch.nn.Module
    """A stock ``Qwen2VLForConditionalGeneration`` in eval mode (adapter merged, if any)."""
    classifier: torch.nn.Linear
    tokenizer: object
    tokens: SpecialTokens
    config: object
    device: torch.device
    dtype: torch.dtype
    attn_implementation: str
    source: str
    """The local directory the weights came from."""
    is_adapter: bool = False
    generation_config: object | None = None


# --------------------------------------------------------------------------- resolution


def _resolve_device(device: str) -> torch.device:
    if device not in DEVICES and not device.startswith("cuda:"):
        raise CheckpointError(f"device must be one of {DEVICES} (or cuda:N), got {device!r}")
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if device != "auto":
            logger.warning(
                "CUDA was requested (%s) but is not available; running on the CPU", device
            )
        return torch.device("cpu")
    return torch.device("cuda" if device == "auto" else device)


def _resolve_dtype(dtype: str, device: torch.device, config) -> torch.dtype:
    """``auto``: fp32 on the CPU (bf16 matmuls are slow and lossy there), bf16 on a GPU.

    bf16 is what STAMP was trained in and halves memory and bandwidth versus fp32; the saved
    config dtype is ignored on purpose, because a checkpoint re-saved in fp32 (or a random
    benchmark model) would otherwise run 2x slower at no accuracy benefit. GPUs without bf16
    (pre-Ampere) get fp16.
    """
    if dtype in DTYPES:
        return DTYPES[dtype]
    if dtype != "auto":
        raise CheckpointError(f"dtype must be 'auto' or one of {sorted(DTYPES)}, got {dtype!r}")
    if device.type == "cpu":
        return torch.float32
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _resolve_attn(attn: str | None, device: torch.device) -> str:
    """``auto`` (default): flash-attn 2 on CUDA when the package is installed, else sdpa."""
    attn = attn or "auto"
    if attn not in ATTN_IMPLEMENTATIONS:
        raise CheckpointError(
            f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {attn!r}"
        )
    no_flash = device.type != "cuda" or importlib.util.find_spec("flash_attn") is None
    if attn == "auto":
        return "sdpa" if no_flash else "flash_attention_2"
    if attn == "flash_attention_2" and no_flash:
        logger.warning("flash_attention_2 needs CUDA and the flash-attn package; using sdpa")
        return "sdpa"
    return attn


def resolve_model_dir(model: str) -> Path:
    """A local directory as is; else a hub id, from the cache or fetched (safetensors only)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists() or model.startswith((".", "/", "~")):
        raise CheckpointError(f"model path {model!r} is not a directory")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - transformers depends on it
        raise CheckpointError(f"cannot fetch {model!r}: huggingface_hub is missing") from exc
    patterns = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "tokenizer*"]
    try:
        return Path(snapshot_download(model, allow_patterns=patterns, local_files_only=True))
    except Exception:
        pass
    try:
        return Path(snapshot_download(model, allow_patterns=patterns))
    except Exception as exc:
        raise CheckpointError(
            f"could not load model {model!r}: it is not a local directory, and the Hugging Face "
            f"hub is unreachable or does not have it ({type(exc).__name__}); pass a local path "
            "to a downloaded checkpoint instead"
        ) from exc


def _safetensors_files(directory: Path, *, adapter: bool = False) -> list[Path]:
    """The weight files to read; refuse pickle-only checkpoints (they can run arbitrary code)."""
    if adapter:
        files = sorted(directory.glob("adapter_model*.safetensors"))
    else:
        files = sorted(
            p for p in directory.glob("*.safetensors") if not p.name.startswith("adapter_")
        )
    if files:
        return files
    pickles = [p.name for p in directory.iterdir() if p.suffix in _PICKLE_SUFFIXES]
    if pickles:
        raise CheckpointError(
            f"{directory} has only pickle weights ({', '.join(sorted(pickles))}); refusing to load "
            "them for safety. Convert the checkpoint to safetensors."
        )
    kind = "adapter_model.safetensors" if adapter else "*.safetensors weights"
    raise CheckpointError(f"{directory} has no {kind}; is it a STAMP checkpoint?")


# --------------------------------------------------------------------------- classifier


def find_classifier_state(files: list[Path]) -> dict[str, torch.Tensor]:
    """Read ``classifier.weight``/``.bias`` under any of the key spellings STAMP may use.

    PEFT saves ``modules_to_save`` copies (the trained ones) next to the frozen original, so a
    ``modules_to_save`` key wins over a plain one and ``original_module`` keys are ignored.
    """
    found: dict[str, tuple[int, str, Path]] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                m = _CLASSIFIER_KEY.match(key)
                if m is None or "original_module" in key:
                    continue
                rank = 1 if m.group("saved") else 0
                prev = found.get(m.group("param"))
                if prev is None or rank > prev[0]:
                    found[m.group("param")] = (rank, key, file)
    state = {}
    for param, (_, key, file) in found.items():
        with safe_open(str(file), framework="pt") as f:
            state[param] = f.get_tensor(key)
    return state


def build_classifier(state: dict[str, torch.Tensor], hidden: int, where: str) -> torch.nn.Linear:
    weight = state.get("weight")
    if weight is None:
        raise CheckpointError(
            f"no 'classifier.weight' in the safetensors of {where}: this is not a STAMP checkpoint "
            "(a plain Qwen2-VL has no mask head)"
        )
    if tuple(weight.shape) != (1, hidden):
        raise CheckpointError(
            f"classifier.weight in {where} has shape {tuple(weight.shape)}, expected (1, {hidden})"
        )
    bias = state.get("bias")
    head = torch.nn.Linear(hidden, 1, bias=bias is not None)
    with torch.no_grad():
        head.weight.copy_(weight)
        if bias is not None:
            head.bias.copy_(bias.reshape(1))
    return head


# --------------------------------------------------------------------------- tokens


def _token_id(tokenizer, token: str) -> int | None:
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or (tokenizer.unk_token_id is not None and tid == tokenizer.unk_token_id):
        return None
    return int(tid)


def special_tokens(tokenizer, config, generation_config=None) -> SpecialTokens:
    """Look up and sanity-check every id the engine relies on."""
    ids = {t: _token_id(tokenizer, t) for t in STAMP_TOKENS}
    missing = [t for t, i in ids.items() if i is None]
    if missing:
        raise CheckpointError(
            f"the tokenizer lacks the STAMP tokens {missing}; this is not a STAMP checkpoint "
            f"(expected all of {list(STAMP_TOKENS)})"
        )
    qwen = {
        t: _token_id(tokenizer, t)
        for t in (
            "<|image_pad|>",
            "<|vision_start|>",
            "<|vision_end|>",
            "<|im_start|>",
            "<|im_end|>",
        )
    }
    lacking = [t for t, i in qwen.items() if i is None]
    if lacking:
        raise CheckpointError(f"the tokenizer lacks the Qwen2-VL tokens {lacking}")
    if getattr(config, "image_token_id", qwen["<|image_pad|>"]) != qwen["<|image_pad|>"]:
        raise CheckpointError(
            f"config.image_token_id={config.image_token_id} does not match the tokenizer's "
            f"<|image_pad|> id {qwen['<|image_pad|>']}"
        )
    vocab = config.get_text_config().vocab_size
    too_big = {t: i for t, i in {**ids, **qwen}.items() if i >= vocab}
    if too_big:
        raise CheckpointError(f"token ids {too_big} are outside the model vocabulary ({vocab})")
    stops = {qwen["<|im_end|>"]}
    if tokenizer.eos_token_id is not None:
        stops.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(generation_config, "eos_token_id", None)
    if gen_eos is not None:
        stops.update(int(i) for i in ([gen_eos] if isinstance(gen_eos, int) else gen_eos))
    return SpecialTokens(
        seg=ids["<|seg|>"],
        mask=ids["<|mask|>"],
        yes=ids["<|yes|>"],
        no=ids["<|no|>"],
        image_pad=qwen["<|image_pad|>"],
        vision_start=qwen["<|vision_start|>"],
        vision_end=qwen["<|vision_end|>"],
        im_start=qwen["<|im_start|>"],
        im_end=qwen["<|im_end|>"],
        stop_ids=tuple(sorted(stops)),
        pad=tokenizer.pad_token_id,
    )


# --------------------------------------------------------------------------- loading


@contextlib.contextmanager
def quiet_transformers():
    """Hide the expected 'unexpected keys: classifier.*' load report; real errors still raise."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _load_config(directory: Path):
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(directory, trust_remote_code=False)
    except Exception as exc:
        raise CheckpointError(f"cannot read the model config in {directory}: {exc}") from exc
    if getattr(config, "model_type", None) != "qwen2_vl":
        raise CheckpointError(
            f"{directory} holds a {getattr(config, 'model_type', '?')!r} model; STAMP is qwen2_vl"
        )
    return config


def _load_tokenizer(directory: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
    except Exception as exc:
        raise CheckpointError(f"cannot load the tokenizer in {directory}: {exc}") from exc


def _load_generation_config(directory: Path):
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(directory)
    except Exception:
        return None


def _from_pretrained(directory: Path, dtype: torch.dtype, attn: str):
    from transformers import Qwen2VLForConditionalGeneration

    _safetensors_files(directory)
    try:
        with quiet_transformers():
            return Qwen2VLForConditionalGeneration.from_pretrained(
                directory, dtype=dtype, attn_implementation=attn, use_safetensors=True
            )
    except Exception as exc:
        raise CheckpointError(f"cannot load the model weights in {directory}: {exc}") from exc


def _load_adapter(adapter_dir: Path, dtype: torch.dtype, attn: str):
    """Base model, vocab resized to the adapter's tokenizer, LoRA merged, adapter's classifier."""
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise CheckpointError(
            f"{adapter_dir} is a LoRA adapter; install 'peft' to load it"
        ) from exc
    files = _safetensors_files(adapter_dir, adapter=True)
    adapter_cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    base_ref = adapter_cfg.get("base_model_name_or_path")
    if not base_ref:
        raise CheckpointError(f"{adapter_dir}/adapter_config.json names no base_model_name_or_path")
    base_dir = resolve_model_dir(base_ref)
    config = _load_config(base_dir)
    has_tokenizer = any(
        (adapter_dir / n).exists() for n in ("tokenizer.json", "tokenizer_config.json")
    )
    tokenizer = _load_tokenizer(adapter_dir if has_tokenizer else base_dir)
    if not has_tokenizer:
        # What the reference loader does for an adapter without its own tokenizer.
        tokenizer.add_special_tokens({"additional_special_tokens": list(STAMP_TOKENS)})
    model = _from_pretrained(base_dir, dtype, attn)
    # modules_to_save holds embed_tokens/lm_head at len(tokenizer) rows: resize before loading.
    if model.get_input_embeddings().num_embeddings != len(tokenizer):
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    hidden = model.config.get_text_config().hidden_size
    classifier = build_classifier(find_classifier_state(files), hidden, str(adapter_dir))
    # PEFT wants the module named in modules_to_save to exist; give it a placeholder.
    model.classifier = torch.nn.Linear(hidden, 1, dtype=dtype)
    try:
        with quiet_transformers():
            peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
            model = peft_model.merge_and_unload()
    except Exception as exc:
        raise CheckpointError(f"cannot apply the LoRA adapter in {adapter_dir}: {exc}") from exc
    del model.classifier
    return model, classifier, tokenizer, config, base_dir


def load_stamp(
    model: str = DEFAULT_MODEL,
    *,
    device: str = "auto",
    dtype: str = "auto",
    attn_implementation: str | None = "auto",
) -> LoadedStamp:
    """Load a STAMP checkpoint from a local directory or a hub id, ready for inference.

    A directory with ``adapter_config.json`` is treated as a PEFT LoRA adapter on the base named
    there; the adapter is merged so inference pays no LoRA overhead.
    """
    directory = resolve_model_dir(str(model))
    dev = _resolve_device(device)
    attn = _resolve_attn(attn_implementation, dev)
    is_adapter = (directory / "adapter_config.json").exists()
    if is_adapter:
        base_cfg = json.loads((directory / "adapter_config.json").read_text())
        probe_dir = resolve_model_dir(base_cfg.get("base_model_name_or_path") or str(directory))
        torch_dtype = _resolve_dtype(dtype, dev, _load_config(probe_dir))
        net, classifier, tokenizer, _, _ = _load_adapter(directory, torch_dtype, attn)
        config = net.config
    else:
        config = _load_config(directory)
        torch_dtype = _resolve_dtype(dtype, dev, config)
        tokenizer = _load_tokenizer(directory)
        # Check the cheap things before reading gigabytes of weights.
        special_tokens(tokenizer, config)
        files = _safetensors_files(directory)
        classifier = build_classifier(
            find_classifier_state(files), config.get_text_config().hidden_size, str(directory)
        )
        net = _from_pretrained(directory, torch_dtype, attn)
    generation_config = _load_generation_config(directory)
    tokens = special_tokens(tokenizer, net.config, generation_config)
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    net.to(dev).eval().requires_grad_(False)
    classifier.to(device=dev, dtype=torch_dtype).eval().requires_grad_(False)
    logger.info(
        "loaded STAMP from %s%s on %s (%s, attention=%s)",
        directory,
        " (LoRA merged)" if is_adapter else "",
        dev,
        str(torch_dtype).replace("torch.", ""),
        attn,
    )
    return LoadedStamp(
        model=net,
        classifier=classifier,
        tokenizer=tokenizer,
        tokens=tokens,
        config=net.config,
        device=dev,
        dtype=torch_dtype,
        attn_implementation=attn,
        source=str(directory),
        is_adapter=is_adapter,
        generation_config=generation_config,
    )
