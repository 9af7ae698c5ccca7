"""PyTorch CopyNat: the lecture's Transformer encoder-decoder, with a copy mechanism and a non-autoregressive decoder.

Read top to bottom: the outputs, the encoder and decoder stacks (their layers, attention and positions are the
lecture's building blocks in transformer_blocks.py), then the Hugging Face model classes, which compose the heads.
One decoder serves autoregressive (AT) and non-autoregressive (NAT) decoding (a causal-mask switch), and one output
head serves both. The heads live beside this file, each a module owning its parameters: the output head with the copy
mechanism (output_head.py, copy_generator.py), the parallel head with the length predictor or CTC
(parallel_head.py); monotonic alignment (monotonic_alignment.py), the encoder-only task heads (encoder_heads.py);
generate()'s additions are in generation_copynat.py. This folder is Hub remote code: it imports only torch,
transformers and its siblings.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import (BaseModelOutput, BaseModelOutputWithPastAndCrossAttentions, Seq2SeqLMOutput,
                                           Seq2SeqModelOutput)
from transformers.modeling_utils import PreTrainedModel

from .configuration_copynat import CopyNatConfig, corrupt_weights_error, write_remote_code
from .copy_generator import CopyGenerator
from .generation_copynat import CACHE_NAME, copynat_generate
from .monotonic_alignment import MonotonicAttention, guided_attention_loss
from .output_head import HeadOutput, OutputHead, whole_characters
from .parallel_head import ParallelHead
from .transformer_blocks import (DecoderLayer, EncoderLayer, PositionalEncoding, RotaryEmbedding, TokenEmbedding,
                                 all_true_on_cpu, encoder_self_attention_mask, self_attention_layout,
                                 source_padding_mask)

# --- Outputs ---------------------------------------------------------------------------------------------------------


@dataclass
class CopyNatEncoderOutput(BaseModelOutput):
    """Encoder output that also carries the source token ids, so the copy head can find them at every decoding step
    (generate() passes only `encoder_outputs` to later steps, and expands it for beams)."""

    source_ids: torch.LongTensor | None = None


@dataclass
class CopyNatSeq2SeqLMOutput(Seq2SeqLMOutput):
    """Seq2SeqLMOutput plus what the copy head and the NAT decoder add. `logits` are log-probabilities of the copy
    mixture when `use_copy_mechanism` is on, plain logits otherwise. p_gen (`[batch, tgt]`) and copy_attention
    (`[batch, tgt, src]`) are filled when `output_copy_info=True`; length_logits (`[batch, length_classes]`) when the
    model has a length predictor. The loss terms are kept apart for logging."""

    p_gen: torch.FloatTensor | None = None
    copy_attention: torch.FloatTensor | None = None
    length_logits: torch.FloatTensor | None = None
    ar_loss: torch.FloatTensor | None = None
    nat_loss: torch.FloatTensor | None = None
    length_loss: torch.FloatTensor | None = None
    guided_attention_loss: torch.FloatTensor | None = None
    coverage_loss: torch.FloatTensor | None = None


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Teacher forcing: the decoder reads the target shifted right by one, starting with `<s>` (-100 becomes pad)."""
    shifted = labels.new_empty(labels.shape)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill_(shifted == -100, pad_token_id)


# --- Encoder and decoder stacks --------------------------------------------------------------------------------------


