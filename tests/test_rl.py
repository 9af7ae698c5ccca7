"""Sequence-level training on the metric: self-critical REINFORCE raises the reward it optimises."""

import torch
from conftest import PLAIN_COPY, copy_task_batch, tiny_config, train_steps

from copynat import CopyNatForConditionalGeneration
from copynat.training.rl import _decoder_labels, self_critical_loss, sentence_rewards


def ids_to_text(ids: torch.Tensor) -> list[str]:
    """Token ids -> 'word' strings (one word per id, stopping at </s>), so sentence BLEU can score them."""
    texts = []
    for row in ids.tolist():
        words = []
        for token in row:
            if token == 2:
                break
            if token > 3:
                words.append(f"w{token}")
        texts.append(" ".join(words))
    return texts


def test_rewards_and_sample_labels():
    rewards = sentence_rewards(["a b c d", "x y"], ["a b c d", "a b c d"], "chrf")
    assert rewards[0] == 1.0 and 0.0 <= rewards[1] < 0.1
    generated = torch.tensor([[1, 7, 8, 2, 0, 0], [1, 9, 2, 5, 5, 0]])  # decoder start <s> (1), </s> is 2
    assert _decoder_labels(generated, 1, 2, 0).tolist() == [[7, 8, 2, -100, -100], [9, 2, -100, -100, -100]]


def test_self_critical_training_raises_the_greedy_reward():
    torch.manual_seed(0)
    # the plain pointer-generator: with copynat's copy additions a 60-update model already copies perfectly
    model = CopyNatForConditionalGeneration(tiny_config(**PLAIN_COPY))
    generator = torch.Generator().manual_seed(0)
    train_steps(model, 60, lambda step: copy_task_batch(32, 5, generator, high=20))  # a half-trained start
    eval_source, eval_target = copy_task_batch(64, 5, torch.Generator().manual_seed(99), high=20)
    references = ids_to_text(eval_target)

    def greedy_reward() -> float:
        model.eval()
        with torch.no_grad():
            out = model.generate(input_ids=eval_source, attention_mask=torch.ones_like(eval_source), max_new_tokens=8)
        return float(sentence_rewards(ids_to_text(out[:, 1:]), references, "chrf").mean())

    before = greedy_reward()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    advantages = []
    for _ in range(40):
        source, target = copy_task_batch(32, 5, generator, high=20)
        model.train()
        loss, stats = self_critical_loss(model, source, torch.ones_like(source), ids_to_text(target),
                                         lambda ids: ids_to_text(ids[:, 1:]), metric="chrf", max_new_tokens=8)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        advantages.append(stats["reward_sample"] - stats["reward_greedy"])
        assert torch.isfinite(loss)
    after = greedy_reward()
    assert 0.3 < before < 0.6  # a model that copies some tokens: room to improve
    assert after > before + 0.05, (before, after)  # measured: 0.455 -> 0.536


def test_copynat_train_objective_rl_fine_tunes_a_trained_model(tmp_path, capsys):
    import json

    import pytest
    from test_training_loop import tiny_args

    from copynat.data import make_echo_dataset
    from copynat.training.cli import train_main

    data = tmp_path / "data"
    data.mkdir()
    for split, ds in make_echo_dataset(num_train=200, num_validation=20, num_test=20).items():
        (data / f"{split}.jsonl").write_text("".join(json.dumps({"source": r["source"], "target": r["target"]}) + "\n"
                                                     for r in ds))
    assert train_main(tiny_args(data, tmp_path / "mle", steps=20)) == 0
    rl_args = tiny_args(data, tmp_path / "rl", "--model_name_or_path", str(tmp_path / "mle"), "--objective", "rl",
                        "--rl_reward", "chrf", "--eval_steps", "5", steps=5)
    for flag in ("--d_model", "--ffn_dim", "--heads", "--vocab_size"):  # fixed by the trained model
        index = rl_args.index(flag)
        del rl_args[index:index + 2]
    assert train_main(rl_args) == 0
    results = json.loads((tmp_path / "rl" / "results.json").read_text())
    assert results["training"]["objective"] == "rl"
    events = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    rewards = [e for e in events if e["event"] == "train" and "reward_sample" in e]
    assert rewards and all(0.0 <= e["reward_sample"] <= 1.0 and 0.0 <= e["reward_greedy"] <= 1.0 for e in rewards)

    with pytest.raises(SystemExit):  # sampling from an untrained model earns nothing: refused with a reason
        train_main(tiny_args(data, tmp_path / "scratch", "--objective", "rl", steps=5))
    assert "--objective rl fine-tunes a trained model" in capsys.readouterr().err
