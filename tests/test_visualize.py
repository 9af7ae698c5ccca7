"""Tests of copynat.visualize: PNGs are written and CJK labels render without missing glyphs."""

from __future__ import annotations

import io
import logging
import warnings
from contextlib import contextmanager

import pytest

pytest.importorskip("matplotlib")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from copynat import visualize  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SOURCE = ["我", "是", "大木", "博士", "Kuroro", "<eos>"]
TARGET = ["Hello", ",", "大木博士", "!", "你好", "<eos>"]


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 1000


@contextmanager
def _no_missing_glyphs(caplog):
    """Fail if matplotlib reports a missing glyph (as a warning or a log record)."""
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        yield
    messages = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    bad = [m for m in messages if "missing from" in m or "Glyph" in m or "findfont" in m]
    assert not bad, bad


def _masks(n=6):
    idx = torch.arange(n)
    full = torch.ones(n, n, dtype=torch.bool)
    causal = torch.tril(full)
    window = (idx[:, None] - idx[None, :]).abs() <= 1
    graph = torch.eye(n, dtype=torch.bool)
    for a, b in [(0, 1), (1, 2), (2, 4), (3, 5)]:
        graph[a, b] = graph[b, a] = True
    additive = torch.zeros(1, 1, n, n).masked_fill(~causal, float("-inf"))
    return {"full": full, "causal": causal, "window (k=1)": window, "graph": graph, "additive": additive}


def test_glyph_check_detects_missing_cjk(caplog):
    """Sanity check of the detector: plain DejaVu Sans does warn about Chinese glyphs."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with pytest.raises(AssertionError, match="missing"):
        with _no_missing_glyphs(caplog):
            fig = Figure()
            FigureCanvasAgg(fig)
            fig.add_subplot().set_title("我是大木博士", family="DejaVu Sans")
            fig.savefig(io.BytesIO(), format="png")


def test_bundled_cjk_font_is_registered():
    assert visualize.BUNDLED_CJK_FONT.is_file()
    families = visualize.cjk_font_families()
    assert families[0] == "DejaVu Sans"
    assert visualize.BUNDLED_CJK_FAMILY in families
    from matplotlib import font_manager
    from matplotlib.font_manager import FontProperties

    path = font_manager.findfont(FontProperties(family=visualize.BUNDLED_CJK_FAMILY), fallback_to_default=False)
    assert path.endswith("CopyNatCJKSans-Regular.ttf")


@pytest.mark.parametrize("as_tensor", [True, False])
def test_plot_attention_png_with_cjk(tmp_path, caplog, as_tensor):
    weights = torch.softmax(torch.randn(1, len(TARGET), len(SOURCE)), dim=-1)
    if not as_tensor:
        weights = weights[0].numpy()
    path = tmp_path / "sub" / "attention.png"
    with _no_missing_glyphs(caplog):
        fig = visualize.plot_attention(weights, SOURCE, TARGET, path=path, title="复制注意力 copy attention")
    _assert_png(path)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == SOURCE
    assert [t.get_text() for t in ax.get_yticklabels()] == TARGET
    assert len(fig.axes) == 2  # heatmap + colorbar


def test_plot_attention_into_given_axes_and_errors(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    out = visualize.plot_attention(np.eye(3), None, ["a", "b", "c"], ax=ax)
    assert out is fig
    with pytest.raises(ValueError, match="source_tokens"):
        visualize.plot_attention(np.eye(3), ["a"], ["a", "b", "c"])
    with pytest.raises(ValueError, match="2-D"):
        visualize.plot_attention(np.ones((2, 4, 3, 3)), None, None)


def test_plot_copy_gate_png(tmp_path, caplog):
    p_gen = torch.tensor([[0.9, 0.8, 0.05, 0.6, 0.1, 0.95]])
    path = tmp_path / "gate.png"
    with _no_missing_glyphs(caplog):
        fig = visualize.plot_copy_gate(p_gen, TARGET, path=path, title="门控 p_gen")
    _assert_png(path)
    ax = fig.axes[0]
    assert ax.get_ylim() == (0.0, 1.0)
    assert [t.get_text() for t in ax.get_xticklabels()] == TARGET
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        visualize.plot_copy_gate([0.5, 1.5], ["a", "b"])
    with pytest.raises(ValueError, match="target_tokens"):
        visualize.plot_copy_gate([0.5, 0.5], ["a"])


def test_plot_attention_masks_png(tmp_path, caplog):
    path = tmp_path / "masks.png"
    with _no_missing_glyphs(caplog):
        fig = visualize.plot_attention_masks(_masks(), path, tokens=list("我是大木博士"), title="attention masks")
    _assert_png(path)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title().split("\n")[0] for ax in visible] == ["full", "causal", "window (k=1)", "graph", "additive"]
    # the additive (-inf) mask is read as the causal mask
    assert visible[4].get_title().split("\n")[1] == visible[1].get_title().split("\n")[1] == "21/36 allowed"
    with pytest.raises(ValueError):
        visualize.plot_attention_masks({}, tmp_path / "empty.png")


def test_use_cjk_fonts_sets_rcparams(caplog):
    import matplotlib

    with matplotlib.rc_context():
        families = visualize.use_cjk_fonts()
        assert matplotlib.rcParams["font.family"] == families
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        with _no_missing_glyphs(caplog):
            fig = Figure()
            FigureCanvasAgg(fig)
            fig.add_subplot().set_title("你好，世界")
            fig.savefig(io.BytesIO(), format="png")
