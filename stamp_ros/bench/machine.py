"""Which machine and software a benchmark ran on: a number without it is not a result."""

from __future__ import annotations

import platform


def device_name(device) -> str:
    """GPU name, or the CPU model from /proc/cpuinfo (what the numbers are comparable on)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or what ``platform`` knows without it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str | None]:
    """Versions of the packages that move the engine's numbers."""
    import importlib.metadata as md

    import numpy as np
    import torch
    import transformers

    def ver(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "flash_attn": ver("flash-attn") or ver("flash_attn"),
        "stamp_ros": ver("stamp_ros") or ver("stamp-ros"),
    }
