"""matplotlib for the figures the package writes (loss curves, eval plots): files only.

matplotlib comes with the ``train`` extra and is loaded when a figure is first drawn.
"""

from __future__ import annotations

from typing import Any


def pyplot() -> Any:
    """The pyplot module of matplotlib, on the Agg backend (files only, no window)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
