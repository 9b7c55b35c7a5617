"""Accuracy curves as PNG files (matplotlib, Agg backend: no display needed)."""

import math
import os
from typing import Dict, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import matplotlib.ticker  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position


def save_panels(path: str, panels: Sequence[Dict], *, title: Optional[str] = None,
                columns: int = 3) -> str:
  """Draws one subplot per panel and writes the figure to `path`.

  Args:
    path: the PNG file to write (its directory is created).
    panels: dicts with `title`, `xlabel`, `ylabel`, optional `log_x`, optional `hline`
      (`(y, label)`: a dashed horizontal line, e.g. the target), and `series`: a list of dicts
      with `label`, `x`, `y` and optionally `spread` (drawn as a band `y +- spread`) and
      `color` (a matplotlib colour; the next of the cycle when omitted).
    title: the figure's title.
    columns: subplots per row.

  Returns:
    `path`.
  """
  columns = min(columns, len(panels))
  rows = math.ceil(len(panels) / columns)
  fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.9 * rows), squeeze=False)
  for ax, panel in zip(axes.flat, panels):
    if "tiles" in panel:
      _draw_tiles(ax, panel)
      continue
    for series in panel["series"]:
      x, y = np.asarray(series["x"], float), np.asarray(series["y"], float)
      line, = ax.plot(x, y, label=series["label"], linewidth=1.8, color=series.get("color"))
      if series.get("spread") is not None:
        spread = np.asarray(series["spread"], float)
        ax.fill_between(x, y - spread, y + spread, color=line.get_color(), alpha=0.15,
                        linewidth=0)
    if panel.get("hline") is not None:
      y, label = panel["hline"]
      ax.axhline(y, color="grey", linestyle="--", linewidth=1, label=label)
    if panel.get("log_x"):
      ax.set_xscale("log")
      ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # labels would overlap
    ax.set_title(panel["title"], fontsize=10)
    ax.set_xlabel(panel["xlabel"])
    ax.set_ylabel(panel["ylabel"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
  for ax in list(axes.flat)[len(panels):]:
    ax.set_visible(False)
  if title:
    fig.suptitle(title, fontsize=11)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _draw_tiles(ax, panel: Dict):
  """A panel of images in a row-major grid, each framed and labelled (`panel["tiles"]`: dicts
  with `image` `[H, W, 3]` in [0, 1], `label` (one or more lines) and `color`),
  `panel["columns"]` per row; the space under each row grows with the labels' lines."""
  tiles = panel["tiles"]
  columns = panel.get("columns", 4)
  rows = max(1, math.ceil(len(tiles) / columns))
  height, width = tiles[0]["image"].shape[:2] if tiles else (1, 1)
  pad = max(2, height // 8)
  lines = max((tile["label"].count("\n") + 1 for tile in tiles), default=1)
  row_height = height + pad * (2 + lines)
  grid = np.ones((rows * row_height, columns * (width + pad), 3), np.float32)
  for i, tile in enumerate(tiles):
    r, c = divmod(i, columns)
    y, x = r * row_height, c * (width + pad)
    grid[y:y + height, x:x + width] = np.clip(tile["image"][..., :3], 0, 1)
    ax.text(x + width / 2, y + height + 0.3 * pad, tile["label"], ha="center", va="top",
            fontsize=6, color=tile.get("color", "black"))
  ax.imshow(grid, interpolation="nearest")
  ax.set_title(panel["title"], fontsize=10)
  ax.axis("off")
