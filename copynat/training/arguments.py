"""Command-line arguments of ``copynat-train``, ``copynat-generate`` and ``copynat-distill``.

Every argument is a dataclass field parsed by ``transformers.HfArgumentParser``: each field is a
``--flag`` and the whole set can come from one YAML or JSON file given as the only argument
(``copynat-train run.yaml``).  ``copynat-train`` reads three groups:

* :class:`~copynat.training.data.DataArguments` (the data module): where the data comes from;
* :class:`ModelArguments`: a preset ("tiny" | "small" | "base") plus overrides of any
  ``CopyNatConfig`` field exposed here, or ``model_name_or_path`` to fine-tune a saved model,
  and the tokenizer (trained on the training split unless one is given);
* :class:`TrainArguments`: optimisation, evaluation, checkpointing and reporting.

A field left at ``None`` means "the preset's / the model's / an automatic value"; the help text
of every such field says which.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any

from .data import DataArguments

__all__ = [
    "DataArguments",
    "DistillArguments",
    "GenerateArguments",
    "ModelArguments",
    "PRESETS",
    "TrainArguments",
    "parse_decodings",
]

#: Architecture presets.  "tiny" is the default: it learns the embedded echo task in minutes on a CPU.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=128, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                 decoder_attention_heads=4, encoder_ffn_dim=512, decoder_ffn_dim=512, dropout=0.1),
    "small": dict(d_model=256, encoder_layers=3, decoder_layers=3, encoder_attention_heads=4,
                  decoder_attention_heads=4, encoder_ffn_dim=1024, decoder_ffn_dim=1024, dropout=0.1),
    "base": dict(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                 decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048, dropout=0.1),
}

#: Optimiser defaults per preset (--learning_rate / --warmup_steps not given); fine-tuning a saved model uses
#: FINETUNE_OPTIMIZER.  Peak rates for the inverse-sqrt schedule: small models take larger steps.
PRESET_OPTIMIZER: dict[str, dict[str, float]] = {
    "tiny": {"learning_rate": 3e-3, "warmup_steps": 150},
    "small": {"learning_rate": 1e-3, "warmup_steps": 1000},
    "base": {"learning_rate": 7e-4, "warmup_steps": 4000},
}
FINETUNE_OPTIMIZER = {"learning_rate": 5e-4, "warmup_steps": 100}

#: Defaults for any data set ...
DEFAULT_VOCAB_SIZE = 8000
DEFAULT_MAX_TOKENS = 4096
DEFAULT_LABEL_SMOOTHING = 0.1
#: ... and for the embedded echo task, tuned so that `copynat-train` with no arguments learns it (>= 90% exact
#: match on the unseen-name test split) in minutes on a 2-core CPU: short sentences want small batches and many
#: updates; exact copying wants no label smoothing; syllable-built names want a vocabulary small enough that the
#: training names are spelled with pieces too (so the model learns to copy multi-piece names).
ECHO_VOCAB_SIZE = 2000
ECHO_MAX_TOKENS = 1024
ECHO_LABEL_SMOOTHING = 0.0
#: The main command's model (the embedded echo task, no model flags): both decoders over one encoder, so a new
#: user's first model decodes step by step and in one parallel pass (CTC: one pass, no length to predict).
ECHO_MODEL = {"decoder_mode": "hybrid", "nat_training": "ctc"}


def _arg(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


# ------------------------------------------------------------------------------------------ model


# ModelArguments field -> CopyNatConfig field(s) it sets.  Shortcuts set both stacks.
_SHORTCUTS = {
    "layers": ("encoder_layers", "decoder_layers"),
    "heads": ("encoder_attention_heads", "decoder_attention_heads"),
    "ffn_dim": ("encoder_ffn_dim", "decoder_ffn_dim"),
}
_CONFIG_FIELDS = (
    "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads",
    "encoder_ffn_dim", "decoder_ffn_dim", "activation_function", "dropout", "attention_dropout",
    "activation_dropout", "max_position_embeddings", "label_smoothing", "use_copy_mechanism", "decoder_mode",
    "length_prediction", "length_loss_weight", "nat_decoder_inputs", "guided_attention_weight",
    "position_embedding_type", "normalize_before", "encoder_attention_window", "tie_word_embeddings",
    "nat_training", "glancing_ratio", "copy_continuation_window", "copy_coverage", "coverage_loss_weight",
    "copy_respace", "copy_previous_token_keys", "copy_location", "ctc_upsample_ratio",
)
#: Config fields that may change when fine-tuning a saved model (the rest would not match its weights).
#: decoder_mode / use_copy_mechanism may be switched on: the new head (length predictor, copy gate) starts random.
FINETUNE_FIELDS = (
    "dropout", "attention_dropout", "activation_dropout", "label_smoothing", "length_loss_weight",
    "guided_attention_weight", "decoder_mode", "use_copy_mechanism", "length_prediction", "nat_decoder_inputs",
    "nat_training", "glancing_ratio", "ctc_upsample_ratio",
)


@dataclass
class ModelArguments:
    """The model and its tokenizer: a preset plus overrides, or a saved folder to fine-tune."""

    preset: str = _arg("tiny", "Architecture preset: tiny (d_model 128, 2+2 layers, 4 heads, ffn 512), small "
                       "(256, 3+3, 4, 1024) or base (512, 6+6, 8, 2048).", choices=list(PRESETS))
    model_name_or_path: str | None = _arg(
        None, "Fine-tune this saved copynat model (a folder or Hub id) instead of building one from the preset.")
    tokenizer_name_or_path: str | None = _arg(
        None, "Use this tokenizer (folder or Hub id). Default: the model's tokenizer when fine-tuning, else a new "
              "byte-level tokenizer trained on the training split (source + target) and saved in output_dir.")
    vocab_size: int | None = _arg(
        None, f"Vocabulary size of a newly trained tokenizer (default {DEFAULT_VOCAB_SIZE}; "
              f"{ECHO_VOCAB_SIZE} for the embedded echo task).")
    tokenizer_model: str = _arg("bpe", "Subword model of a newly trained tokenizer.", choices=["bpe", "unigram"])
    trust_remote_code: bool = _arg(False, "Allow model/tokenizer code from the loaded folder (Hub remote code).")
    # --- architecture overrides (None = the preset's value / CopyNatConfig's default) ---
    d_model: int | None = _arg(None, "Hidden size.")
    layers: int | None = _arg(None, "Encoder and decoder layers (shortcut for both).")
    encoder_layers: int | None = _arg(None, "Encoder layers.")
    decoder_layers: int | None = _arg(None, "Decoder layers.")
    heads: int | None = _arg(None, "Attention heads of encoder and decoder (shortcut for both).")
    encoder_attention_heads: int | None = _arg(None, "Encoder attention heads.")
    decoder_attention_heads: int | None = _arg(None, "Decoder attention heads.")
    ffn_dim: int | None = _arg(None, "Feed-forward inner size of encoder and decoder (shortcut for both).")
    encoder_ffn_dim: int | None = _arg(None, "Encoder feed-forward inner size.")
    decoder_ffn_dim: int | None = _arg(None, "Decoder feed-forward inner size.")
    activation_function: str | None = _arg(None, "Feed-forward activation (relu, gelu, silu, ...).")
    dropout: float | None = _arg(None, "Dropout on embeddings and residual branches (preset: 0.1).")
    attention_dropout: float | None = _arg(None, "Dropout on attention probabilities (default 0).")
    activation_dropout: float | None = _arg(None, "Dropout inside the feed-forward block (default 0).")
    max_position_embeddings: int | None = _arg(
        None, "Longest sequence the model supports (default: max(512, max_source_length, max_target_length + 1)).")
    label_smoothing: float | None = _arg(
        None, f"Label smoothing of the token losses (default {DEFAULT_LABEL_SMOOTHING}; {ECHO_LABEL_SMOOTHING} for the "
              "embedded echo task).")
    use_copy_mechanism: bool | None = _arg(None, "Pointer-generator copy head (default true).")
    decoder_mode: str | None = _arg(
        None, "Decoder objective: ar (autoregressive, teacher forcing), nat (non-autoregressive: the parallel "
              "decoder, trained as --nat_training says) or hybrid (both). Default ar; hybrid for the embedded echo "
              "task.", choices=["ar", "nat", "hybrid"])
    length_prediction: str | None = _arg(None, "cmlm / glancing: the length predictor's target, absolute or offset "
                                               "(default offset). CTC predicts no length.",
                                         choices=["absolute", "offset"])
    length_loss_weight: float | None = _arg(None, "cmlm / glancing: weight of the NAT length loss (default 0.1).")
    nat_decoder_inputs: str | None = _arg(None, "cmlm / glancing: NAT decoder inputs, mask (enables mask-predict) or "
                                                "copy_source.", choices=["mask", "copy_source"])
    guided_attention_weight: float | None = _arg(None, "Weight of the diagonal guided-attention loss (default 0).")
    nat_training: str | None = _arg(None, "How the parallel decoder learns: ctc (the default, the best measured: CTC "
                                          "over upsampled positions, no length predictor, one-pass decoding), cmlm "
                                          "(Mask-Predict's masking, length predictor, mask-predict refinement) or "
                                          "glancing (GLAT).", choices=["ctc", "cmlm", "glancing"])
    glancing_ratio: float | None = _arg(None, "Glancing: the share of a first pass's errors revealed (default 0.5).")
    ctc_upsample_ratio: int | None = _arg(None, "CTC: decoder positions per source token (default 2).")
    position_embedding_type: str | None = _arg(None, "Positions: sinusoidal, learned or rotary (default sinusoidal).",
                                               choices=["sinusoidal", "learned", "rotary"])
    normalize_before: bool | None = _arg(None, "Pre-LN (true) or post-LN as in the paper (false, the default).")
    encoder_attention_window: int | None = _arg(None, "Truncated encoder self-attention: distance k (default: full).")
    tie_word_embeddings: bool | None = _arg(None, "Share the output projection with the embedding (default true).")
    copy_continuation_window: int | None = _arg(
        None, "Copy continuation: the copy attention reads how many of the last outputs match the source just before "
              "each position, up to this many (default 0 = off; 8 is a good value).")
    copy_coverage: bool | None = _arg(None, "Coverage (See et al. 2017) in the copy attention, with its loss "
                                            "(default false).")
    coverage_loss_weight: float | None = _arg(None, "Weight of the coverage loss (default 1.0).")
    copy_respace: bool | None = _arg(None, "Copied tokens may gain or lose their leading space (default true).")
    copy_location: bool | None = _arg(None, "Location-aware copy attention: each step sees where the last one "
                                            "attended (default true).")
    copy_previous_token_keys: bool | None = _arg(None, "Copy-attention keys also read the token before each position.")

    def __post_init__(self) -> None:
        if self.vocab_size is not None and self.vocab_size < 261:
            raise ValueError(f"--vocab_size must be at least 261 (5 special tokens + 256 bytes), got {self.vocab_size}")

    def config_overrides(self) -> dict[str, Any]:
        """The CopyNatConfig fields set on the command line (shortcuts expanded, explicit fields win)."""
        overrides: dict[str, Any] = {}
        for shortcut, targets in _SHORTCUTS.items():
            value = getattr(self, shortcut)
            if value is not None:
                overrides.update(dict.fromkeys(targets, value))
        for name in _CONFIG_FIELDS:
            value = getattr(self, name)
            if value is not None:
                overrides[name] = value
        return overrides

    def new_model_config(self, echo: bool = False) -> dict[str, Any]:
        """Preset values, then copynat's training defaults, then the overrides (no vocabulary yet)."""
        smoothing = ECHO_LABEL_SMOOTHING if echo else DEFAULT_LABEL_SMOOTHING
        return {**PRESETS[self.preset], "label_smoothing": smoothing, **(ECHO_MODEL if echo else {}),
                **self.config_overrides()}


