"""Shared fixtures: tiny configs and a small trained copy-task model (seconds on a CPU)."""

import pytest
import torch

from copynat import CopyNatConfig, CopyNatForConditionalGeneration

VOCAB = 64
# Tiny models gain nothing from intra-op threads, and spinning threads make the suite crawl when the machine is busy.
torch.set_num_threads(1)


#: The pointer-generator without copynat's copy additions (location, previous-token keys, respacing).
PLAIN_COPY = dict(copy_location=False, copy_previous_token_keys=False, copy_respace=False)


def tiny_config(**overrides) -> CopyNatConfig:
    # cmlm: most NAT tests exercise the length predictor and mask-predict; the CTC tests (today's default) say ctc
    settings = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                    decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, dropout=0.0,
                    max_position_embeddings=64, length_classes=32, nat_training="cmlm")
    settings.update(overrides)
    return CopyNatConfig(**settings)


def copy_task_batch(batch: int, length: int, generator: torch.Generator, low: int = 5, high: int = VOCAB):
    """Fixed-length copy task: target = source tokens, then </s>."""
    tokens = torch.randint(low, high, (batch, length), generator=generator)
    source = torch.cat((tokens, torch.full((batch, 1), 2)), dim=1)
    return source, source.clone()


def train_steps(model, steps: int, batch_fn, lr: float = 3e-3, seed: int = 0) -> list[float]:
    torch.manual_seed(seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        input_ids, labels = batch_fn(step)
        loss = model(input_ids=input_ids, attention_mask=(input_ids != 0).long(), labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def trained_hybrid_model():
    """A hybrid (AT + NAT) copy model trained on the fixed-length copy task: decodes both ways."""
    torch.manual_seed(0)
    model = CopyNatForConditionalGeneration(tiny_config(decoder_mode="hybrid", length_prediction="absolute"))
    generator = torch.Generator().manual_seed(0)
    train_steps(model, 250, lambda step: copy_task_batch(32, 6, generator))
    return model.eval()


from hub_server import hub_server  # noqa: E402,F401  (fake Hugging Face Hub fixture, tests/hub_server.py)
from tiny_echo import tiny_echo_folder  # noqa: E402,F401  (a tiny trained echo model folder, tests/tiny_echo.py)
