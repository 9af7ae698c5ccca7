"""Shared helpers of the benchmarks: where results go and what they record, where the data comes from, and timing.

Results: `write_result(benchmark, name, payload, markdown)` writes `benchmarks/results/<benchmark>/<stem>.json` (and
`.md` beside it), where the stem is the run's name, date and commit, so a rerun adds a file and never replaces the
evidence of another variant; every file records the commit (and whether the tree had uncommitted changes), the date,
the machine and the command line that produced it.

Data: `add_multi30k_flags(parser)` and `multi30k_dir(args)` give a benchmark Multi30k as parallel text files, from the
`datasets` Hub (`bentrevett/multi30k`, the default) or from a local copy (`--data_dir`).

Timing: every speed aim is a ratio against a baseline measured in the same run, because this machine is shared and noisy.
To keep the ratios fair under changing load, the cases of one comparison are timed *interleaved*: one repeat of
every case per round, in alternating order, so that a burst of load hits all of them alike. We report the median.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import random
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

REPOSITORY = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPOSITORY / "benchmarks" / "results"

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


# --------------------------------------------------------------------------------------- what a result records


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPOSITORY, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """The machine a result was measured on: what a reader needs to compare it with their own."""
    import transformers

    return {"cpu_model": _cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def command_line(argv: list[str] | None = None) -> str:
    """The command that reran this benchmark, from the repository root: `python benchmarks/x.py --flag ...`."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_name = str(script.relative_to(REPOSITORY))
    except ValueError:
        script_name = sys.argv[0]
    return shlex.join(["python", script_name, *(sys.argv[1:] if argv is None else argv)])


def run_record(argv: list[str] | None = None) -> dict[str, Any]:
    """Commit (`git rev-parse HEAD`; `dirty` when the tree differs from it), date, machine and command line."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": _git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(), "command": command_line(argv)}


def result_stem(name: str, record: dict[str, Any]) -> str:
    """`<name>_<YYYY-MM-DD>_<commit[:8]>` (plus `-dirty`): one variant's run on one commit and day."""
    commit = (record.get("commit") or "nocommit")[:8] + ("-dirty" if record.get("dirty") else "")
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name).strip('-')}_{record['date'][:10]}_{commit}"


def write_result(benchmark: str, name: str, payload: dict[str, Any], markdown: str | None = None,
                 attachments: dict[str, str] | None = None, argv: list[str] | None = None) -> Path:
    """Write `payload` (with a `run` record added) to `benchmarks/results/<benchmark>/<stem>.json` and `markdown`, if
    given, to `<stem>.md` beside it (its last line names the commit and command); `attachments` maps a suffix such as
    "_profile.txt" to the text of a further file of the run, `<stem><suffix>`. Returns the json path. An existing
    file is never replaced: a second run of the same name, day and commit gets `_2`, `_3`, ... appended."""
    record = run_record(argv)
    folder = RESULTS_DIR / benchmark
    folder.mkdir(parents=True, exist_ok=True)
    stem = result_stem(name, record)
    candidate, counter = stem, 1
    while (folder / f"{candidate}.json").exists() or (folder / f"{candidate}.md").exists():
        counter += 1
        candidate = f"{stem}_{counter}"
    json_path = folder / f"{candidate}.json"
    for suffix, text in (attachments or {}).items():
        (folder / f"{candidate}{suffix}").write_text(text, encoding="utf-8")
        record.setdefault("files", []).append(f"{candidate}{suffix}")
    json_path.write_text(json.dumps({**payload, "run": record}, indent=2, default=str, ensure_ascii=False) + "\n",
                         encoding="utf-8")
    if markdown is not None:
        dirty = " (with uncommitted changes)" if record["dirty"] else ""
        footer = (f"\n\nCommit {record['commit']}{dirty}, {record['date']}, {record['machine']['cpu_count']} cores "
                  f"({record['machine']['cpu_model']}), torch {record['machine']['torch']}, transformers "
                  f"{record['machine']['transformers']}. Command: `{record['command']}`\n")
        json_path.with_suffix(".md").write_text(markdown.rstrip("\n") + footer, encoding="utf-8")
    return json_path


# --------------------------------------------------------------------------------------- data

MULTI30K_DATASET = "bentrevett/multi30k"
#: Hub split -> file stem of the parallel-text layout (the Hub's test split is test_2016_flickr).
MULTI30K_FILES = {"train": "train", "validation": "val", "test": "test_2016_flickr"}
MULTI30K_LANGUAGES = ("en", "de")
DATA_CACHE = Path(os.environ.get("COPYNAT_DATA_CACHE", Path.home() / ".cache" / "copynat" / "datasets"))


def add_multi30k_flags(parser) -> None:
    """--dataset (a `datasets` Hub name, the default a user would use) and --data_dir (a local copy instead)."""
    parser.add_argument("--dataset", default=MULTI30K_DATASET,
                        help="Multi30k from the `datasets` Hub: a dataset with 'en' and 'de' columns and train / "
                             "validation / test splits (test = test_2016_flickr); downloaded once and written as "
                             f"parallel text under {DATA_CACHE} (COPYNAT_DATA_CACHE)")
    parser.add_argument("--data_dir", type=Path, default=None,
                        help="a local copy instead of --dataset: train.{en,de}, val.{en,de}, test_2016_flickr.{en,de}")


def _has_multi30k_files(folder: Path) -> bool:
    return all((folder / f"{stem}.{lang}").is_file() for stem in MULTI30K_FILES.values() for lang in MULTI30K_LANGUAGES)


def multi30k_dir(args) -> Path:
    """A folder of Multi30k parallel text (train / val / test_2016_flickr, .en and .de): `args.data_dir` if given,
    else `args.dataset` loaded with `datasets` and written once under DATA_CACHE."""
    if args.data_dir is not None:
        if not _has_multi30k_files(args.data_dir):
            raise SystemExit(f"--data_dir {args.data_dir}: expected train, val and test_2016_flickr .en/.de files")
        return args.data_dir
    folder = DATA_CACHE / args.dataset.replace("/", "__")
    if _has_multi30k_files(folder):
        return folder
    import datasets

    hub = datasets.load_dataset(args.dataset)
    folder.mkdir(parents=True, exist_ok=True)
    for split, stem in MULTI30K_FILES.items():
        for lang in MULTI30K_LANGUAGES:
            lines = [" ".join(text.split()) for text in hub[split][lang]]  # one sentence a line, whatever it held
            partial = folder / f"{stem}.{lang}.partial"
            partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
            partial.replace(folder / f"{stem}.{lang}")
    return folder