class CopyNatEncoder(nn.Module):
    """The encoder: token embedding + positions, then N self-attention layers; returns one state per source token."""

    def __init__(self, config: CopyNatConfig, embed_tokens: TokenEmbedding):
        super().__init__()
        self.config = config
        self.embed_tokens = embed_tokens
        self.embed_positions = PositionalEncoding(config)
        head_dim = config.d_model // config.encoder_attention_heads
        self.rotary = RotaryEmbedding(head_dim, config.rope_theta) if config.position_embedding_type == "rotary" else None
        self.layers = nn.ModuleList(EncoderLayer(config, i) for i in range(config.encoder_layers))
        self.final_norm = nn.LayerNorm(config.d_model) if config.normalize_before else None

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CopyNatEncoderOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("CopyNatEncoder needs exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        length = inputs_embeds.shape[1]
        position_encoding = self.embed_positions(0, length, inputs_embeds.device)
        hidden = inputs_embeds if position_encoding is None else inputs_embeds + position_encoding.to(inputs_embeds.dtype)
        hidden = F.dropout(hidden, p=self.config.dropout, training=self.training)
        rotary = self.rotary(torch.arange(length, device=hidden.device)) if self.rotary is not None else None
        mask = encoder_self_attention_mask(attention_mask, length, self.config.encoder_attention_window, hidden.device)

        all_hidden, all_attentions = [], []
        for layer in self.layers:
            if output_hidden_states:
                all_hidden.append(hidden)
            hidden, weights = layer(hidden, attention_mask=mask, rotary=rotary, output_attentions=bool(output_attentions))
            if output_attentions:
                all_attentions.append(weights)
        if self.final_norm is not None:
            hidden = self.final_norm(hidden)
        if output_hidden_states:
            all_hidden.append(hidden)
        return CopyNatEncoderOutput(
            last_hidden_state=hidden,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
            source_ids=input_ids,
        )


class CopyNatDecoder(nn.Module):
    """The decoder, shared by AT and NAT: `causal=True` hides future positions (autoregressive, masked decoder),
    `causal=False` lets every position see every other (non-autoregressive, all positions decoded at once)."""

    def __init__(self, config: CopyNatConfig, embed_tokens: TokenEmbedding):
        super().__init__()
        self.config = config
        self.embed_tokens = embed_tokens
        self.embed_positions = PositionalEncoding(config)
        head_dim = config.d_model // config.decoder_attention_heads
        self.rotary = RotaryEmbedding(head_dim, config.rope_theta) if config.position_embedding_type == "rotary" else None
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.decoder_layers))
        self.final_norm = nn.LayerNorm(config.d_model) if config.normalize_before else None

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_padding_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_padding_mask: torch.Tensor | None = None,
        causal: bool = True,
        past_key_values: Cache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        last_layer_cross_attention: bool = False,
    ) -> BaseModelOutputWithPastAndCrossAttentions:
        """`last_layer_cross_attention`: return the last layer's cross-attention weights (guided attention's loss
        reads them). A `MonotonicAttention` cache constrains the cross-attention and records where it went."""
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        length = inputs_embeds.shape[1]
        if use_cache and past_key_values is None and causal:
            past_key_values = EncoderDecoderCache(DynamicCache(config=self.config), DynamicCache(config=self.config))
        self_cache = getattr(past_key_values, "self_attention_cache", past_key_values) if causal else None
        past, row_starts, self_mask, is_causal = self_attention_layout(self_cache, length, causal, decoder_padding_mask,
                                                                       inputs_embeds.device)
        position_encoding = self.embed_positions(past, length, inputs_embeds.device, row_starts)
        hidden = inputs_embeds if position_encoding is None else inputs_embeds + position_encoding.to(inputs_embeds.dtype)
        hidden = F.dropout(hidden, p=self.config.dropout, training=self.training)
        rotary = None
        if self.rotary is not None:
            positions = torch.arange(past, past + length, device=hidden.device)
            rotary = self.rotary(positions if row_starts is None else row_starts[:, None] + positions - past)
        cross_mask = None
        if encoder_padding_mask is not None and not all_true_on_cpu(encoder_padding_mask):
            cross_mask = encoder_padding_mask[:, None, None, :]
        monotonic = past_key_values if isinstance(past_key_values, MonotonicAttention) else None
        floor = monotonic.floor() if monotonic is not None else None
        if floor is not None:  # monotonic decoding: no source position left of the floor
            source = torch.arange(encoder_hidden_states.shape[1], device=hidden.device)
            floor = (source[None, :] >= floor[:, None])[:, None, None, :]
            cross_mask = floor if cross_mask is None else cross_mask & floor
        last_layer_cross_attention = last_layer_cross_attention or monotonic is not None

        # A parallel pass recomputes every position's self-attention, so a cache given to it holds only what does not
        # change between passes: the cross-attention keys and values of the encoder states (mask-predict reuses them).
        all_hidden, all_self, all_cross = [], [], []
        for index, layer in enumerate(self.layers):
            if output_hidden_states:
                all_hidden.append(hidden)
            want_weights = bool(output_attentions) or (last_layer_cross_attention and index == len(self.layers) - 1)
            hidden, self_weights, cross_weights = layer(
                hidden, encoder_hidden_states, self_attn_mask=self_mask, is_causal=is_causal, cross_attn_mask=cross_mask,
                rotary=rotary, past_key_values=past_key_values, output_attentions=want_weights,
                cache_self_attention=causal,
            )
            all_self.append(self_weights)
            all_cross.append(cross_weights)
        if self.final_norm is not None:
            hidden = self.final_norm(hidden)
        if output_hidden_states:
            all_hidden.append(hidden)
        if monotonic is not None:
            monotonic.step(all_cross[-1])
        return BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=hidden,
            **{CACHE_NAME: past_key_values if use_cache else None},
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_self) if output_attentions else None,
            cross_attentions=tuple(all_cross) if output_attentions or last_layer_cross_attention else None,
        )


