"""Architecture figures of the documentation, drawn with matplotlib at build time.

``draw_all(folder)`` writes ``allinone.svg`` (the all-in-one idea), ``promptir.svg`` (PromptIR's
U-Net with its prompt blocks) and ``pip.svg`` (where PIP sits in a U-Net and what one PIP block
does). Run ``python docs/_figures.py`` to draw them without building the site.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

COLORS = {
    "enc": "#cfe2f3",
    "dec": "#d9ead3",
    "prompt": "#fce5cd",
    "pip": "#f4cccc",
    "io": "#eeeeee",
    "latent": "#d9d2e9",
    "op": "#fff2cc",
}


def _box(ax, x: float, y: float, w: float, h: float, text: str, kind: str, size: float = 9) -> tuple:
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                fc=COLORS[kind], ec="#444444", lw=1.0))  # fmt: skip
    ax.text(x, y, text, ha="center", va="center", fontsize=size, family="sans-serif")
    return (x, y, w, h)


def _arrow(ax, a: tuple[float, float], b: tuple[float, float], style: str = "-|>", dashed: bool = False,
           color: str = "#333333", rad: float = 0.0) -> None:  # fmt: skip
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=11, lw=1.1, color=color,
                                 linestyle="--" if dashed else "-", connectionstyle=f"arc3,rad={rad}"))  # fmt: skip


def _canvas(w: float, h: float):
    fig, ax = plt.subplots(figsize=(w, h))
    ax.set_xlim(0, w * 2)
    ax.set_ylim(0, h * 2)
    ax.axis("off")
    return fig, ax


def _save(fig, path: Path) -> None:
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "allinone-ir"}):
        fig.savefig(path, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)


def draw_allinone(path: Path) -> None:
    """One network for many degradations: degraded inputs -> one model -> clean outputs."""
    fig, ax = _canvas(8, 3.2)
    kinds = ["noise", "rain", "haze", "snow", "blur", "low light"]
    ys = [5.6 - i * 0.95 for i in range(len(kinds))]
    for name, y in zip(kinds, ys):
        _box(ax, 1.6, y, 2.2, 0.7, f"{name}", "io")
        _arrow(ax, (2.75, y), (6.3, 3.2), color="#777777")
        _arrow(ax, (9.7, 3.2), (13.2, y), color="#777777")
        _box(ax, 14.4, y, 2.2, 0.7, "clean", "dec")
    _box(ax, 8.0, 3.2, 3.2, 2.4, "one network\n(PromptIR / PIP)\n\nprompts adapt it\nto the degradation", "latent",
         size=10)  # fmt: skip
    ax.text(1.6, 6.35, "degraded input", ha="center", fontsize=10, weight="bold")
    ax.text(14.4, 6.35, "restored output", ha="center", fontsize=10, weight="bold")
    _save(fig, path)


def draw_promptir(path: Path) -> None:
    """PromptIR: Restormer U-Net whose decoder levels receive generated prompts."""
    fig, ax = _canvas(9, 5.2)
    enc = [(2.4, 8.6, "Encoder L1\n4 TB, 48 ch"), (2.4, 6.4, "Encoder L2\n6 TB, 96 ch"),
           (2.4, 4.2, "Encoder L3\n6 TB, 192 ch")]  # fmt: skip
    _box(ax, 2.4, 10.0, 2.6, 0.6, "image (3, H, W)", "io")
    _arrow(ax, (2.4, 9.7), (2.4, 9.1))
    for i, (x, y, t) in enumerate(enc):
        _box(ax, x, y, 2.6, 0.9, t, "enc")
        if i < 2:
            _arrow(ax, (x, y - 0.45), (x, y - 1.75))
        else:
            ax.plot([x, x], [y - 0.45, 2.45], color="#333333", lw=1.1)
        ax.text(x + 0.15, y - 1.1, "down (conv + unshuffle)", fontsize=7, color="#555555")
    _box(ax, 9.0, 2.0, 3.0, 0.9, "Latent\n8 TB, 384 ch", "latent")
    ax.plot([2.4, 2.4], [2.45, 2.0], color="#333333", lw=1.1)
    _arrow(ax, (2.4, 2.0), (7.5, 2.0))
    # decoder with prompt blocks
    pb = [(9.0, 3.6, "Prompt block 3"), (12.3, 5.4, "Prompt block 2"), (12.3, 7.6, "Prompt block 1")]
    dec = [(12.3, 4.2, "Decoder L3\n6 TB, 192 ch"), (12.3, 6.4, "Decoder L2\n6 TB, 96 ch"),
           (12.3, 8.6, "Decoder L1\n4 TB, 96 ch")]  # fmt: skip
    _box(ax, *pb[0][:2], 2.6, 0.6, pb[0][2], "prompt")
    _arrow(ax, (9.0, 2.45), (9.0, 3.3))
    _arrow(ax, (10.3, 3.6), (11.0, 4.0))
    ax.text(10.2, 3.05, "up + concat skip", fontsize=7, color="#555555")
    _box(ax, *dec[0][:2], 2.6, 0.9, dec[0][2], "dec")
    _box(ax, *pb[1][:2], 2.6, 0.5, pb[1][2], "prompt")
    _arrow(ax, (12.3, 4.65), (12.3, 5.15))
    _box(ax, *dec[1][:2], 2.6, 0.9, dec[1][2], "dec")
    _arrow(ax, (12.3, 5.65), (12.3, 5.95))
    _box(ax, *pb[2][:2], 2.6, 0.5, pb[2][2], "prompt")
    _arrow(ax, (12.3, 6.85), (12.3, 7.35))
    _box(ax, *dec[2][:2], 2.6, 0.9, dec[2][2], "dec")
    _arrow(ax, (12.3, 7.85), (12.3, 8.15))
    # skips
    for (ex, ey, _), (dx, dy, _) in zip(enc, reversed(dec)):
        _arrow(ax, (ex + 1.3, ey), (dx - 1.3, dy), dashed=True, color="#3d85c6")
    ax.text(7.2, 8.75, "skip connections (concat)", fontsize=8, color="#3d85c6", ha="center")
    _box(ax, 12.3, 9.9, 2.6, 0.6, "Refinement 4 TB", "dec")
    _arrow(ax, (12.3, 9.05), (12.3, 9.6))
    _box(ax, 16.1, 9.9, 3.0, 0.6, "conv 3x3, + image", "io")
    _arrow(ax, (13.6, 9.9), (14.6, 9.9))
    # prompt block inset
    ax.add_patch(FancyBboxPatch((14.0, 1.0), 3.8, 7.2, boxstyle="round,pad=0.05", fc="white", ec="#b45f06",
                                lw=1.0, ls="--"))  # fmt: skip
    ax.text(15.9, 7.85, "Prompt block", ha="center", fontsize=9, weight="bold", color="#b45f06")
    steps = ["feature F", "global avg pool\n-> linear -> softmax", "weights over 5\nlearned prompts",
             "weighted sum -> resize\nto H x W -> conv 3x3", "concat(F, prompt)\n-> Transformer block",
             "conv 1x1 -> F'"]  # fmt: skip
    for i, s in enumerate(steps):
        y = 7.2 - i * 1.15
        _box(ax, 15.9, y, 3.3, 0.8, s, "prompt" if 0 < i < 4 else "op", size=7.5)
        if i:
            _arrow(ax, (15.9, y + 0.75), (15.9, y + 0.4))
    ax.text(15.9, 0.6, "PGM (generation) + PIM (interaction)", ha="center", fontsize=7.5, color="#555555")
    ax.text(0.3, 0.4, "TB = Restormer Transformer block (MDTA attention over channels + GDFN)", fontsize=8,
            color="#555555")  # fmt: skip
    _save(fig, path)


def draw_pip(path: Path) -> None:
    """PIP: where the block sits (left) and what it computes (right)."""
    fig, ax = _canvas(10, 4.8)
    # left: placement on skip connections
    ax.text(3.2, 9.2, "PIP on the skips of a U-Net", ha="center", fontsize=10, weight="bold")
    for i in range(3):
        y = 8.0 - i * 2.2
        _box(ax, 1.2, y, 1.8, 0.8, f"encoder {i + 1}", "enc", size=8)
        _box(ax, 5.4, y, 1.8, 0.8, f"decoder {i + 1}", "dec", size=8)
        _box(ax, 3.3, y, 1.2, 0.6, "PIP", "pip", size=8)
        _arrow(ax, (2.1, y), (2.7, y))
        _arrow(ax, (3.9, y), (4.5, y))
        if i < 2:
            _arrow(ax, (1.2, y - 0.4), (1.2, y - 1.8))
            _arrow(ax, (5.4, y - 1.8), (5.4, y - 0.4))
    _box(ax, 3.3, 1.3, 2.2, 0.7, "latent", "latent", size=8)
    _arrow(ax, (1.2, 3.2), (2.2, 1.3))
    _arrow(ax, (4.4, 1.3), (5.4, 3.2))
    _box(ax, 3.3, 0.3, 4.2, 0.5, "omega: labels, weights, names or classifier", "io", size=7.5)
    # right: one block
    x0 = 8.0
    ax.add_patch(FancyBboxPatch((x0, 0.2), 11.6, 9.0, boxstyle="round,pad=0.05", fc="white", ec="#990000",
                                lw=1.0, ls="--"))  # fmt: skip
    ax.text(x0 + 5.8, 8.85, "one PIP block", ha="center", fontsize=10, weight="bold", color="#990000")
    _box(ax, x0 + 1.6, 7.8, 2.6, 0.7, "skip feature F\n(c, H, W)", "enc", size=8)
    _box(ax, x0 + 5.6, 7.8, 3.9, 0.7, "omega (N, T), e.g.\nrain 0.5 + noise 0.5", "io", size=8)
    _box(ax, x0 + 9.9, 7.8, 3.8, 0.7, "degradation prompts\nd_1 .. d_T, (C, 1, 1)", "pip", size=8)
    _box(ax, x0 + 7.6, 6.3, 3.2, 0.7, "mean_t omega_t d_t", "op", size=8)
    _arrow(ax, (x0 + 5.6, 7.45), (x0 + 7.0, 6.65))
    _arrow(ax, (x0 + 9.6, 7.45), (x0 + 8.2, 6.65))
    _box(ax, x0 + 3.2, 6.3, 3.2, 0.7, "resize F to S x S,\npad/cut to C channels", "op", size=8)
    _arrow(ax, (x0 + 1.6, 7.45), (x0 + 2.6, 6.65))
    _box(ax, x0 + 5.4, 4.9, 2.2, 0.7, "D = product", "op", size=8)
    _arrow(ax, (x0 + 3.2, 5.95), (x0 + 4.8, 5.25))
    _arrow(ax, (x0 + 7.6, 5.95), (x0 + 6.0, 5.25))
    _box(ax, x0 + 9.7, 4.9, 3.2, 0.7, "basic restoration\nprompt B, (C, S, S)", "pip", size=8)
    _box(ax, x0 + 7.5, 3.4, 5.6, 0.9, "P2P: cross-attention Q = B, K,V = D\n+ GDFN  ->  universal prompt U",
         "pip", size=8)  # fmt: skip
    _arrow(ax, (x0 + 5.4, 4.55), (x0 + 6.6, 3.85))
    _arrow(ax, (x0 + 9.7, 4.55), (x0 + 8.5, 3.85))
    _box(ax, x0 + 7.6, 1.9, 7.4, 0.9, "selective P2F: channel cross-attention Q = F, K,V = U\n"
         "four top-m masks (m = c/2, 2c/3, 3c/4, 4c/5), learned mix", "pip", size=7.5)  # fmt: skip
    _arrow(ax, (x0 + 7.5, 2.95), (x0 + 7.5, 2.35))
    _arrow(ax, (x0 + 0.7, 7.45), (x0 + 3.9, 1.9), dashed=True, color="#3d85c6", rad=0.3)
    _box(ax, x0 + 7.5, 0.7, 3.6, 0.6, "modulated F -> decoder", "dec", size=8)
    _arrow(ax, (x0 + 7.5, 1.45), (x0 + 7.5, 1.0))
    _save(fig, path)


def draw_all(folder: str | Path) -> list[Path]:
    """Draw every figure into ``folder`` and return the paths written."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fn in (("allinone", draw_allinone), ("promptir", draw_promptir), ("pip", draw_pip)):
        p = out / f"{name}.svg"
        fn(p)
        paths.append(p)
    return paths


if __name__ == "__main__":
    for p in draw_all(Path(__file__).resolve().parent / "generated" / "figures"):
        print(p)
