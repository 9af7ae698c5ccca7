"""copynat demo: type a sentence, see what each decoding makes of it, how fast, and what it copied from where.

Run it locally with `copynat-demo --model DIR_OR_HUB_ID` (pip install "copynat[demo]"), or as a Hugging Face
Space: `copynat-push FOLDER --repo_id org/name --with_demo` publishes this file, with the model id filled in, and a
requirements.txt beside the model. The app needs gradio, transformers and torch only: where copynat is not
installed it runs the model folder's own code (`pipeline(model=..., trust_remote_code=True)`).

The copied spans come from the copy head (`return_copy_spans=True`: p_gen and the copy attention); the picture is
the copy attention of the greedy output, drawn as an HTML table so that the browser's fonts show any script.
"""

from __future__ import annotations

import argparse
import html
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

#: The model the app shows when none is given; copynat-push --with_demo writes the pushed repo id here.
DEFAULT_MODEL: str | None = None

#: The decodings shown side by side: a heading, and the pipeline keywords for it.
DECODINGS: dict[str, dict[str, Any]] = {
    "greedy": {"decoding": "greedy"},
    "beam search (4 beams)": {"decoding": "beam", "num_beams": 4},
    "parallel (one pass)": {"decoding": "parallel"},
    "drafted (parallel draft, greedy check)": {"decoding": "drafted"},
}
EXAMPLES = ["我是庫洛洛。", "My name is Henoshasha and I live in Wushi.", "Please call me at 0912-345-678.",
            "Hi, I am Anna-Lena O'Brien."]
COPIED = "copied"
COLORS = {COPIED: "#ffb347"}
TIMED_RUNS = 3  # latency: the median of this many calls


def load_generator(model: str, device: str | None = None):
    """The copynat pipeline for `model` (a folder or Hub id): copynat's own classes when copynat is installed, else
    the code saved with the model."""
    from transformers import pipeline

    try:
        import copynat  # noqa: F401  (registers the text2text-generation task for copynat models)
    except ImportError:
        return pipeline(model=model, trust_remote_code=True, device=device)
    return pipeline("text2text-generation", model=model, device=device)


def available_decodings(generator) -> tuple[dict[str, dict], dict[str, str]]:
    """(the decodings this model runs, {heading: why not} for the others): a model trained without the parallel
    decoder cannot decode in parallel, and drafted decoding needs a copynat version that has it."""
    usable, unusable = {}, {}
    for heading, keywords in DECODINGS.items():
        try:
            generator("ok", max_new_tokens=2, **keywords)
        except (ValueError, TypeError) as err:
            why = " ".join(str(err).split())
            unusable[heading] = why if len(why) <= 200 else why[:200] + "..."
        else:
            usable[heading] = keywords
    return usable, unusable


def run_decodings(generator, text: str, decodings: dict[str, dict]) -> dict[str, dict]:
    """Per decoding: the output, its copied spans and copy-head numbers, and the latency of the plain call."""
    results = {}
    for heading, keywords in decodings.items():
        times = []
        for _ in range(TIMED_RUNS):
            start = time.perf_counter()
            generator(text, **keywords)
            times.append(time.perf_counter() - start)
        result = generator(text, return_copy_spans=True, return_copy_info=True, **keywords)[0]
        results[heading] = {"text": result["generated_text"], "copy_spans": result["copy_spans"],
                            "copy_info": result["copy_info"], "latency_ms": round(1000 * statistics.median(times), 2)}
    return results


def highlighted(text: str, spans: Sequence[dict], side: str) -> list[tuple[str, str | None]]:
    """`text` cut into (piece, "copied" or None) for gr.HighlightedText; `side`: "output" or "source" offsets."""
    pieces, position = [], 0
    for start, end in sorted((span[f"{side}_start"], span[f"{side}_end"]) for span in spans):
        if start < position:  # a source span that two output spans copied: show it once
            start = position
        if start >= end:
            continue
        if start > position:
            pieces.append((text[position:start], None))
        pieces.append((text[start:end], COPIED))
        position = end
    if position < len(text):
        pieces.append((text[position:], None))
    return pieces


def attention_table(info: dict) -> str:
    """The copy attention as an HTML heatmap: a row per output token, a column per source token, and the copy share
    (1 - p_gen) of each output token at the end of its row."""
    def label(token: str) -> str:
        return html.escape(token.strip() or "·")  # "·": a special token, or a byte piece inside a character

    cell = 'style="background: rgba(255, 140, 0, {alpha:.2f}); width: 1.6em; text-align: center"'
    header = "".join(f'<th class="cn-src">{label(token)}</th>' for token in info["source_tokens"])
    rows = []
    for token, weights, p_gen in zip(info["output_tokens"], info["copy_attention"], info["p_gen"]):
        cells = "".join(f'<td {cell.format(alpha=w)} title="{w:.2f}"></td>' for w in weights)
        rows.append(f'<tr><th>{label(token)}</th>{cells}<td class="cn-copy">{1 - p_gen:.2f}</td></tr>')
    return ('<div class="cn-attention"><table><thead><tr><th>output \\ source</th>' + header +
            '<th>copy</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>"
            "<p>Darker: more copy attention. copy = 1 - p_gen, the copy route's share.</p></div>")


