"""A PEFT LoRA STAMP adapter for the loader tests (only they need one, so it lives in test/)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from stamp_ros.engine.checkpoint import STAMP_TOKENS, quiet_transformers
from stamp_ros.testing.checkpoint import save_classifier


def make_test_adapter(
    base_dir: str | Path,
    out_dir: str | Path,
    *,
    seed: int = 0,
    rank: int = 4,
    merged_out_dir: str | Path | None = None,
) -> Path:
    """A PEFT LoRA STAMP adapter on a plain tiny Qwen2-VL base (made with ``stamp_tokens=False``).

    Mirrors STAMP-7B-lora: the STAMP tokens are added to the base tokenizer, embeddings are
    resized to ``len(tokenizer)``, LoRA on the LLM projections, and ``embed_tokens``,
    ``lm_head`` and ``classifier`` saved whole via ``modules_to_save``. ``merged_out_dir`` also
    writes the merged result as a full checkpoint so tests can compare the two loading routes.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, Qwen2VLForConditionalGeneration

    base_dir, out = Path(base_dir), Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": list(STAMP_TOKENS)})
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    hidden = model.config.get_text_config().hidden_size
    model.classifier = torch.nn.Linear(hidden, 1)
    lora = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.0,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        modules_to_save=["embed_tokens", "lm_head", "classifier"],
    )
    peft_model = get_peft_model(model, lora)
    gen = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
            elif "modules_to_save" in name:
                param.add_(torch.randn(param.shape, generator=gen) * 0.05)
    with quiet_transformers():
        peft_model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = str(base_dir.resolve())
    cfg_path.write_text(json.dumps(cfg, indent=2))
    if merged_out_dir is not None:
        merged_dir = Path(merged_out_dir)
        if merged_dir.exists():
            shutil.rmtree(merged_dir)
        merged = peft_model.merge_and_unload()
        head = merged.classifier
        del merged.classifier
        with quiet_transformers():
            merged.save_pretrained(merged_dir)
        tokenizer.save_pretrained(merged_dir)
        save_classifier(merged_dir, head.weight, head.bias)
    return out
