"""Shared helpers of the model speed benchmarks (`speed.py`, `nat_speed.py`).

Every speed aim is a ratio against a baseline measured in the same run, because this machine is shared and noisy.
To keep the ratios fair under changing load, the cases of one comparison are timed *interleaved*: one repeat of
every case per round, in alternating order, so that a burst of load hits all of them alike. We report the median.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import random
import resource
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# The model size of issues 2, 4 and 5 (copynat's defaults, spelled out so the benchmark does not drift with them).
MODEL_SIZE = dict(vocab_size=8000, d_model=256, encoder_layers=3, decoder_layers=3, encoder_attention_heads=4,
                  decoder_attention_heads=4, encoder_ffn_dim=1024, decoder_ffn_dim=1024)
FIRST_REGULAR_ID = 5  # ids 0..4 are copynat's <pad> <s> </s> <unk> <mask>; random data avoids them


def setup(seed: int = 0, threads: int = 2) -> None:
    """Seed everything and pin the intra-op thread count (2 = this machine's cores)."""
    torch.set_num_threads(threads)
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy

        numpy.random.seed(seed)
    except ImportError:  # numpy is optional here
        pass


def random_ids(batch: int, length: int, vocab_size: int = MODEL_SIZE["vocab_size"], seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(FIRST_REGULAR_ID, vocab_size, (batch, length), generator=generator)


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters (tied weights counted once, as `model.parameters()` does)."""
    return sum(p.numel() for p in model.parameters())


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all processes spent busy since boot (Linux /proc/stat), None elsewhere."""
    try:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Contention:
    """Tracks how many cores *other* processes kept busy while we timed (machine-wide busy CPU time minus our own).
    With 2 threads on 2 cores, one busy foreign process makes every parallel op wait for a descheduled thread, which
    inflates op-heavy workloads (many small kernels) more than matmul-heavy ones: ratios then lean, not just shift."""

    def __init__(self):
        self.foreign_cpu = 0.0
        self.wall = 0.0

    def measure(self, fn: Callable[[], Any]) -> float:
        busy, own, start = _busy_cpu_seconds(), _own_cpu_seconds(), time.perf_counter()
        fn()
        wall = time.perf_counter() - start
        if busy is not None:
            self.foreign_cpu += max(0.0, (_busy_cpu_seconds() - busy) - (_own_cpu_seconds() - own))
            self.wall += wall
        return wall

    @property
    def foreign_cores(self) -> float | None:
        return self.foreign_cpu / self.wall if self.wall > 0 else None


CONTENTION = Contention()  # over every timed sample of the run


class Budget:
    """Wall-clock budget of a run, shared out among its remaining timed sections, so that a shared (slow) machine
    gets fewer rounds rather than a run of half an hour. Without seconds, no limit."""

    def __init__(self, seconds: float | None):
        self.end = time.perf_counter() + seconds if seconds else None

    def section_deadline(self, remaining_sections: int) -> float | None:
        if self.end is None:
            return None
        now = time.perf_counter()
        return now + max(0.0, self.end - now) / max(1, remaining_sections)


def time_interleaved(cases: dict[str, Callable[[], Any]], repeats: int, warmup: int = 2,
                     deadline: float | None = None, min_repeats: int = 3) -> dict[str, list[float]]:
    """Seconds per call of each case: `warmup` untimed rounds, then up to `repeats` timed rounds, each round running
    every case once (order reversed every other round). Past `deadline` (a perf_counter time) no new round starts
    once `min_repeats` are done."""
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        if deadline is not None and round_index >= min_repeats and time.perf_counter() > deadline:
            break
        for name in names if round_index % 2 == 0 else reversed(names):
            gc.collect()
            times[name].append(CONTENTION.measure(cases[name]))
    return times


def summarize(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    quartiles = statistics.quantiles(ordered, n=4) if len(ordered) >= 2 else [ordered[0]] * 3
    return {"median": statistics.median(ordered), "min": ordered[0], "max": ordered[-1], "q1": quartiles[0],
            "q3": quartiles[2], "n": len(ordered)}


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of numerator[i] / denominator[i]: the same round's samples share the load of the moment."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def verdict(value: float, aim: float, higher_is_better: bool = True) -> str:
    ok = value >= aim if higher_is_better else value <= aim
    return "met" if ok else "MISSED"


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def load_note(env: dict[str, Any]) -> str:
    """One line on how much other processes competed for the CPU while we timed; a warning when they did."""
    cores = env["cpu_count"] or 1
    start, end = env["load_average_at_start"][0], os.getloadavg()[0]
    env["load_average_at_end"] = os.getloadavg()
    foreign = CONTENTION.foreign_cores
    env["foreign_busy_cores_while_timing"] = foreign
    line = f"1-min load average {start:.1f} at start, {end:.1f} at end on {cores} cores"
    if foreign is None:
        return line + "."
    line += f"; other processes kept {foreign:.2f} cores busy on average while we timed"
    if foreign > 0.25:
        line += ". WARNING: the machine was shared; absolute times are inflated and the ratios, taken from interleaved " \
                "rounds, are noisier"
        if torch.get_num_threads() > 1:
            line += (f". With {torch.get_num_threads()} threads a busy core also stalls every parallel op on its "
                     "descheduled thread, which penalizes op-heavy cases (AR decoding steps, small batches) more than "
                     "matmul-heavy ones. Re-run on a quiet machine, or compare with --threads 1")
    return line + ("" if line.endswith(".") else ".")


def write_results(name: str, payload: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    json_path, md_path = RESULTS_DIR / f"{name}.json", RESULTS_DIR / f"{name}.md"
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    md_path.write_text(markdown + "\n")
    return json_path, md_path


def profile_table(fn: Callable[[], Any], steps: int = 3, row_limit: int = 20, sort_by: str = "self_cpu_time_total") -> str:
    """torch.profiler over `steps` calls of fn (after one untimed call), sorted by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            fn()
    return prof.key_averages().table(sort_by=sort_by, row_limit=row_limit)


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"
