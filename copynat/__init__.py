"""copynat: a small, fast, readable Hugging Face Transformer encoder-decoder with a copy mechanism
(pointer-generator) and a non-autoregressive decoder with a length predictor.

Importing copynat registers it with AutoConfig / AutoModel / AutoModelForSeq2SeqLM /
AutoModelForSequenceClassification / AutoModelForTokenClassification, and marks the classes for
`register_for_auto_class`, so `save_pretrained` also writes the modeling code (Hub remote code). It registers
`CopyNatPipeline` for the task "text2text-generation" (which transformers 5 removed), and `save_pretrained` writes the
pipeline into the folder too, so `pipeline(model=FOLDER, trust_remote_code=True)` works without copynat.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .modeling import (
    CopyNatConfig,
    CopyNatEncoderOutput,
    CopyNatForConditionalGeneration,
    CopyNatForSequenceClassification,
    CopyNatForTokenClassification,
    CopyNatModel,
    CopyNatPreTrainedModel,
    CopyNatSeq2SeqLMOutput,
)

from .cpu_kernels import packed_cpu_kernels
from .modeling.pipeline_copynat import CUSTOM_TASK, CopyNatPipeline

__version__ = "0.1.0"

AutoConfig.register("copynat", CopyNatConfig, exist_ok=True)
_AUTO_CLASSES = {
    AutoModel: CopyNatModel,
    AutoModelForSeq2SeqLM: CopyNatForConditionalGeneration,
    AutoModelForSequenceClassification: CopyNatForSequenceClassification,
    AutoModelForTokenClassification: CopyNatForTokenClassification,
}
for _auto, _model in _AUTO_CLASSES.items():
    _auto.register(CopyNatConfig, _model, exist_ok=True)
    _model.register_for_auto_class(_auto.__name__)
CopyNatConfig.register_for_auto_class()


def _register_pipeline() -> None:
    """`pipeline("text2text-generation", model=...)` for copynat models. transformers 5 removed that task: pipeline()
    refuses the names of REMOVED_TASKS before it reads the registry, so copynat takes this one name back."""
    from transformers.pipelines import PIPELINE_REGISTRY, REMOVED_TASKS

    REMOVED_TASKS.pop("text2text-generation", None)
    # The folder's task last: Pipeline.save_pretrained writes the task registered last into config.json.
    for task in ("text2text-generation", CUSTOM_TASK):
        if PIPELINE_REGISTRY.supported_tasks.get(task, {}).get("impl") is not CopyNatPipeline:
            PIPELINE_REGISTRY.register_pipeline(task, pipeline_class=CopyNatPipeline,
                                                pt_model=AutoModelForSeq2SeqLM, type="text")


_register_pipeline()


def __getattr__(name: str):
    # Lazy: the tokenizer, data and visualisation helpers pull in extra libraries only when used.
    if name == "train_tokenizer":
        from .tokenization import train_tokenizer

        return train_tokenizer
    raise AttributeError(f"module 'copynat' has no attribute {name!r}")


__all__ = [
    "CopyNatConfig",
    "CopyNatEncoderOutput",
    "CopyNatForConditionalGeneration",
    "CopyNatForSequenceClassification",
    "CopyNatForTokenClassification",
    "CopyNatModel",
    "CopyNatPipeline",
    "CopyNatPreTrainedModel",
    "CopyNatSeq2SeqLMOutput",
    "packed_cpu_kernels",
    "train_tokenizer",
]
