"""CopyNat configuration: every knob of the lecture's Transformer, validated on construction."""

import shutil
from pathlib import Path

from transformers.configuration_utils import PreTrainedConfig
from transformers.dynamic_module_utils import get_relative_import_files
from transformers.utils import logging

logger = logging.get_logger(__name__)

POSITION_EMBEDDING_TYPES = ("sinusoidal", "learned", "rotary")
DECODER_MODES = ("ar", "nat", "hybrid")
LENGTH_PREDICTIONS = ("absolute", "offset")
NAT_DECODER_INPUTS = ("mask", "copy_source")
NAT_TRAININGS = ("cmlm", "glancing", "ctc")
ACTIVATIONS = ("relu", "gelu", "gelu_new", "silu", "swish", "tanh")
DEFAULT_AUTO_MAP = {
    "AutoConfig": "configuration_copynat.CopyNatConfig",
    "AutoModel": "modeling_copynat.CopyNatModel",
    "AutoModelForSeq2SeqLM": "modeling_copynat.CopyNatForConditionalGeneration",
    "AutoModelForSequenceClassification": "encoder_heads.CopyNatForSequenceClassification",
    "AutoModelForTokenClassification": "encoder_heads.CopyNatForTokenClassification",
}


def write_remote_code(folder: str | Path, auto_map: dict) -> None:
    """Copy into `folder` every modeling file `auto_map` names and every sibling file those import: save_pretrained
    copies only the saved class's file and its imports, and the config lists every head, so without this a folder
    saved from the seq2seq model would not load as, say, a sequence classifier."""
    here = Path(__file__).parent
    files = set()
    for reference in [*auto_map.values(), "pipeline_copynat.CopyNatPipeline"]:  # + pipeline() of the folder
        for name in reference if isinstance(reference, (list, tuple)) else [reference]:
            path = here / f"{name.split('--')[-1].rsplit('.', 1)[0]}.py"
            if path.is_file():
                files |= {path, *map(Path, get_relative_import_files(str(path)))}
    for path in files:
        if not (Path(folder) / path.name).is_file():
            shutil.copy(path, Path(folder) / path.name)
    from .pipeline_copynat import add_custom_pipeline

    add_custom_pipeline(folder)  # config.json names the pipeline: pipeline(model=folder, trust_remote_code=True)


def corrupt_weights_error(name_or_path, error: Exception) -> OSError | None:
    """An OSError naming the weights file when `error` is safetensors' own (which names no file: "incomplete
    metadata, file not fully covered"), else None."""
    if type(error).__name__ != "SafetensorError":
        return None
    folder = Path(str(name_or_path))
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    where = ", ".join(map(str, files)) or f"the weights file (model.safetensors) of {name_or_path}"
    return OSError(f"{where}: corrupt or truncated ({error}); save the model again, or download it again "
                   "(from_pretrained(..., force_download=True) for a Hub model)")


