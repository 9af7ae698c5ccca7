"""A tiny hybrid (AT + NAT) echo model folder, as copynat-train saves it, shared by the pipeline, streaming and demo
tests (`tiny_echo_folder`, registered in conftest.py). Seconds to train; it copies some of its names, which is all
the tests need: they check what the pipeline, the streamer and the app do with a model's outputs."""

import json
from pathlib import Path

import pytest


def train_tiny_echo(root: Path) -> Path:
    """Train the model into `root / "echo-tiny"` and return that folder."""
    from copynat.data import make_echo_examples
    from copynat.training.arguments import ModelArguments, TrainArguments
    from copynat.training.data import DataArguments
    from copynat.training.loop import train

    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    for split, size in (("train", 600), ("validation", 8), ("test", 8)):
        rows = [{"source": e["source"], "target": e["target"]} for e in make_echo_examples(size, split)]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                             encoding="utf-8")
    out = root / "echo-tiny"
    train(ModelArguments(d_model=48, layers=1, heads=2, ffn_dim=96, vocab_size=400, decoder_mode="hybrid",
                         nat_training="cmlm", length_prediction="absolute", dropout=0.0),
          DataArguments(train_file=str(data / "train.jsonl"), validation_file=str(data / "validation.jsonl"),
                        test_file=str(data / "test.jsonl"), max_source_length=48, max_target_length=48,
                        cache_dir=str(root / "datasets-cache")),
          TrainArguments(output_dir=str(out), max_steps=150, eval_steps=150, learning_rate=5e-3, warmup_steps=10,
                         max_tokens=2048, eval_decoding="greedy", report_to="none", plot=False,
                         progress_bar=False, num_threads=1, save_steps=10_000))
    return out


@pytest.fixture(scope="session")
def tiny_echo_folder(tmp_path_factory):
    return train_tiny_echo(tmp_path_factory.mktemp("tiny-echo"))


#: The head of a script run in a fresh Python in which `import copynat` fails (copynat not installed): what remote
#: code, a saved pipeline or a Space must do without it.
WITHOUT_COPYNAT = """import importlib.abc, sys


class NoCopynat(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "copynat" or name.startswith("copynat."):
            raise ModuleNotFoundError("copynat is not installed in this Python", name=name)


sys.meta_path.insert(0, NoCopynat())
"""
