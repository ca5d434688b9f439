"""Instance colours shared by every visual output.

The overlay image, the RViz markers and the point cloud are looked at side by side, so
instance ``i`` must get the same colour in all of them; keeping the table here (with no
numpy or ROS import) lets each producer use it without depending on the others.
"""

from __future__ import annotations

# Saturated, mutually distinct hues first, so the common case of a handful of instances
# never shows two similar colours; later entries are lighter/darker variants for crowds.
PALETTE: list[tuple[int, int, int]] = [
    (230, 25, 75),    # red
    (60, 180, 75),    # green
    (0, 130, 200),    # blue
    (255, 200, 20),   # yellow
    (245, 130, 48),   # orange
    (145, 30, 180),   # purple
    (70, 240, 240),   # cyan
    (240, 50, 230),   # magenta
    (170, 255, 60),   # lime
    (250, 160, 190),  # pink
    (0, 128, 128),    # teal
    (170, 110, 40),   # brown
    (128, 0, 0),      # maroon
    (120, 200, 160),  # mint
    (128, 128, 0),    # olive
    (0, 0, 128),      # navy
]


def color_for(index: int) -> tuple[int, int, int]:
    """Colour of instance ``index``; wraps so any number of instances gets a colour."""
    return PALETTE[index % len(PALETTE)]