class CopyNatConfig(PreTrainedConfig):
    r"""
    Configuration of a CopyNat encoder-decoder. Names follow `BartConfig`; the lecture's options are extra fields.

    Architecture (Bart names):
        vocab_size (`int`, 8000): size of the one vocabulary shared by source and target (the copy mechanism needs it).
        d_model (`int`, 256): width of every hidden state.
        encoder_layers / decoder_layers (`int`, 3 / 3): number of layers in each stack.
        encoder_attention_heads / decoder_attention_heads (`int`, 4 / 4): heads; each must divide `d_model`.
        encoder_ffn_dim / decoder_ffn_dim (`int`, 1024): inner width of the position-wise feed-forward blocks.
        activation_function (`str`, "relu"): feed-forward non-linearity (relu as in the paper, gelu, silu, tanh).
        dropout (`float`, 0.1): dropout on embeddings and on every residual branch.
        attention_dropout (`float`, 0.0): dropout on attention probabilities.
        activation_dropout (`float`, 0.0): dropout inside the feed-forward block.
        max_position_embeddings (`int`, 512): longest sequence the positional encoding supports.
        init_std (`float`, 0.02): standard deviation of the normal initialisation of linear layers.
        scale_embedding (`bool`, True): multiply token embeddings by sqrt(d_model), as in the paper.
        pad_token_id, bos_token_id, eos_token_id, unk_token_id, mask_token_id (`int`, 0/1/2/3/4): special ids; they
            match `copynat.train_tokenizer`. `<mask>` is its own token (never `<unk>`), used by the NAT decoder.
        decoder_start_token_id (`int`, 1): first decoder input (`<s>`).
        tie_word_embeddings (`bool`, True): the output projection shares the token embedding matrix. Encoder and
            decoder always share one embedding.
        use_cache (`bool`, True): keep key/value states during autoregressive generation.
        classifier_dropout (`float`, 0.0): dropout before the sequence/token classification heads.
        label_smoothing (`float`, 0.0): label smoothing of the token losses computed by `forward(labels=...)`.

    Lecture options:
        position_embedding_type (`str`, "sinusoidal"): "sinusoidal" (fixed, the paper), "learned" (a table, as Bart)
            or "rotary" (RoPE, rotates queries and keys of self-attention).
        rope_theta (`float`, 10000.0): base of the rotary frequencies.
        normalize_before (`bool`, False): False = post-LN (the paper), True = pre-LN (stabler for deep stacks).
        encoder_attention_window (`int` or None, None): None = full self-attention; k = truncated self-attention, each
            source position sees only positions within distance k.
        use_copy_mechanism (`bool`, True): mix the generation softmax with a copy distribution over source tokens
            (pointer-generator); the model then returns log-probabilities as `logits`.
        decoder_mode (`str`, "ar"): which losses train the shared decoder: "ar" (teacher forcing, causal mask),
            "nat" (parallel decoding of all positions + length prediction) or "hybrid" (both, every step).
        length_prediction (`str`, "offset"): the NAT length predictor classifies the target length itself
            ("absolute") or its difference from the source length ("offset").
        length_classes (`int`, 256): number of length classes; offsets are centred at `length_classes // 2`.
        length_loss_weight (`float`, 0.1): weight of the length cross-entropy in the NAT loss.
        nat_decoder_inputs (`str`, "mask"): NAT decoder inputs: "<mask>" tokens (conditional masked LM, enables
            mask-predict refinement) or "copy_source" (source embeddings copied uniformly, Gu et al. 2018).
        nat_training (`str`, "ctc"): how the parallel decoder learns. "ctc" (connectionist temporal classification,
            Graves et al. 2006; for NAT, Libovický & Helcl 2018 and Gu & Kong 2021; the best measured, see
            docs/benchmarks.md): the decoder reads `ctc_upsample_ratio` x the source length positions, each may also
            emit a blank (the `<mask>` id), and the loss sums over every way of spreading the target over them;
            decoding keeps each position's best token, merges repeats and drops blanks (one pass, no length
            predictor). "cmlm" (Mask-Predict: hide a uniformly random number of targets behind `<mask>`, learn them;
            a length predictor; mask-predict refinement) or "glancing" (GLAT: after a first parallel pass, reveal
            `glancing_ratio` x as many reference tokens as the pass got wrong, learn the rest; needs `<mask>`
            inputs).
        glancing_ratio (`float`, 0.5): the share of a sentence's errors that glancing reveals.
        ctc_upsample_ratio (`int`, 2): with `nat_training="ctc"`, decoder positions per source token.
        guided_attention_weight (`float`, 0.0): weight of the diagonal guided-attention loss on the last decoder
            layer's cross-attention (for monotonic tasks); 0 disables it.
        guided_attention_sigma (`float`, 0.2): width of the diagonal band that the guided-attention loss tolerates.
    Copy mechanism (what makes it copy anything a user types, `copy_generator.py`):
        copy_previous_token_keys (`bool`, True): each copy-attention key also reads the encoder state of the token
            before it, so the decoder can point at "the token after `am`" where a copy starts.
        copy_location (`bool`, True): location-aware copy attention (Chorowski et al. 2015): each autoregressive step's
            copy attention sees where the last step's attended, so a copy steps on by one position even where the
            source pieces repeat (an unseen script's bytes).
        copy_coverage (`bool`, False): coverage (See et al. 2017): each autoregressive step's copy attention sees the
            copy attention summed over the earlier steps, and `coverage_loss` penalises attending to a source
            position again.
        coverage_loss_weight (`float`, 1.0): weight of the coverage loss (See et al.'s lambda).
        copy_respace (`bool`, True): each source position can also be copied with its leading space added or
            removed (byte-level BPE spells " Kuroro" and "Kuroro" with different first pieces); the pairs of pieces
            come from the tokenizer (`model.set_vocabulary(tokenizer.get_vocab())`; copynat-train calls it).

    Example:

    ```python
    >>> from copynat import CopyNatConfig, CopyNatForConditionalGeneration
    >>> config = CopyNatConfig(d_model=128, encoder_layers=2, decoder_layers=2, decoder_mode="hybrid")
    >>> model = CopyNatForConditionalGeneration(config)
    ```
    """

    model_type = "copynat"
    keys_to_ignore_at_inference = ["past_key_values"]
    attribute_map = {
        "num_attention_heads": "encoder_attention_heads",
        "hidden_size": "d_model",
        "num_hidden_layers": "encoder_layers",
    }

    vocab_size: int = 8000
    d_model: int = 256
    encoder_layers: int = 3
    decoder_layers: int = 3
    encoder_attention_heads: int = 4
    decoder_attention_heads: int = 4
    encoder_ffn_dim: int = 1024
    decoder_ffn_dim: int = 1024
    activation_function: str = "relu"
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    max_position_embeddings: int = 512
    init_std: float = 0.02
    scale_embedding: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    unk_token_id: int | None = 3
    mask_token_id: int | None = 4
    decoder_start_token_id: int | None = 1
    is_encoder_decoder: bool = True
    tie_word_embeddings: bool = True
    use_cache: bool = True
    classifier_dropout: float = 0.0
    label_smoothing: float = 0.0
    position_embedding_type: str = "sinusoidal"
    rope_theta: float = 10000.0
    normalize_before: bool = False
    encoder_attention_window: int | None = None
    use_copy_mechanism: bool = True
    decoder_mode: str = "ar"
    length_prediction: str = "offset"
    length_classes: int = 256
    length_loss_weight: float = 0.1
    nat_decoder_inputs: str = "mask"
    nat_training: str = "ctc"
    glancing_ratio: float = 0.5
    ctc_upsample_ratio: int = 2
    guided_attention_weight: float = 0.0
    guided_attention_sigma: float = 0.2
    copy_previous_token_keys: bool = True
    copy_respace: bool = True
    copy_location: bool = True
    copy_coverage: bool = False
    coverage_loss_weight: float = 1.0

    def __post_init__(self, **kwargs):
        if kwargs.pop("copy_continuation_window", 0):  # a config saved before 2026-12-07
            logger.warning("copy_continuation_window is retired (it measured no gain on top of copy_location, "
                           "docs/design.md): this model decodes without it, and its continuation weights are unused")
        if self.id2label is None and "num_labels" not in kwargs:
            kwargs["num_labels"] = 2
        super().__post_init__(**kwargs)
        # Every head is listed, so a saved folder loads with any Auto class as remote code (save_pretrained itself
        # only adds the class that was saved).
        self.auto_map = {**DEFAULT_AUTO_MAP, **(getattr(self, "auto_map", None) or {})}
        self.validate_copynat()

    def validate_copynat(self) -> None:
        """Raise ValueError naming the field, its value and what is allowed, for any inconsistent setting."""

        def fail(field: str, allowed: str) -> None:
            raise ValueError(f"CopyNatConfig.{field}={getattr(self, field)!r} is invalid: {allowed}.")

        for field in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                      "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "max_position_embeddings",
                      "length_classes"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                fail(field, "expected a positive integer")
        for side in ("encoder", "decoder"):
            heads = getattr(self, f"{side}_attention_heads")
            if self.d_model % heads:
                fail(f"{side}_attention_heads", f"it must divide d_model={self.d_model}")
            if self.position_embedding_type == "rotary" and (self.d_model // heads) % 2:
                fail(f"{side}_attention_heads", "rotary positions need an even head size d_model / heads")
        for field in ("dropout", "attention_dropout", "activation_dropout", "classifier_dropout"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                fail(field, "expected a probability in [0, 1)")
        if not isinstance(self.label_smoothing, (int, float)) or not 0.0 <= self.label_smoothing < 1.0:
            fail("label_smoothing", "expected a value in [0, 1)")
        for field, allowed in (("position_embedding_type", POSITION_EMBEDDING_TYPES), ("decoder_mode", DECODER_MODES),
                               ("length_prediction", LENGTH_PREDICTIONS), ("nat_decoder_inputs", NAT_DECODER_INPUTS),
                               ("nat_training", NAT_TRAININGS),
                               ("activation_function", ACTIVATIONS)):
            if getattr(self, field) not in allowed:
                fail(field, f"allowed values are {', '.join(map(repr, allowed))}")
        window = self.encoder_attention_window
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
            fail("encoder_attention_window", "expected None (full attention) or a positive integer distance")
        for field in ("length_loss_weight", "guided_attention_weight", "rope_theta", "init_std", "coverage_loss_weight"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or value < 0:
                fail(field, "expected a non-negative number")
        if not isinstance(self.guided_attention_sigma, (int, float)) or self.guided_attention_sigma <= 0:
            fail("guided_attention_sigma", "expected a positive number")
        for field in ("pad_token_id", "bos_token_id", "eos_token_id", "unk_token_id", "mask_token_id",
                      "decoder_start_token_id"):
            value = getattr(self, field)
            if value is not None and not 0 <= value < self.vocab_size:
                fail(field, f"expected an id in [0, vocab_size={self.vocab_size})")
        if not isinstance(self.glancing_ratio, (int, float)) or not 0.0 <= self.glancing_ratio <= 1.0:
            fail("glancing_ratio", "expected a share in [0, 1]")
        if self.nat_training == "glancing" and self.nat_decoder_inputs != "mask":
            fail("nat_training", "glancing reveals reference tokens among <mask> inputs: it needs "
                                 "nat_decoder_inputs='mask'")
        ratio = self.ctc_upsample_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, int) or not 1 <= ratio <= 8:
            fail("ctc_upsample_ratio", "expected an integer from 1 to 8 (decoder positions per source token)")
        if self.nat_training == "ctc" and self.mask_token_id is None:
            fail("mask_token_id", "CTC training emits the <mask> id as its blank: it needs a mask token id")
        if self.decoder_mode != "ar" and self.mask_token_id is None and self.nat_decoder_inputs == "mask":
            fail("mask_token_id", "NAT decoding with <mask> inputs needs a mask token id")

    @property
    def uses_nat(self) -> bool:
        """True when the decoder is trained to decode in parallel (with a length predictor, unless CTC reads the
        length off the source)."""
        return self.decoder_mode in ("nat", "hybrid")


__all__ = ["CopyNatConfig", "corrupt_weights_error", "write_remote_code"]