# ------------------------------------------------------------------------------------------ train

_DECODING_RE = re.compile(r"^(greedy|beam(\d+)|nat(\d+)(?:b(\d+))?)$")


def parse_decodings(spec: str | list[str]) -> dict[str, dict[str, Any]]:
    """``"greedy,beam4,nat1,nat4"`` -> ``{name: generate() keyword arguments}``.

    ``greedy``; ``beamK`` (beam search, K beams); ``natN`` (non-autoregressive, N mask-predict passes;
    ``nat1`` is one parallel pass); ``natNbK`` (NAT with a length beam of K candidates).
    """
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not names:
        raise ValueError("--eval_decoding is empty; use e.g. 'greedy' or 'greedy,beam4,nat1,nat4'")
    decodings: dict[str, dict[str, Any]] = {}
    for name in names:
        match = _DECODING_RE.match(name)
        if match is None:
            raise ValueError(f"--eval_decoding: unknown decoding {name!r}; use greedy, beamK (e.g. beam4), "
                             "natN (N mask-predict passes, e.g. nat1, nat4) or natNbK (length beam K)")
        if name == "greedy":
            decodings[name] = {"num_beams": 1, "do_sample": False}
        elif match.group(2):
            decodings[name] = {"num_beams": int(match.group(2)), "do_sample": False}
        else:
            kwargs: dict[str, Any] = {"non_autoregressive": True, "nat_iterations": int(match.group(3))}
            if match.group(4):
                kwargs["length_beam"] = int(match.group(4))
            decodings[name] = kwargs
        if any(v == 0 for v in decodings[name].values() if isinstance(v, int) and not isinstance(v, bool)):
            raise ValueError(f"--eval_decoding: {name!r} needs a positive number")
    return decodings


