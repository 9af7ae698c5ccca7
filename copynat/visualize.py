"""PNG pictures of what a copynat model does: attention heatmaps, the copy gate, attention masks.

Needs matplotlib (``pip install "copynat[plots]"``), imported lazily inside each function.
Figures are drawn with the Agg canvas directly -- no pyplot, no global backend switch, so
calling these functions never changes the backend of a notebook or a GUI session.

CJK labels (the lecture's examples are Chinese: "我是大木博士") render out of the box:
matplotlib's default DejaVu Sans has no CJK glyphs, so copynat ships a small OFL-licensed
subset of Noto Sans CJK SC (``copynat/fonts/CopyNatCJKSans-Regular.ttf``: GB 2312 + kana,
about 2 MB) and uses a font *fallback list* -- DejaVu Sans for Latin, "CopyNat CJK Sans"
for CJK, then any full CJK font installed on the system for rarer characters.  Call
:func:`use_cjk_fonts` to apply the same list to your own matplotlib plots.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "BUNDLED_CJK_FONT",
    "BUNDLED_CJK_FAMILY",
    "cjk_font_families",
    "use_cjk_fonts",
    "plot_attention",
    "plot_copy_gate",
    "plot_attention_masks",
    "require_matplotlib",
]

BUNDLED_CJK_FONT = Path(__file__).resolve().parent / "fonts" / "CopyNatCJKSans-Regular.ttf"
BUNDLED_CJK_FAMILY = "CopyNat CJK Sans"
_LATIN_FAMILY = "DejaVu Sans"  # always shipped with matplotlib

# Families of common full CJK fonts, tried after the bundled subset (in this order).
_SYSTEM_CJK_HINTS = (
    "Noto Sans CJK SC",
    "Noto Sans CJK TC",
    "Noto Sans CJK JP",
    "Noto Sans SC",
    "Source Han Sans SC",
    "Source Han Sans CN",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "Microsoft YaHei",
    "SimHei",
    "PingFang SC",
    "Hiragino Sans GB",
    "Heiti SC",
    "Arial Unicode MS",
    "AR PL UMing CN",
    "Droid Sans Fallback",
)
_SYSTEM_CJK_KEYWORDS = ("cjk", "wenquanyi", "yahei", "simhei", "simsun", "source han", "hei", "ming", "song")

_FAMILIES_CACHE: list[str] | None = None


def require_matplotlib():
    """The matplotlib module; an ImportError that says how to install it (the `plots` extra) when it is missing."""
    try:
        import matplotlib
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "copynat.visualize needs matplotlib; install it with: pip install 'copynat[plots]'"
        ) from err
    return matplotlib


def cjk_font_families() -> list[str]:
    """The font fallback list used for every label: ``["DejaVu Sans", "CopyNat CJK Sans",
    <system CJK fonts>...]``.

    Registers the bundled font with ``matplotlib.font_manager.fontManager.addfont`` on first
    use (in memory only; nothing is written to matplotlib's cache).  Only families that are
    actually available are listed, so matplotlib never warns about a missing family.
    """
    global _FAMILIES_CACHE
    require_matplotlib()
    from matplotlib import font_manager

    manager = font_manager.fontManager
    if _FAMILIES_CACHE is not None and any(f.name == BUNDLED_CJK_FAMILY for f in manager.ttflist):
        return list(_FAMILIES_CACHE)

    families = [_LATIN_FAMILY]
    if BUNDLED_CJK_FONT.is_file():
        if not any(f.name == BUNDLED_CJK_FAMILY for f in manager.ttflist):
            manager.addfont(str(BUNDLED_CJK_FONT))
        families.append(BUNDLED_CJK_FAMILY)

    installed = {f.name for f in manager.ttflist}
    system = [name for name in _SYSTEM_CJK_HINTS if name in installed]
    for name in sorted(installed):
        low = name.lower()
        if name not in system and name != BUNDLED_CJK_FAMILY and any(k in low for k in _SYSTEM_CJK_KEYWORDS):
            system.append(name)
    families += [name for name in system if name not in families]
    _FAMILIES_CACHE = families
    return list(families)


def use_cjk_fonts() -> list[str]:
    """Set ``matplotlib.rcParams["font.family"]`` to :func:`cjk_font_families` so your own
    plots render Chinese/Japanese labels too.  Returns the family list."""
    matplotlib = require_matplotlib()
    families = cjk_font_families()
    matplotlib.rcParams["font.family"] = families
    return families


@contextlib.contextmanager
def _font_context():
    matplotlib = require_matplotlib()
    with matplotlib.rc_context({"font.family": cjk_font_families()}):
        yield


def _new_figure(figsize: tuple[float, float]) -> "Figure":
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _to_numpy(x: Any):
    import numpy as np

    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().to("cpu")
        if x.dtype.is_floating_point or x.dtype.is_complex:
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def _squeeze_to_2d(a, what: str):
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(
            f"{what} must be a 2-D [target, source] matrix (leading size-1 dims are dropped); "
            f"got shape {tuple(a.shape)} -- pick one layer/head first, e.g. weights[layer][0, head]"
        )
    return a


def _save(fig: "Figure", path: str | os.PathLike | None) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)


def _labels(tokens: Sequence[Any] | None, n: int, what: str) -> list[str]:
    if tokens is None:
        return [str(i) for i in range(n)]
    labels = [str(t) for t in tokens]
    if len(labels) != n:
        raise ValueError(f"{what} has {len(labels)} tokens but the matrix has {n} along that axis")
    return labels


def plot_attention(
    weights: Any,
    source_tokens: Sequence[Any] | None,
    target_tokens: Sequence[Any] | None,
    path: str | os.PathLike | None = None,
    title: str | None = None,
    ax: "Axes | None" = None,
    cmap: str = "viridis",
    annotate: bool | None = None,
) -> "Figure":
    """Heatmap of a ``[target, source]`` attention matrix with the tokens as tick labels.

    ``weights`` is a numpy array or torch tensor -- any layer/head of the encoder-decoder
    cross-attention, or the copy attention of the pointer-generator; leading size-1
    dimensions (batch, head) are dropped.  x axis: source tokens, y axis: target tokens,
    with a colorbar.  ``source_tokens``/``target_tokens`` may be ``None`` (positions are
    used).  ``annotate`` writes the value in each cell (default: when the matrix is at most
    12x12).  Draws into ``ax`` when given, else into a new figure; saves a PNG to ``path``
    when given.  Returns the figure.
    """
    require_matplotlib()
    import numpy as np

    a = _squeeze_to_2d(_to_numpy(weights).astype(float), "weights")
    n_tgt, n_src = a.shape
    xlabels = _labels(source_tokens, n_src, "source_tokens")
    ylabels = _labels(target_tokens, n_tgt, "target_tokens")
    with _font_context():
        if ax is None:
            longest_x = max((len(s) for s in xlabels), default=1)
            longest_y = max((len(s) for s in ylabels), default=1)
            width = max(4.0, 0.45 * n_src + 0.09 * longest_y + 2.0)
            height = max(3.0, 0.4 * n_tgt + 0.09 * longest_x + 1.5)
            fig = _new_figure((min(width, 30.0), min(height, 30.0)))
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        finite = a[np.isfinite(a)]
        vmin = 0.0 if finite.size == 0 or finite.min() >= 0 else None
        image = ax.imshow(a, cmap=cmap, aspect="auto", interpolation="nearest", vmin=vmin)
        if max((len(s) for s in xlabels), default=0) <= 2:  # e.g. single CJK characters
            ax.set_xticks(range(n_src), labels=xlabels)
        elif n_src > 6:
            ax.set_xticks(range(n_src), labels=xlabels, rotation=90)
        else:
            ax.set_xticks(range(n_src), labels=xlabels, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(n_tgt), labels=ylabels)
        ax.set_xlabel("source")
        ax.set_ylabel("target")
        if title:
            ax.set_title(title)
        fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
        if annotate is None:
            annotate = n_src <= 12 and n_tgt <= 12
        if annotate:
            hi = np.nanmax(finite) if finite.size else 1.0
            for i in range(n_tgt):
                for j in range(n_src):
                    if np.isfinite(a[i, j]):
                        ax.text(j, i, f"{a[i, j]:.2f}", ha="center", va="center", fontsize=7,
                                color="black" if a[i, j] > 0.6 * hi else "white")
        _save(fig, path)
    return fig


def plot_copy_gate(
    p_gen: Any,
    target_tokens: Sequence[Any] | None,
    path: str | os.PathLike | None = None,
    title: str | None = None,
    ax: "Axes | None" = None,
) -> "Figure":
    """Bar chart of the pointer-generator gate along the output.

    ``p_gen[t]`` is the probability of *generating* token ``t`` from the vocabulary;
    ``1 - p_gen[t]`` is the probability of *copying* it from the source.  Each bar is split
    into the two parts (generate at the bottom, copy on top), y in [0, 1], with the target
    tokens as tick labels.  Accepts a numpy array / torch tensor of shape ``[T]``,
    ``[1, T]`` or ``[T, 1]``.  Returns the figure; saves a PNG to ``path`` when given.
    """
    require_matplotlib()
    import numpy as np

    g = _to_numpy(p_gen).astype(float)
    g = g.reshape(-1) if g.ndim == 2 and 1 in g.shape else g
    while g.ndim > 1 and g.shape[0] == 1:
        g = g[0]
    if g.ndim != 1:
        raise ValueError(f"p_gen must be 1-D [target]; got shape {tuple(g.shape)}")
    if g.size and (np.nanmin(g) < -1e-6 or np.nanmax(g) > 1 + 1e-6):
        raise ValueError("p_gen must be probabilities in [0, 1]")
    g = np.clip(g, 0.0, 1.0)
    labels = _labels(target_tokens, g.shape[0], "target_tokens")
    x = np.arange(g.shape[0])
    with _font_context():
        if ax is None:
            fig = _new_figure((max(4.0, 0.45 * len(labels) + 1.5), 3.2))
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        ax.bar(x, g, color="tab:blue", label="generate (p_gen)")
        ax.bar(x, 1.0 - g, bottom=g, color="tab:orange", label="copy (1 - p_gen)")
        ax.axhline(0.5, color="0.3", lw=0.8, ls="--")
        ax.set_ylim(0.0, 1.0)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_xticks(x, labels=labels, rotation=90 if len(labels) > 8 else 0)
        ax.set_ylabel("p_gen")
        ax.set_xlabel("output token")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        if title:
            ax.set_title(title)
        _save(fig, path)
    return fig


def _mask_to_bool(mask: Any, name: str):
    import numpy as np

    m = _to_numpy(mask)
    m = _squeeze_to_2d(m, f"mask {name!r}")
    if m.dtype == bool:
        return m
    m = m.astype(float)
    if np.isneginf(m).any() or (m < -1e3).any():  # additive mask: 0 = keep, -inf = blocked
        return np.isfinite(m) & (m > -1e3)
    return m != 0


def plot_attention_masks(
    masks: Mapping[str, Any],
    path: str | os.PathLike | None = None,
    tokens: Sequence[Any] | None = None,
    ncols: int | None = None,
    title: str | None = None,
) -> "Figure":
    """A grid of attention-mask pictures, one titled subplot per mask.

    ``masks`` maps a name ("full", "causal", "window (k=2)", "graph", ...) to a
    ``[query, key]`` mask: boolean (``True`` = may attend), 0/1, or additive (``0`` = may
    attend, ``-inf`` = blocked); leading size-1 dims are dropped.  Allowed cells are drawn
    dark, blocked ones light.  ``tokens`` labels both axes of every square mask of that
    size.  Saves a PNG to ``path`` when given; returns the figure.
    """
    require_matplotlib()
    import numpy as np
    from matplotlib.colors import ListedColormap

    if not masks:
        raise ValueError("masks is empty")
    items = [(str(name), _mask_to_bool(m, str(name))) for name, m in masks.items()]
    n = len(items)
    ncols = ncols or min(n, 4)
    nrows = -(-n // ncols)
    size = 2.8
    cmap = ListedColormap(["#f2f2f2", "#1f4e79"])
    with _font_context():
        fig = _new_figure((size * ncols + 0.4, size * nrows + (0.6 if title else 0.3)))
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for ax, (name, m) in zip(axes, items):
            q, k = m.shape
            ax.imshow(m.astype(int), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            if max(q, k) <= 40:  # cell borders
                ax.set_xticks(np.arange(-0.5, k, 1), minor=True)
                ax.set_yticks(np.arange(-0.5, q, 1), minor=True)
                ax.grid(which="minor", color="white", linewidth=0.8)
                ax.tick_params(which="minor", length=0)
            if tokens is not None and len(tokens) == q == k:
                labels = [str(t) for t in tokens]
                short = max((len(s) for s in labels), default=0) <= 2
                ax.set_xticks(range(k), labels=labels, rotation=0 if short else 90, fontsize=7)
                ax.set_yticks(range(q), labels=labels, fontsize=7)
            else:
                ax.set_xticks([])
                ax.set_yticks([])
            ax.set_title(f"{name}\n{int(m.sum())}/{q * k} allowed", fontsize=9)
            ax.set_xlabel("key", fontsize=8)
            ax.set_ylabel("query", fontsize=8)
        for ax in axes[n:]:
            ax.set_visible(False)
        if title:
            fig.suptitle(title)
        _save(fig, path)
    return fig