# --- Hugging Face model classes --------------------------------------------------------------------------------------


class CopyNatPreTrainedModel(PreTrainedModel):
    config: CopyNatConfig
    config_class = CopyNatConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["EncoderLayer", "DecoderLayer"]
    _supports_sdpa = True
    # Encoder and decoder always read one embedding table (the copy mechanism needs one vocabulary), whatever
    # tie_word_embeddings says; that flag only decides whether the output projection shares it too.
    _ties_ignore_config = False
    # Weight names of checkpoints saved by older copynat code -> today's (regular expressions), applied on load.
    _legacy_weight_names: dict[str, str] = {}

    def get_expanded_tied_weights_keys(self, all_submodels: bool = False) -> dict:
        tied = super().get_expanded_tied_weights_keys(all_submodels=all_submodels)
        if not all_submodels and self._ties_ignore_config:
            tied.update(self._tied_weights_keys)
        return tied

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        super().save_pretrained(save_directory, *args, **kwargs)
        if self._auto_class is not None and kwargs.get("is_main_process", True):  # every head loads as remote code
            write_remote_code(save_directory, self.config.auto_map)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Loads safetensors weights only: pickle checkpoints (.bin) can run code, so they are refused unless the
        caller passes `use_safetensors=False` explicitly. A corrupt or truncated weights file is named. Checkpoints
        of older copynat code load under today's weight names (and save under them)."""
        kwargs.setdefault("use_safetensors", True)
        legacy = cls._legacy_weight_names and "key_mapping" not in kwargs
        if legacy:
            kwargs["key_mapping"] = cls._legacy_weight_names
        try:
            model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except Exception as err:
            raise (corrupt_weights_error(pretrained_model_name_or_path, err) or err) from err
        if legacy:  # transformers would save under the names it loaded from: today's names are the ones to keep
            model._weight_conversions = None
        return model

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, TokenEmbedding):
            init.normal_(module.weight, mean=0.0, std=self.config.d_model ** -0.5 if self.config.scale_embedding else self.config.init_std)
            if module.padding_idx is not None:
                init.zeros_(module.weight[module.padding_idx])
        if isinstance(module, CopyGenerator) and module.respace is not None:  # until set_vocabulary: no respacing
            init.copy_(module.respaced_ids, torch.arange(module.respaced_ids.numel()))
        if isinstance(module, OutputHead):
            init.copy_(module.byte_token_classes, whole_characters(module.byte_token_classes.shape[0]))
            for unknown_until_set_vocabulary in (module.word_piece_classes, module.byte_token_bounds):
                init.zeros_(unknown_until_set_vocabulary)