def _resume_value(value: Any) -> str | None:
    if value is None or value is False:
        return None
    if value is True:
        return "latest"
    text = str(value).strip()
    if text.lower() in ("", "false", "no", "0", "none"):
        return None
    if text.lower() in ("true", "yes", "1", "latest"):
        return "latest"
    return text


@dataclass
class TrainArguments:
    """Optimisation, evaluation, checkpointing and reporting of ``copynat-train``."""

    output_dir: str = _arg("copynat-output", "Where the final model, tokenizer, metrics.jsonl, results.json, "
                                             "checkpoints/ and the training-curve plot go.")
    overwrite_output_dir: bool = _arg(False, "Start over in an output_dir that holds a previous run (its "
                                             "checkpoints, metrics and model are deleted).")
    seed: int = _arg(0, "Random seed (model init, dropout, batch order): the same seed gives the same run.")
    # --- budget ---
    max_steps: int | None = _arg(
        None, "Optimizer updates to train. Default: 1600 for the embedded echo task, else --num_epochs.")
    num_epochs: float | None = _arg(None, "Epochs to train when --max_steps is not given (default 10).")
    max_train_minutes: float | None = _arg(
        None, "Wall-clock budget: stop after this many minutes of training (evaluation and checkpointing not "
              "counted), evaluate, and keep the best model so far. Combine with --max_steps for a fixed-time run.")
    max_tokens: int | None = _arg(
        None, f"Token budget per batch and process: batch size x longest sequence, padded (default "
              f"{DEFAULT_MAX_TOKENS}; {ECHO_MAX_TOKENS} for the embedded echo task).")
    max_sentences: int | None = _arg(None, "At most this many sentences per batch (default: no limit).")
    # --- optimisation ---
    learning_rate: float | None = _arg(
        None, "Peak learning rate (AdamW). Default by preset: tiny 3e-3, small 1e-3, base 7e-4; 5e-4 when "
              "fine-tuning --model_name_or_path.")
    warmup_steps: int | None = _arg(
        None, "Linear warm-up steps. Default by preset: tiny 150, small 1000, base 4000; 100 when fine-tuning.")
    lr_scheduler: str = _arg("inverse_sqrt", "Schedule after warm-up: inverse_sqrt (lr * sqrt(warmup / step), "
                             "the Transformer paper's), linear or cosine decay to 0 at max_steps (or when --max_train_minutes "
                             "runs out, if that comes first), or constant.",
                             choices=["inverse_sqrt", "linear", "cosine", "constant"])
    weight_decay: float = _arg(0.01, "AdamW weight decay (not applied to biases, LayerNorms and embeddings).")
    adam_beta1: float = _arg(0.9, "AdamW beta1.")
    adam_beta2: float = _arg(0.98, "AdamW beta2 (0.98 as in the Transformer paper).")
    adam_epsilon: float = _arg(1e-8, "AdamW epsilon.")
    max_grad_norm: float = _arg(1.0, "Clip the gradient norm to this value (0 = no clipping).")
    gradient_accumulation_steps: int = _arg(1, "Batches per optimizer update (effective budget = max_tokens x "
                                               "this x processes).")
    mixed_precision: str = _arg("no", "Mixed precision: no, bf16 or fp16. fp16 needs a GPU; on a CPU it falls back "
                                "to full precision with a message (bf16 autocast works on CPUs).",
                                choices=["no", "bf16", "fp16"])
    # --- scheduled sampling (AR objective only) ---
    scheduled_sampling: str = _arg(
        "none", "Scheduled sampling (Bengio et al. 2015): decay the teacher-forcing probability with this schedule "
                "and feed the model's own predictions otherwise.",
        choices=["none", "linear", "exponential", "inverse_sigmoid"])
    scheduled_sampling_k: float | None = _arg(
        None, "Schedule parameter: linear = steps to decay to the minimum; exponential = base k < 1 (p = k^step); "
              "inverse_sigmoid = k >= 1 (p = k / (k + exp(step / k))). Default: decays to the minimum (linear, "
              "exponential) or reaches its midpoint (inverse_sigmoid) around the middle of training.")
    scheduled_sampling_min_prob: float = _arg(0.5, "Lowest teacher-forcing probability of the schedule.")
    # --- sequence-level objective ---
    objective: str = _arg(
        "mle", "mle = cross-entropy with teacher forcing; rl = self-critical REINFORCE on sentence BLEU/chrF mixed "
               "with cross-entropy (fine-tune a trained --model_name_or_path on the metric).", choices=["mle", "rl"])
    rl_weight: float = _arg(0.9, "--objective rl: weight w of the RL term, loss = (1 - w) * ce + w * rl.")
    rl_reward: str = _arg("bleu", "--objective rl: sentence-level reward metric.", choices=["bleu", "chrf"])
    # --- evaluation ---
    eval_steps: int | None = _arg(None, "Evaluate every N updates (default: 4 evaluations per run) and at the end.")
    eval_decoding: str | None = _arg(
        None, "Comma-separated decodings to evaluate: greedy, beamK, natN (N mask-predict passes), natNbK (length "
              "beam K). The first one selects the best model. Default: greedy for ar models; with CTC (the default "
              "nat_training) nat1 for nat and 'greedy,nat1' for hybrid; with cmlm or glancing 'nat4,nat1' for nat and "
              "'greedy,nat4' for hybrid.")
    num_eval_samples: int | None = _arg(
        500, "Validation examples decoded at each periodic evaluation (the final evaluation uses all). 0 = all.")
    eval_batch_size: int = _arg(200, "Sentences per generation batch during evaluation.")
    eval_max_new_tokens: int | None = _arg(None, "Longest generated output (default: max_target_length).")
    ctc_blank_penalty: float | None = _arg(
        None, "CTC models (--nat_training ctc): the blank penalty generate() uses by default, saved in the generation "
              "config (a positive one lengthens the output). Default: chosen on the validation split by one-pass "
              "BLEU among 0, 0.5, 1, 1.5, 2, 3, 4 (0 without validation data).")
    early_stopping_patience: int | None = _arg(
        None, "Stop after this many evaluations without a better validation BLEU (default: never).")
    # --- checkpoints ---
    save_steps: int | None = _arg(None, "Save a resumable checkpoint every N updates (default: eval_steps).")
    keep_checkpoints: int = _arg(2, "Keep only the newest N checkpoints.")
    resume: str | None = _arg(
        None, "Continue an interrupted run: '--resume' alone = the latest complete checkpoint in output_dir, or "
              "the path of a checkpoint folder. Model, optimizer, schedule, random state, data position and "
              "best-BLEU state are restored.", nargs="?", const="latest")
    # --- reporting ---
    logging_steps: int = _arg(50, "Log the training loss every N updates (metrics.jsonl, TensorBoard).")
    report_to: str = _arg("auto", "Trackers besides output_dir/metrics.jsonl (always written): auto (tensorboard "
                                  "when installed), none, or a comma list for accelerate (tensorboard, wandb, ...).")
    plot: bool = _arg(True, "Draw output_dir/training_curves.png (loss and BLEU vs step; needs matplotlib).")
    progress_bar: bool = _arg(True, "Show a tqdm progress bar (loss, tokens/s, ETA).")
    num_threads: int | None = _arg(None, "CPU threads per process (default: all available cores / processes).")
    dataloader_num_workers: int = _arg(0, "DataLoader worker processes (0 = load in the training process).")
    torch_compile: bool = _arg(False, "Compile the model's forward with torch.compile (dynamic shapes: the token-budget "
                                      "batches vary). Slow to start; pays on GPUs, rarely on a CPU.")
    log_example_ids: bool = _arg(False, "Write the training example ids each process consumed to "
                                        "output_dir/example_ids/rank-R.txt (to check data sharding).")
    # --- hub ---
    push_to_hub: bool = _arg(False, "Push the final model and tokenizer to the Hub at the end.")
    hub_model_id: str | None = _arg(None, "Hub repository id for --push_to_hub (default: output_dir's name).")
    hub_private_repo: bool = _arg(False, "Create the Hub repository as private.")

    def __post_init__(self) -> None:
        self.resume = _resume_value(self.resume)
        positive = ("gradient_accumulation_steps", "logging_steps", "keep_checkpoints", "eval_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "max_tokens", "max_sentences", "eval_steps", "save_steps", "num_threads",
                     "eval_max_new_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1, got {value}")
        if self.num_epochs is not None and self.num_epochs <= 0:
            raise ValueError(f"--num_epochs must be > 0, got {self.num_epochs}")
        if not 0.0 <= self.rl_weight <= 1.0:
            raise ValueError(f"--rl_weight must be in [0, 1], got {self.rl_weight}")
        if self.objective == "rl" and self.scheduled_sampling != "none":
            raise ValueError("--objective rl already trains on the model's own outputs: drop --scheduled_sampling")
        if self.max_train_minutes is not None and self.max_train_minutes <= 0:
            raise ValueError(f"--max_train_minutes must be > 0, got {self.max_train_minutes}")
        if (self.warmup_steps is not None and self.warmup_steps < 0) or self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError("--warmup_steps, --weight_decay and --max_grad_norm must be >= 0")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise ValueError(f"--learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.scheduled_sampling_min_prob <= 1.0:
            raise ValueError(f"--scheduled_sampling_min_prob must be in [0, 1], got {self.scheduled_sampling_min_prob}")
        if self.scheduled_sampling_k is not None:
            k = self.scheduled_sampling_k
            bad = {"linear": k <= 0, "exponential": not 0 < k < 1, "inverse_sigmoid": k < 1}.get(self.scheduled_sampling)
            if bad:
                raise ValueError(f"--scheduled_sampling_k={k} does not fit the {self.scheduled_sampling} schedule: "
                                 "linear needs k > 0 (steps), exponential 0 < k < 1, inverse_sigmoid k >= 1")
        if self.ctc_blank_penalty is not None and not math.isfinite(self.ctc_blank_penalty):
            raise ValueError(f"--ctc_blank_penalty must be a finite number, got {self.ctc_blank_penalty}")
        if self.num_eval_samples is not None and self.num_eval_samples < 0:
            raise ValueError("--num_eval_samples must be >= 0 (0 = all)")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError("--early_stopping_patience must be >= 1")
        if self.eval_decoding is not None:
            parse_decodings(self.eval_decoding)
        self.output_dir = os.path.expanduser(self.output_dir)


# --------------------------------------------------------------------------------------- generate


@dataclass
class GenerateArguments:
    """``copynat-generate``: decode source sentences with a saved model."""

    model: str = _arg(None, "Saved model folder (or Hub id) with its tokenizer.", aliases=["--model_name_or_path"])
    input_file: str | None = _arg(None, "File with one source sentence per line (default: stdin; '-' = stdin).")
    text: list[str] | None = _arg(None, "Source sentence(s) given on the command line instead of a file.")
    output_file: str | None = _arg(None, "Write the outputs here instead of stdout.")
    batch_size: int = _arg(32, "Sentences per generate() call.")
    max_new_tokens: int | None = _arg(None, "Longest output in tokens (default 256).")
    num_beams: int = _arg(1, "Beam size (1 = greedy, unless --do_sample).")
    do_sample: bool = _arg(False, "Sample instead of searching.")
    top_k: int | None = _arg(None, "Sampling: keep the k most likely tokens.")
    top_p: float | None = _arg(None, "Sampling: nucleus probability mass.")
    temperature: float | None = _arg(None, "Sampling temperature.")
    length_penalty: float | None = _arg(None, "Beam search length penalty.")
    no_repeat_ngram_size: int | None = _arg(None, "Never repeat n-grams of this size.")
    num_return_sequences: int = _arg(1, "Outputs per input (n-best / samples), printed one per line.")
    non_autoregressive: bool = _arg(False, "Decode in parallel (needs a model trained with decoder_mode nat/hybrid).")
    nat_iterations: int = _arg(1, "NAT: mask-predict passes (1 = one parallel pass).")
    length_beam: int = _arg(1, "NAT: decode the K most likely lengths and keep the best.")
    rescore_with_ar: bool = _arg(False, "NAT: pick the length-beam candidate with the AR decoder (hybrid models).")
    seed: int = _arg(0, "Random seed (sampling).")
    plot: str | None = _arg(None, "Save a PNG of the first input's copy attention (source x target) and p_gen, or "
                                  "of the last layer's cross-attention for NAT / no-copy models.")
    device: str | None = _arg(None, "torch device (default: cuda if available, else cpu).")
    trust_remote_code: bool = _arg(False, "Allow code from the model folder (Hub remote code).")

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("--model is required: the folder of a trained copynat model")
        for name in ("batch_size", "num_beams", "num_return_sequences", "nat_iterations", "length_beam"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class DistillArguments:
    """``copynat-distill``: sequence-level knowledge distillation targets (Kim & Rush 2016)."""

    teacher: str = _arg(None, "Folder (or Hub id) of the autoregressive teacher model with its tokenizer.",
                        aliases=["--model_name_or_path"])
    output_file: str = _arg(None, "The distilled data set to write: jsonl with 'source' and 'target' columns "
                                  "(targets = teacher outputs); use it as --train_file of a NAT student.")
    split: str = _arg("train", "Split of the data arguments to distill.", choices=["train", "validation", "test"])
    num_beams: int = _arg(4, "Beam size of the teacher.")
    batch_size: int = _arg(64, "Sentences per generate() call.")
    max_new_tokens: int | None = _arg(None, "Longest teacher output (default: max_target_length); each batch is "
                                            "also capped at 2 x its longest source + 10 tokens, as in evaluation, "
                                            "so one looping output does not hold a whole batch to the limit.")
    keep_original: bool = _arg(False, "Also write the reference as 'original_target'.")
    device: str | None = _arg(None, "torch device (default: cuda if available, else cpu).")
    trust_remote_code: bool = _arg(False, "Allow code from the teacher folder (Hub remote code).")

    def __post_init__(self) -> None:
        if not self.teacher:
            raise ValueError("--teacher is required: the folder of a trained autoregressive copynat model")
        if not self.output_file:
            raise ValueError("--output_file is required (a .jsonl path)")
        if self.num_beams < 1 or self.batch_size < 1:
            raise ValueError("--num_beams and --batch_size must be >= 1")


def resolve_defaults(model_args: ModelArguments, train_args: TrainArguments, echo: bool) -> dict[str, Any]:
    """Fill the data- and preset-dependent defaults left at None (in place); returns what was filled."""
    filled: dict[str, Any] = {}
    if train_args.max_tokens is None:
        filled["max_tokens"] = train_args.max_tokens = ECHO_MAX_TOKENS if echo else DEFAULT_MAX_TOKENS
    optimizer = FINETUNE_OPTIMIZER if model_args.model_name_or_path else PRESET_OPTIMIZER[model_args.preset]
    if train_args.learning_rate is None:
        filled["learning_rate"] = train_args.learning_rate = optimizer["learning_rate"]
    if train_args.warmup_steps is None:
        filled["warmup_steps"] = train_args.warmup_steps = int(optimizer["warmup_steps"])
    return filled


def field_names(cls) -> list[str]:
    return [f.name for f in fields(cls)]
