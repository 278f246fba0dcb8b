"""What the chart modules share: a dated matplotlib figure finished as a PNG, and that PNG inline in Markdown."""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def dated_png(figure: Figure) -> bytes:
    """``figure`` (one axes over dates) with a light grid and slanted date labels, as PNG bytes."""
    figure.axes[0].grid(alpha=0.3)
    figure.autofmt_xdate()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI, to show inline in a materialization's Markdown."""
    return "data:image/png;base64," + base64.b64encode(png).decode()
