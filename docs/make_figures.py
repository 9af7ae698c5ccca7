"""Draw the pictures of docs/lecture.md from the model's own code paths (not hand-drawn masks).

    python docs/make_figures.py                                   # docs/attention_masks.png
    python docs/make_figures.py --model copynat-output            # + docs/copy_attention.png from a trained model

attention_masks.png: the attention weights a CopyNat model actually computes under each mask kind (full encoder
self-attention, truncated window, graph adjacency as a 3-D mask, the decoder's causal self-attention), drawn as
"may attend" cells: a weight is non-zero exactly where the mask allows it.
copy_attention.png: the copy attention and p_gen of a trained model (`copynat-generate --plot`) on a test-split sentence of the echo task (its names never occur in training).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from copynat import CopyNatConfig, CopyNatForConditionalGeneration
from copynat.visualize import plot_attention_masks

HERE = Path(__file__).resolve().parent
TOKENS = ["I", "saw", "a", "saw", "."]  # the lecture's example: two "saw"s with different roles
# A dependency tree of the sentence as graph edges (both directions): I<-saw, saw->saw(object), a<-saw(object), .<-saw
EDGES = [(0, 1), (1, 3), (2, 3), (4, 1)]


def attention_pictures(path: Path) -> None:
    torch.manual_seed(0)
    config = dict(vocab_size=64, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                  decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, attn_implementation="eager")
    source = torch.arange(10, 10 + len(TOKENS))[None]
    adjacency = torch.zeros(1, len(TOKENS), len(TOKENS), dtype=torch.long)
    for a, b in EDGES:
        adjacency[0, a, b] = adjacency[0, b, a] = 1

    def encoder_weights(attention_mask, **overrides):
        model = CopyNatForConditionalGeneration(CopyNatConfig(**config, **overrides)).eval()
        with torch.no_grad():
            out = model.model.encoder(input_ids=source, attention_mask=attention_mask, output_attentions=True)
        return out.attentions[0][0].mean(0)

    model = CopyNatForConditionalGeneration(CopyNatConfig(**config)).eval()
    with torch.no_grad():
        out = model(input_ids=source, decoder_input_ids=source, output_attentions=True)
    masks = {
        "full (encoder)": encoder_weights(None) > 0,
        "truncated window k=1": encoder_weights(None, encoder_attention_window=1) > 0,
        "graph adjacency (3-D mask)": encoder_weights(adjacency) > 0,
        "causal (decoder)": out.decoder_attentions[0][0].mean(0) > 0,
    }
    plot_attention_masks(masks, path=path, tokens=TOKENS, title="where attention weights are non-zero")
    print(f"wrote {path}")


def copy_picture(model_dir: str, path: Path) -> None:
    from copynat.training.cli import generate_main

    generate_main(["--model", model_dir, "--text", "My name is Henoshasha and I live in Wushi.", "--plot", str(path)])
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a trained copynat folder (e.g. the default copynat-train output)")
    args = parser.parse_args()
    attention_pictures(HERE / "attention_masks.png")
    if args.model:
        copy_picture(args.model, HERE / "copy_attention.png")


if __name__ == "__main__":
    main()