class CopyNatModel(CopyNatPreTrainedModel):
    """The bare encoder-decoder (no output head), returning decoder states: `AutoModel` loads this."""

    _tied_weights_keys = {"encoder.embed_tokens.weight": "shared.weight", "decoder.embed_tokens.weight": "shared.weight"}
    _ties_ignore_config = True

    def __init__(self, config: CopyNatConfig):
        super().__init__(config)
        scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.shared = TokenEmbedding(config.vocab_size, config.d_model, config.pad_token_id, scale)
        self.encoder = CopyNatEncoder(config, self.shared)
        self.decoder = CopyNatDecoder(config, self.shared)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.shared = self.encoder.embed_tokens = self.decoder.embed_tokens = value

    def get_encoder(self, modality: str | None = None) -> CopyNatEncoder:
        return self.encoder

    def encode(self, input_ids=None, attention_mask=None, inputs_embeds=None, encoder_outputs=None,
               output_attentions=None, output_hidden_states=None) -> CopyNatEncoderOutput:
        """The encoder's output, computed here unless given (a tuple given is read as one)."""
        if encoder_outputs is None:
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        return encoder_outputs if isinstance(encoder_outputs, BaseModelOutput) else CopyNatEncoderOutput(*encoder_outputs)

    def forward(
        self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None, encoder_outputs: tuple | BaseModelOutput | None = None,
        past_key_values: Cache | None = None, inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None, decoder_padding_mask: torch.Tensor | None = None,
        causal: bool = True, use_cache: bool | None = None, output_attentions: bool | None = None,
        output_hidden_states: bool | None = None, return_dict: bool | None = None, cache: Cache | None = None,
        **kwargs,
    ) -> Seq2SeqModelOutput:
        encoder_outputs = self.encode(input_ids, attention_mask, inputs_embeds, encoder_outputs, output_attentions,
                                      output_hidden_states)
        source_ids = getattr(encoder_outputs, "source_ids", None)
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            raise ValueError("CopyNatModel needs decoder_input_ids (or labels, in CopyNatForConditionalGeneration)")
        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids, encoder_hidden_states=encoder_outputs.last_hidden_state,
            encoder_padding_mask=source_padding_mask(attention_mask, input_ids if source_ids is None else source_ids,
                                                     self.config.pad_token_id),
            inputs_embeds=decoder_inputs_embeds, decoder_padding_mask=decoder_padding_mask, causal=causal,
            past_key_values=cache if past_key_values is None else past_key_values,
            use_cache=self.config.use_cache if use_cache is None else use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )
        output = Seq2SeqModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state, **{CACHE_NAME: decoder_outputs.get(CACHE_NAME)},
            decoder_hidden_states=decoder_outputs.hidden_states, decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states, encoder_attentions=encoder_outputs.attentions,
        )
        return output if return_dict is not False else output.to_tuple()


def check_token_ids(input_ids: torch.Tensor, labels: torch.Tensor | None, vocab_size: int) -> None:
    """A clear error for ids outside the vocabulary (torch's own is an index error deep in the embedding)."""
    if labels is not None:
        if labels.dim() != 2:
            raise ValueError(f"labels must be [batch, target_length]; got shape {tuple(labels.shape)}")
        bad = (labels != -100) & ((labels < 0) | (labels >= vocab_size))
        if bool(bad.any()):
            raise ValueError(f"labels hold ids outside [0, vocab_size={vocab_size}) (e.g. {int(labels[bad][0])}); "
                             "was the tokenizer trained with a larger vocabulary?")
    if input_ids is not None and bool(((input_ids < 0) | (input_ids >= vocab_size)).any()):
        raise ValueError(f"input_ids hold ids outside [0, vocab_size={vocab_size})")


#: The config field that weighs each loss term (1 where none is named).
LOSS_WEIGHTS = {"length_loss": "length_loss_weight", "guided_attention_loss": "guided_attention_weight",
                "coverage_loss": "coverage_loss_weight"}


