"""Figures written to the workdir; matplotlib's object API, so no global pyplot state."""

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def save_scatter_panels(path: str, panels: dict[str, np.ndarray], means: np.ndarray,
                        title: str) -> None:
  """One scatter plot per panel (e.g. data, samples, reconstructions) side by side.

  The mixture's means are marked in every panel and all panels share the same axes, so
  missing modes and off-mode samples are visible at a glance.
  """
  figure = Figure(figsize=(4 * len(panels), 4.3), dpi=100)
  FigureCanvasAgg(figure)
  extent = np.abs(means).max() + 2.0
  axes = figure.subplots(1, len(panels), sharex=True, sharey=True, squeeze=False)[0]
  for ax, (name, points) in zip(axes, panels.items()):
    points = np.asarray(points)
    ax.scatter(points[:, 0], points[:, 1], s=1, alpha=0.3, color="tab:blue", rasterized=True)
    ax.scatter(means[:, 0], means[:, 1], s=12, marker="x", color="tab:red")
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_title(name)
  figure.suptitle(title)
  figure.tight_layout()
  figure.savefig(path)