CSS = """
.cn-attention table { border-collapse: collapse; font-size: 0.85em; }
.cn-attention th, .cn-attention td { border: 1px solid #ddd; padding: 2px 4px; }
.cn-attention .cn-src { writing-mode: vertical-rl; }
.cn-latency { font-size: 0.9em; color: #555; }
"""


def build_demo(generator, title: str = "copynat"):
    """The Gradio app for `generator` (a copynat pipeline). Its API endpoint `/generate` takes a sentence and returns
    every output component, the last one a JSON of all results."""
    import gradio as gr

    decodings, unusable = available_decodings(generator)
    with gr.Blocks(title=f"{title} demo") as demo:
        gr.Markdown(f"# {html.escape(title)}\nType a sentence: each decoding's reply, its latency (median of "
                    f"{TIMED_RUNS} calls), and the spans the copy head copied, highlighted in the reply and in your "
                    "sentence.")
        with gr.Row():
            source = gr.Textbox(label="your sentence", value=EXAMPLES[0], scale=4, elem_id="cn-input")
            button = gr.Button("Generate", variant="primary", scale=1, elem_id="cn-generate")
        gr.Examples(EXAMPLES, inputs=source)
        source_view = gr.HighlightedText(label="copied from (greedy)", color_map=COLORS, show_inline_category=False,
                                         elem_id="cn-source")
        outputs = []
        with gr.Row():
            for heading in decodings:
                with gr.Column(min_width=220):
                    outputs.append(gr.HighlightedText(label=heading, color_map=COLORS, show_inline_category=False))
                    outputs.append(gr.Markdown(elem_classes=["cn-latency"]))
        if unusable:
            gr.Markdown("Not available for this model: " + "; ".join(
                f"**{heading}** ({html.escape(why)})" for heading, why in unusable.items()))
        gr.Markdown("### Copy attention of the greedy reply")
        picture = gr.HTML()
        with gr.Accordion("all results (JSON)", open=False):
            raw = gr.JSON(label="all results")

        def generate(text: str):
            if not text.strip():
                raise gr.Error("Type a sentence first.")
            results = run_decodings(generator, text, decodings)
            views = []
            for heading, result in results.items():
                views.append(highlighted(result["text"], result["copy_spans"], "output"))
                views.append(f"{result['latency_ms']:.1f} ms · {len(result['copy_spans'])} copied span(s)")
            first = next(iter(results.values()))
            return [highlighted(text, first["copy_spans"], "source"), *views, attention_table(first["copy_info"]),
                    {heading: {key: value for key, value in result.items() if key != "copy_info"}
                     for heading, result in results.items()}]

        components = [source_view, *outputs, picture, raw]
        button.click(generate, inputs=source, outputs=components, api_name="generate")
        source.submit(generate, inputs=source, outputs=components, api_visibility="undocumented")
    return demo


def default_model() -> str | None:
    """The --model default: $COPYNAT_MODEL, the id copynat-push wrote, or the model folder this file sits in."""
    here = Path(__file__).resolve().parent
    return os.environ.get("COPYNAT_MODEL") or DEFAULT_MODEL or (str(here) if (here / "config.json").is_file() else None)


def main(argv: Sequence[str] | None = None) -> int:
    """`copynat-demo --model DIR_OR_HUB_ID`: serve the demo (on 127.0.0.1:7860 unless told otherwise)."""
    parser = argparse.ArgumentParser(prog="copynat-demo", description="Serve the copynat demo app (Gradio).")
    parser.add_argument("--model", default=default_model(), help="Model folder or Hub id (default: $COPYNAT_MODEL, "
                                                                 "or the folder holding this app).")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="Address to serve on (default 127.0.0.1: this machine only).")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--device", default=None, help="torch device of the model (default: the pipeline's).")
    parser.add_argument("--share", action="store_true", help="Also open a public gradio.live link.")
    args = parser.parse_args(argv)
    if not args.model:
        parser.error("--model is required (a model folder or Hub id)")
    try:
        import gradio  # noqa: F401
    except ImportError:
        print('copynat-demo: error: the demo needs gradio: pip install "copynat[demo]"', file=sys.stderr)
        return 2
    generator = load_generator(args.model, args.device)
    demo = build_demo(generator, title=f"copynat: {Path(args.model).name}")
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, css=CSS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