class CopyNatForConditionalGeneration(CopyNatPreTrainedModel, GenerationMixin):
    """Sequence-to-sequence model: the encoder-decoder (`CopyNatModel`), the output head (vocabulary projection and
    copy mechanism, `output_head.py`) and, for NAT or hybrid models, the parallel head (length predictor or CTC,
    `parallel_head.py`). `generate()` decodes autoregressively (every Hugging Face strategy), in parallel
    (`non_autoregressive=True`) or drafted (`draft="parallel"`): see `generation_copynat.py`."""

    _tied_weights_keys = {"output_head.lm_head.weight": "model.shared.weight"}
    _keys_to_ignore_on_load_missing = [r"word_piece_classes", r"byte_token_bounds"]  # since 2026-12-06; 0 = unknown
    _legacy_weight_names = {  # before 2026-12-07 the heads' parameters sat on the model itself
        r"^lm_head\.": "output_head.lm_head.", r"^copy_generator\.": "output_head.copy_generator.",
        r"^byte_token_classes$": "output_head.byte_token_classes", r"^byte_token_bounds$": "output_head.byte_token_bounds",
        r"^word_piece_classes$": "output_head.word_piece_classes", r"^length_predictor\.": "parallel_head.length_predictor.",
    }

    def __init__(self, config: CopyNatConfig):
        super().__init__(config)
        self.model = CopyNatModel(config)
        self.output_head = OutputHead(config)
        self.parallel_head = ParallelHead(config) if config.uses_nat else None
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.output_head.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.output_head.lm_head = new_embeddings

    @property
    def copy_generator(self) -> CopyGenerator | None:
        """The copy mechanism of the output head (None without `use_copy_mechanism`)."""
        return self.output_head.copy_generator

    def set_vocabulary(self, vocab: dict[str, int]) -> None:
        """Tell the model its tokenizer's pieces (`tokenizer.get_vocab()`), see `OutputHead.set_vocabulary`;
        copynat-train calls it, call it yourself after building a model around a tokenizer."""
        self.output_head.set_vocabulary(vocab)

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    def forward(
        self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None, decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: tuple | BaseModelOutput | None = None, past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None, decoder_inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None, use_cache: bool | None = None,
        output_attentions: bool | None = None, output_hidden_states: bool | None = None,
        output_copy_info: bool = False, return_dict: bool | None = None, return_logits: bool = True,
        cache: Cache | None = None, **kwargs,
    ) -> CopyNatSeq2SeqLMOutput:
        r"""
        labels (`torch.LongTensor` of shape `[batch, tgt]`, -100 = ignored): target tokens. The losses follow
            `config.decoder_mode`: "ar" teacher-forced cross-entropy, "nat" the parallel head's losses, "hybrid" both.
            `decoder_input_ids` are shifted from `labels` when absent.
        output_copy_info (`bool`): return p_gen and the copy attention per target position.
        return_logits (`bool`, True): False returns `logits=None` when `labels` are given, and a copy model then
            never builds its [batch, tgt, vocab] log-mixture: the loss needs only gathered terms (faster training).
        past_key_values / cache (`Cache`): the KV cache (transformers >= 5.24 passes it as `cache`); a `CopyNatCache`
            also keeps the copy head's earlier steps, a `MonotonicAttention` cache the monotonic constraint.
        num_items_in_batch (kwarg, from Trainer): the loss is a sum divided by it, so gradient accumulation is exact.
        """
        past_key_values = cache if past_key_values is None else past_key_values
        if input_ids is not None and (input_ids.device.type == "cpu" or not self.training):  # no host sync in training
            check_token_ids(input_ids, labels, self.config.vocab_size)
        encoder = self.model.encode(input_ids, attention_mask, inputs_embeds, encoder_outputs, output_attentions,
                                    output_hidden_states)
        source_ids = input_ids if getattr(encoder, "source_ids", None) is None else encoder.source_ids
        source_mask = source_padding_mask(attention_mask, source_ids, self.config.pad_token_id)
        states, decoded, head, losses = encoder.last_hidden_state, None, None, {}
        if labels is None or self.config.decoder_mode != "nat":
            decoded, head = self.autoregressive_pass(
                states, source_ids, source_mask, decoder_input_ids, decoder_inputs_embeds, labels, past_key_values,
                use_cache=use_cache if labels is None else False, mixture=return_logits or labels is None,
                output_attentions=output_attentions, output_hidden_states=output_hidden_states)
            if labels is not None:
                losses.update(self.autoregressive_losses(decoded, head, labels, source_mask))
        length_logits = self.parallel_head.length_logits(states, source_mask) if self.parallel_head else None
        if labels is not None and self.config.decoder_mode != "ar":
            parallel, parallel_losses = self.parallel_losses(labels, length_logits, states, source_ids, source_mask,
                                                             mixture=return_logits and head is None)
            losses.update(parallel_losses)
            head = head or parallel
        loss, losses = self.weighted_loss(losses, labels, kwargs.get("num_items_in_batch"))
        output = CopyNatSeq2SeqLMOutput(
            loss=loss, logits=head.logits if head is not None and (return_logits or labels is None) else None,
            **{CACHE_NAME: decoded.get(CACHE_NAME) if decoded is not None else None},
            decoder_hidden_states=decoded.hidden_states if decoded is not None else None,
            decoder_attentions=decoded.attentions if decoded is not None else None,
            cross_attentions=decoded.cross_attentions if decoded is not None and output_attentions else None,
            encoder_last_hidden_state=states, encoder_hidden_states=encoder.hidden_states,
            encoder_attentions=encoder.attentions, length_logits=length_logits,
            p_gen=head.p_gen if output_copy_info and head is not None else None,
            copy_attention=head.copy_attention if output_copy_info and head is not None else None,
            **{name: value.detach() for name, value in losses.items()},
        )
        return output if return_dict is not False else output.to_tuple()

    def autoregressive_pass(self, encoder_states, source_ids, source_mask, decoder_input_ids=None,
                            decoder_inputs_embeds=None, labels=None, cache=None, use_cache=None, mixture=True,
                            output_attentions=None, output_hidden_states=None):
        """The masked (causal) decoder over the target so far (teacher forcing: the shifted labels), then the output
        head: (decoder output, HeadOutput). A cache continues from the steps it holds."""
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            if labels is None:
                raise ValueError("pass decoder_input_ids or labels (teacher forcing), or call generate()")
            decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)
        embeds = self.model.shared(decoder_input_ids) if decoder_inputs_embeds is None else decoder_inputs_embeds
        copy_cache = self.output_head.copy_cache(cache)  # asked before the step adds to the cache
        decoded = self.model.decoder(
            inputs_embeds=embeds, encoder_hidden_states=encoder_states, encoder_padding_mask=source_mask, causal=True,
            past_key_values=cache, use_cache=self.config.use_cache if use_cache is None else use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            last_layer_cross_attention=labels is not None and self.config.guided_attention_weight > 0)
        head = self.output_head(decoded.last_hidden_state, embeds, encoder_states, source_ids, source_mask,
                                mixture=mixture, causal=True, cache=copy_cache)
        return decoded, head

    def autoregressive_losses(self, decoded, head: HeadOutput, labels: torch.Tensor,
                              source_mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """{"ar_loss"[, "coverage_loss"][, "guided_attention_loss"]}, each a mean over the target tokens."""
        targets = labels != -100
        losses = {"ar_loss": self.output_head.token_loss(head, labels)}
        if head.copy is not None and head.copy.coverage_loss is not None:
            losses["coverage_loss"] = head.copy.coverage_loss.masked_fill(~targets, 0.0).sum()
        if self.config.guided_attention_weight > 0:
            losses["guided_attention_loss"] = guided_attention_loss(
                decoded.cross_attentions[-1], targets, source_mask, self.config.guided_attention_sigma)
        return {name: value / targets.sum().clamp_min(1) for name, value in losses.items()}

    def nat_pass(self, tokens, target_mask, encoder_states, source_ids, source_mask, mixture=True, positions=None,
                 cross_attention_cache: EncoderDecoderCache | None = None) -> HeadOutput:
        """One parallel decoder pass: the same decoder without the causal mask, the same output head. With
        `positions` [batch, n] the head reads only those target positions (it works position by position, so their
        outputs are the full pass's): mask-predict re-predicts only the tokens it hid again. A `cross_attention_cache`
        (an empty EncoderDecoderCache on the first pass) keeps the cross-attention keys and values for later passes
        over the same encoder states."""
        embeds = self.parallel_head.decoder_inputs(self.model.shared, tokens, target_mask, source_ids, source_mask)
        decoded = self.model.decoder(inputs_embeds=embeds, encoder_hidden_states=encoder_states,
                                     encoder_padding_mask=source_mask, decoder_padding_mask=target_mask, causal=False,
                                     past_key_values=cross_attention_cache, use_cache=False).last_hidden_state
        if positions is not None:
            index = positions[..., None].expand(-1, -1, decoded.shape[-1])
            decoded, embeds = decoded.gather(1, index), embeds.gather(1, index)
        return self.output_head(decoded, embeds, encoder_states, source_ids, source_mask, mixture=mixture)

    def parallel_losses(self, labels, length_logits, encoder_states, source_ids, source_mask, mixture=True):
        """(the training pass's HeadOutput, its losses): the parallel head picks the decoder inputs (CTC's slots, the
        conditional masked LM's hidden targets, or glancing's after a first pass) and scores the pass."""
        parallel_head, config = self.parallel_head, self.config
        if parallel_head.is_ctc:
            tokens, predicted = parallel_head.ctc_slots(source_ids, source_mask)
        elif config.nat_training == "glancing":
            target_mask = labels != -100
            with torch.no_grad():
                hidden = labels.masked_fill(~target_mask, config.pad_token_id).masked_fill(target_mask, config.mask_token_id)
                first = self.nat_pass(hidden, target_mask, encoder_states, source_ids, source_mask, mixture=False)
                _, guess = self.output_head.most_likely_tokens(first, overwrite_logits=True)
            tokens, predicted = parallel_head.glanced_targets(labels, guess)
        else:
            tokens, predicted = parallel_head.masked_targets(labels)
        target_mask = predicted if parallel_head.is_ctc else labels != -100
        head = self.nat_pass(tokens, target_mask, encoder_states, source_ids, source_mask, mixture=mixture)
        return head, parallel_head.losses(head, self.output_head, labels, predicted, length_logits, source_ids,
                                          source_mask)

    def weighted_loss(self, losses: dict[str, torch.Tensor], labels: torch.Tensor | None,
                      num_items_in_batch: torch.Tensor | int | None) -> tuple[torch.Tensor | None, dict]:
        """(the training loss, the terms as logged): each term weighted by its config field (`LOSS_WEIGHTS`). With
        Trainer's `num_items_in_batch` every term is also scaled by this batch's share of the accumulated target
        tokens, so gradient accumulation is exact (transformers 5 does not divide by the accumulation steps)."""
        if not losses:
            return None, losses
        if num_items_in_batch is not None:
            share = (labels != -100).sum() / num_items_in_batch
            losses = {name: value * share for name, value in losses.items()}
        weight = lambda name: getattr(self.config, LOSS_WEIGHTS[name]) if name in LOSS_WEIGHTS else 1.0  # noqa: E731
        return sum(value * weight(name) for name, value in losses.items()), losses

    @torch.no_grad()
    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, **kwargs):
        """Hugging Face generate() for AR decoding (greedy, beam, sampling, ...), plus copynat's decodings and
        constraints (`generation_copynat.copynat_generate`): `non_autoregressive=True` (parallel decoding),
        `draft="parallel"` (the parallel decoder drafts, the AT decoder verifies: greedy's output, faster),
        `output_copy_info`, `monotonic_window`, and the default `valid_utf8`, `complete_copied_words`, `stop_loops`."""
        return copynat_generate(self, super().generate, inputs, generation_config, **kwargs)


__all__ = ["CopyNatPreTrainedModel", "CopyNatModel", "CopyNatForConditionalGeneration", "CopyNatEncoderOutput",
           "CopyNatSeq2SeqLMOutput", "check_token_ids", "shift_tokens_right"]
