"""Before/after timing of the same calls on two checkouts of copynat (a redesign must not slow them).

    git worktree add ../before <commit>
    for i in 1 2 3; do PYTHONPATH=../before python benchmarks/code_ab.py before; \
                       PYTHONPATH=.         python benchmarks/code_ab.py after; done

Each process builds the same hybrid copy model (the small preset's size: d_model 256, 3+3 layers, vocabulary 8,000;
CMLM, so both sides have a length predictor) from the same seed and prints the median of 7 timings (ms) of: AT
greedy at batch 1 and 32 (32 source tokens, exactly 32 output tokens), one NAT pass at batch 1 and 32, and one
training step (forward + backward, batch 32). Alternate the two sides and compare medians across processes: one
process cannot import two versions of the package.
"""

import statistics
import sys
import time

import torch

from copynat import CopyNatConfig, CopyNatForConditionalGeneration

torch.set_num_threads(2)
torch.manual_seed(0)
CONFIG = dict(vocab_size=8000, d_model=256, encoder_layers=3, decoder_layers=3, encoder_attention_heads=4,
              decoder_attention_heads=4, encoder_ffn_dim=1024, decoder_ffn_dim=1024, decoder_mode="hybrid",
              nat_training="cmlm")
model = CopyNatForConditionalGeneration(CopyNatConfig(**CONFIG)).eval()
one = torch.randint(5, 8000, (1, 32), generator=torch.Generator().manual_seed(0))
batch = torch.randint(5, 8000, (32, 32), generator=torch.Generator().manual_seed(0))
labels = torch.randint(5, 8000, (32, 30), generator=torch.Generator().manual_seed(1))


def train_step() -> None:
    model.train()
    model(input_ids=batch, labels=labels, return_logits=False).loss.backward()
    model.zero_grad()
    model.eval()


CASES = {
    "at_greedy_batch1": lambda: model.generate(one, min_new_tokens=32, max_new_tokens=32),
    "nat_pass_batch1": lambda: model.generate(one, non_autoregressive=True),
    "at_greedy_batch32": lambda: model.generate(batch, min_new_tokens=32, max_new_tokens=32),
    "nat_pass_batch32": lambda: model.generate(batch, non_autoregressive=True),
    "train_step_batch32": train_step,
}

if __name__ == "__main__":
    medians = {}
    for name, call in CASES.items():
        call()
        samples = []
        for _ in range(7):
            start = time.perf_counter()
            call()
            samples.append(time.perf_counter() - start)
        medians[name] = round(1000 * statistics.median(samples), 2)
    print(sys.argv[1] if len(sys.argv) > 1 else "run", medians)
