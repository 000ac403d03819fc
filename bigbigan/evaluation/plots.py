"""Figures written to the workdir; matplotlib's object API, so no global pyplot state.

The PNG is rendered in memory and written through etils' epath, so the workdir may be on
gs:// (matplotlib itself writes local files only).
"""

import io

import numpy as np
from etils import epath
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _write_png(figure: Figure, path: epath.PathLike) -> None:
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png")
  epath.Path(path).write_bytes(buffer.getvalue())


def save_scatter_panels(path: epath.PathLike, panels: dict[str, np.ndarray], means: np.ndarray,
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
  _write_png(figure, path)


def save_image_grids(path: epath.PathLike, grids: dict[str, np.ndarray], title: str,
                     columns: int = 10) -> None:
  """Image grids side by side, e.g. data x | samples G(z) | reconstructions G(E(x)).

  Args:
    path: the PNG to write (local or e.g. gs://).
    grids: name -> [N, H, W] (grey) or [N, H, W, 3] images with values in [0, 1].
    title: the figure's title.
    columns: images per grid row.
  """
  # Enough dots per inch to show the largest mosaic at its own resolution.
  widest = max(columns * np.shape(images)[2] for images in grids.values())
  figure = Figure(figsize=(3.2 * len(grids), 3.6), dpi=max(100, int(widest / 3.0)))
  FigureCanvasAgg(figure)
  axes = figure.subplots(1, len(grids), squeeze=False)[0]
  for ax, (name, images) in zip(axes, grids.items()):
    mosaic = image_mosaic(images, columns)
    ax.imshow(mosaic, cmap="gray" if mosaic.ndim == 2 else None, vmin=0.0, vmax=1.0)
    ax.set_title(name)
    ax.axis("off")
  figure.suptitle(title)
  figure.tight_layout()
  _write_png(figure, path)


def image_mosaic(images: np.ndarray, columns: int) -> np.ndarray:
  """[N, H, W(, 3)] images in [0, 1] -> one [rows * H, columns * W(, 3)] mosaic (row-major)."""
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  rows = -(-len(images) // columns)
  padded = np.zeros((rows * columns,) + images.shape[1:], np.float32)
  padded[:len(images)] = images
  height, width = images.shape[1:3]
  return padded.reshape((rows, columns) + images.shape[1:]).swapaxes(1, 2).reshape(
      (rows * height, columns * width) + images.shape[3:])
