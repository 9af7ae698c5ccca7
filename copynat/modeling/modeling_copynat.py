"""PyTorch CopyNat: the lecture's Transformer encoder-decoder, with a copy mechanism and a non-autoregressive decoder.

Read top to bottom: positions -> multi-head attention -> feed-forward -> encoder and decoder layers -> the two stacks
-> the Hugging Face model classes. One decoder serves autoregressive (AT) and non-autoregressive (NAT) decoding (a
causal-mask switch), and one output head serves both. The heads live beside this file: the output head and its
copy mechanism (output_head.py, copy_generator.py), the length predictor and the parallel pass (parallel_decoder.py),
monotonic alignment (monotonic_alignment.py), the encoder-only task heads (encoder_heads.py); generate()'s additions
are in generation_copynat.py. This folder is Hub remote code: it imports only torch, transformers and its siblings.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.generation import GenerationMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (BaseModelOutput, BaseModelOutputWithPastAndCrossAttentions, Seq2SeqLMOutput,
                                           Seq2SeqModelOutput)
from transformers.modeling_utils import PreTrainedModel

from .configuration_copynat import CopyNatConfig, corrupt_weights_error, write_remote_code
from .copy_generator import CopyGenerator
from .generation_copynat import CACHE_NAME, autoregressive_generate, non_autoregressive_generate, pop_nat_arguments
from .monotonic_alignment import MonotonicAttention, guided_attention_loss
from .output_head import OutputHead, whole_characters
from .parallel_decoder import LengthPredictor, ParallelDecoder

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


# --- Embeddings and positions ----------------------------------------------------------------------------------------


class TokenEmbedding(nn.Embedding):
    """Token embedding, scaled by sqrt(d_model) as in the paper so it is not drowned by the positional encoding.
    One table serves encoder, decoder and (tied) output projection."""

    def __init__(self, vocab_size: int, d_model: int, padding_idx: int | None, scale: float):
        super().__init__(vocab_size, d_model, padding_idx=padding_idx)
        self.scale = scale

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return super().forward(input_ids) * self.scale


def sinusoidal_encoding(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d))."""
    inv_freq = torch.exp(torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angles = positions.float()[:, None] * inv_freq[None, :]
    encoding = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)
    return encoding[:, :dim]


class PositionalEncoding(nn.Module):
    """Positional encoding added to token embeddings: the fixed sinusoids of the paper or a learned table.
    Rotary positions add nothing here; they rotate queries and keys inside self-attention (RotaryEmbedding)."""

    def __init__(self, config: CopyNatConfig):
        super().__init__()
        self.kind = config.position_embedding_type
        self.d_model = config.d_model
        self.max_positions = config.max_position_embeddings
        if self.kind == "learned":
            self.table = nn.Embedding(config.max_position_embeddings, config.d_model)
        # Sinusoids per device, computed on first use and grown on demand: not a buffer, so nothing to corrupt when
        # from_pretrained builds the model on the meta device and nothing in the checkpoint; and not recomputed on
        # every call (a batch-1 NAT pass would spend 1% of its time on it).
        self._sinusoids: dict[torch.device, torch.Tensor] = {}

    def forward(self, start: int, length: int, device: torch.device) -> torch.Tensor | None:
        """Encodings of positions start .. start + length - 1: [length, d_model], or None for rotary positions."""
        if self.kind == "rotary":
            return None
        if start + length > self.max_positions:
            raise ValueError(
                f"sequence position {start + length - 1} exceeds max_position_embeddings={self.max_positions}; "
                "truncate the input (tokenizer truncation=True) or build the model with a larger max_position_embeddings"
            )
        if self.kind == "learned":
            return self.table(torch.arange(start, start + length, device=device))
        table = self._sinusoids.get(device)
        if table is None or table.shape[0] < start + length:
            size = min(self.max_positions, max(start + length, 64, 2 * (0 if table is None else table.shape[0])))
            with torch.no_grad(), torch.inference_mode(False):  # a constant, usable in training after an inference call
                table = sinusoidal_encoding(torch.arange(size, device=device), self.d_model)
            self._sinusoids[device] = table
        return table[start:start + length]


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE): rotates each (even, odd) pair of query/key features by an angle proportional
    to the position, so attention scores depend on relative distance."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, device=positions.device).float() / self.head_dim))
        angles = positions.float()[:, None] * inv_freq[None, :]
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat((-second, first), dim=-1) * sin.to(x.dtype)


# --- Attention and feed-forward --------------------------------------------------------------------------------------


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention: softmax(QK^T / sqrt(d_head)) V in `heads` subspaces at once.
    Self-attention when `is_cross_attention` is False (one fused QKV projection), cross-attention otherwise."""

    def __init__(self, config: CopyNatConfig, num_heads: int, is_cross_attention: bool = False, layer_idx: int = 0):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = config.d_model // num_heads
        self.dropout = config.attention_dropout
        self.is_cross_attention = is_cross_attention
        self.layer_idx = layer_idx
        d = config.d_model
        if is_cross_attention:
            self.q_proj = nn.Linear(d, d)
            self.kv_proj = nn.Linear(d, 2 * d)
        else:
            self.qkv_proj = nn.Linear(d, 3 * d)
        self.out_proj = nn.Linear(d, d)

    def _heads(self, x: torch.Tensor, parts: int = 1) -> tuple[torch.Tensor, ...]:
        """[batch, len, parts * d] -> `parts` views [batch, heads, len, head_dim] (fused projections split for free)."""
        return x.view(x.shape[0], x.shape[1], parts, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        past_key_values: Cache | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`attention_mask` is boolean, True = may attend, broadcastable to [batch, heads, query, key]."""
        if self.is_cross_attention:
            (query,) = self._heads(self.q_proj(hidden_states))
            cache = past_key_values.cross_attention_cache if past_key_values is not None else None
            if cache is not None and past_key_values.is_updated.get(self.layer_idx):
                key, value = cache.layers[self.layer_idx].keys, cache.layers[self.layer_idx].values
            else:
                key, value = self._heads(self.kv_proj(key_value_states), parts=2)
                if cache is not None:
                    key, value = cache.update(key, value, self.layer_idx)
                    past_key_values.is_updated[self.layer_idx] = True
        else:
            query, key, value = self._heads(self.qkv_proj(hidden_states), parts=3)
            if rotary is not None:
                query, key = apply_rotary(query, *rotary), apply_rotary(key, *rotary)
            if past_key_values is not None:
                cache = past_key_values.self_attention_cache
                key, value = cache.update(key, value, self.layer_idx)

        dropout = self.dropout if self.training else 0.0
        if need_weights or self.config._attn_implementation == "eager":
            scores = (query @ key.transpose(-1, -2)) / math.sqrt(self.head_dim)
            if is_causal:
                causal = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()
                attention_mask = causal if attention_mask is None else attention_mask & causal
            if attention_mask is not None:
                scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
            weights = scores.softmax(dim=-1)
            context = F.dropout(weights, p=dropout, training=self.training) @ value
        else:
            weights = None
            context = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, dropout_p=dropout, is_causal=is_causal
            )
        context = context.transpose(1, 2).reshape(hidden_states.shape[0], hidden_states.shape[1], -1)
        return self.out_proj(context), weights


class FeedForward(nn.Module):
    """Position-wise feed-forward network: the same two-layer MLP applied to every position independently."""

    def __init__(self, config: CopyNatConfig, ffn_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, config.d_model)
        self.activation = ACT2FN[config.activation_function]
        self.activation_dropout = config.activation_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.fc1(x))
        if self.training:  # F.dropout is no free no-op in eval: 4 us a call, 1% of a batch-1 NAT pass in all
            x = F.dropout(x, p=self.activation_dropout)
        return self.fc2(x)


# --- Layers ----------------------------------------------------------------------------------------------------------


class ResidualBlock(nn.Module):
    """Residual connection + LayerNorm around a sublayer: post-LN x = LN(x + f(x)) as in the paper, or pre-LN
    x = x + f(LN(x)), which trains deep stacks without warm-up tricks."""

    def __init__(self, config: CopyNatConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.d_model)
        self.normalize_before = config.normalize_before
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, sublayer) -> tuple[torch.Tensor, object]:
        out, extra = sublayer(self.norm(x) if self.normalize_before else x)
        if self.training:
            out = F.dropout(out, p=self.dropout)
        x = x + out
        return (x if self.normalize_before else self.norm(x)), extra


class EncoderLayer(GradientCheckpointingLayer):
    """Encoder layer: multi-head self-attention over the whole source (or a window / graph), then feed-forward."""

    def __init__(self, config: CopyNatConfig, layer_idx: int):
        super().__init__()
        self.self_attn = MultiHeadAttention(config, config.encoder_attention_heads, layer_idx=layer_idx)
        self.ffn = FeedForward(config, config.encoder_ffn_dim)
        self.attn_block, self.ffn_block = ResidualBlock(config), ResidualBlock(config)

    def forward(self, hidden_states, attention_mask=None, rotary=None, output_attentions=False):
        hidden_states, weights = self.attn_block(
            hidden_states, lambda x: self.self_attn(x, attention_mask=attention_mask, rotary=rotary, need_weights=output_attentions)
        )
        hidden_states, _ = self.ffn_block(hidden_states, lambda x: (self.ffn(x), None))
        return hidden_states, weights


class DecoderLayer(GradientCheckpointingLayer):
    """Decoder layer: masked self-attention over the target so far (unmasked for NAT), cross-attention to the
    encoder output, then feed-forward."""

    def __init__(self, config: CopyNatConfig, layer_idx: int):
        super().__init__()
        heads = config.decoder_attention_heads
        self.self_attn = MultiHeadAttention(config, heads, layer_idx=layer_idx)
        self.cross_attn = MultiHeadAttention(config, heads, is_cross_attention=True, layer_idx=layer_idx)
        self.ffn = FeedForward(config, config.decoder_ffn_dim)
        self.self_block, self.cross_block, self.ffn_block = ResidualBlock(config), ResidualBlock(config), ResidualBlock(config)

    def forward(self, hidden_states, encoder_hidden_states, self_attn_mask=None, is_causal=False,
                cross_attn_mask=None, rotary=None, past_key_values=None, output_attentions=False,
                cache_self_attention=True):
        self_cache = past_key_values if cache_self_attention else None
        hidden_states, self_weights = self.self_block(hidden_states, lambda x: self.self_attn(
            x, attention_mask=self_attn_mask, is_causal=is_causal, rotary=rotary,
            past_key_values=self_cache, need_weights=output_attentions))
        hidden_states, cross_weights = self.cross_block(hidden_states, lambda x: self.cross_attn(
            x, key_value_states=encoder_hidden_states, attention_mask=cross_attn_mask,
            past_key_values=past_key_values, need_weights=output_attentions))
        hidden_states, _ = self.ffn_block(hidden_states, lambda x: (self.ffn(x), None))
        return hidden_states, self_weights, cross_weights


# --- Masks -----------------------------------------------------------------------------------------------------------


def all_true_on_cpu(mask: torch.Tensor) -> bool:
    """Whether a mask hides nothing, asked only of a CPU tensor: on an accelerator the answer is a host sync, dearer
    than applying the mask."""
    return mask.device.type == "cpu" and bool(mask.all())


def source_padding_mask(attention_mask: torch.Tensor | None, source_ids: torch.Tensor | None, pad_token_id: int | None):
    """[batch, src] bool, True at real tokens. A 3-D (graph) mask does not say which positions are padding, so the
    source ids do; without either, every position is real."""
    if attention_mask is not None and attention_mask.dim() == 2:
        return attention_mask.bool()
    if source_ids is not None and pad_token_id is not None:
        return source_ids != pad_token_id
    return None


def encoder_self_attention_mask(attention_mask: torch.Tensor | None, length: int, window: int | None, device):
    """Boolean [batch or 1, 1, src, src] mask for encoder self-attention, or None when every pair may attend.

    2-D masks hide padded keys; 3-D masks are any graph's adjacency ("self-attention for graphs"), with the diagonal
    always open so no row is empty; `window` truncates attention to positions within distance k.
    """
    mask = None
    if attention_mask is not None:
        if attention_mask.dim() == 2:
            if not all_true_on_cpu(attention_mask):
                mask = attention_mask.bool()[:, None, None, :]
        elif attention_mask.dim() == 3:
            eye = torch.eye(length, dtype=torch.bool, device=device)
            mask = (attention_mask.bool() | eye)[:, None, :, :]
        else:
            raise ValueError(
                f"attention_mask must be 2-D [batch, src] (padding) or 3-D [batch, src, src] (graph adjacency); "
                f"got shape {tuple(attention_mask.shape)}"
            )
    if window is not None and window < length:
        positions = torch.arange(length, device=device)
        band = (positions[:, None] - positions[None, :]).abs() <= window
        mask = band[None, None] if mask is None else mask & band
    return mask


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
        cross_attention_weights_of_last_layer: bool = False,
        cross_attention_floor: torch.Tensor | None = None,
    ) -> BaseModelOutputWithPastAndCrossAttentions:
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        batch, length = inputs_embeds.shape[:2]
        if use_cache and past_key_values is None and causal:
            past_key_values = EncoderDecoderCache(DynamicCache(config=self.config), DynamicCache(config=self.config))
        self_cache = getattr(past_key_values, "self_attention_cache", past_key_values) if causal else None
        past = int(self_cache.get_seq_length()) if self_cache is not None else 0
        position_encoding = self.embed_positions(past, length, inputs_embeds.device)
        hidden = inputs_embeds if position_encoding is None else inputs_embeds + position_encoding.to(inputs_embeds.dtype)
        hidden = F.dropout(hidden, p=self.config.dropout, training=self.training)
        rotary = self.rotary(torch.arange(past, past + length, device=hidden.device)) if self.rotary is not None else None

        # Causal masking without a mask tensor where possible: SDPA's is_causal for a full sequence, nothing for one
        # new token (it may see the whole cache). Right-padded targets need no padding mask under a causal mask. A
        # static cache (cache_implementation="static") returns every preallocated slot: the unwritten ones are hidden.
        self_mask, is_causal = None, False
        static = self_cache is not None and self_cache.is_compileable
        slots = self_cache.get_mask_sizes(length, 0)[0] if static else past + length
        if causal and past == 0 and slots == length and length > 1:
            is_causal = True
        elif causal and (length > 1 or slots > past + length):
            query_positions = torch.arange(past, past + length, device=hidden.device)[:, None]
            self_mask = torch.arange(slots, device=hidden.device) <= query_positions
        elif not causal and decoder_padding_mask is not None and not all_true_on_cpu(decoder_padding_mask):
            self_mask = decoder_padding_mask.bool()[:, None, None, :]
        cross_mask = None
        if encoder_padding_mask is not None and not all_true_on_cpu(encoder_padding_mask):
            cross_mask = encoder_padding_mask[:, None, None, :]
        if cross_attention_floor is not None:  # monotonic decoding: no source position left of the floor
            source = torch.arange(encoder_hidden_states.shape[1], device=hidden.device)
            floor = (source[None, :] >= cross_attention_floor[:, None])[:, None, None, :]
            cross_mask = floor if cross_mask is None else cross_mask & floor

        # A parallel pass recomputes every position's self-attention, so a cache given to it holds only what does not
        # change between passes: the cross-attention keys and values of the encoder states (mask-predict reuses them).
        all_hidden, all_self, all_cross = [], [], []
        for index, layer in enumerate(self.layers):
            if output_hidden_states:
                all_hidden.append(hidden)
            want_weights = bool(output_attentions) or (cross_attention_weights_of_last_layer and index == len(self.layers) - 1)
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
        return BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=hidden,
            **{CACHE_NAME: past_key_values if use_cache else None},
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_self) if output_attentions else None,
            cross_attentions=tuple(all_cross) if output_attentions or cross_attention_weights_of_last_layer else None,
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
        caller passes `use_safetensors=False` explicitly. A corrupt or truncated weights file is named."""
        kwargs.setdefault("use_safetensors", True)
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except Exception as err:
            raise (corrupt_weights_error(pretrained_model_name_or_path, err) or err) from err

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, TokenEmbedding):
            init.normal_(module.weight, mean=0.0, std=self.config.d_model ** -0.5 if self.config.scale_embedding else self.config.init_std)
            if module.padding_idx is not None:
                init.zeros_(module.weight[module.padding_idx])
        if isinstance(module, CopyGenerator) and module.respace is not None:  # until set_vocabulary: no respacing
            init.copy_(module.respaced_ids, torch.arange(module.respaced_ids.numel()))
        if isinstance(module, CopyNatForConditionalGeneration):
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

    def forward(
        self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None, encoder_outputs: tuple | BaseModelOutput | None = None,
        past_key_values: Cache | None = None, inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None, decoder_padding_mask: torch.Tensor | None = None,
        causal: bool = True, use_cache: bool | None = None, output_attentions: bool | None = None,
        output_hidden_states: bool | None = None, return_dict: bool | None = None,
        cross_attention_weights_of_last_layer: bool = False, cross_attention_floor: torch.Tensor | None = None,
        cache: Cache | None = None, **kwargs,
    ) -> Seq2SeqModelOutput:
        past_key_values = cache if past_key_values is None else past_key_values
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                           output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = CopyNatEncoderOutput(*encoder_outputs)
        source_ids = getattr(encoder_outputs, "source_ids", None)
        source_ids = input_ids if source_ids is None else source_ids
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            raise ValueError("CopyNatModel needs decoder_input_ids (or labels, in CopyNatForConditionalGeneration)")
        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids, encoder_hidden_states=encoder_outputs.last_hidden_state,
            encoder_padding_mask=source_padding_mask(attention_mask, source_ids, self.config.pad_token_id),
            inputs_embeds=decoder_inputs_embeds, decoder_padding_mask=decoder_padding_mask, causal=causal,
            past_key_values=past_key_values, use_cache=self.config.use_cache if use_cache is None else use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            cross_attention_weights_of_last_layer=cross_attention_weights_of_last_layer,
            cross_attention_floor=cross_attention_floor,
        )
        output = Seq2SeqModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state,
            **{CACHE_NAME: decoder_outputs.get(CACHE_NAME)},
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
        )
        return output if return_dict is not False else output.to_tuple()


class CopyNatForConditionalGeneration(OutputHead, ParallelDecoder, CopyNatPreTrainedModel, GenerationMixin):
    """Sequence-to-sequence model with the output head (vocabulary projection, optional copy mechanism:
    `output_head.py`, `copy_generator.py`) and, for NAT or hybrid training, a length predictor
    (`parallel_decoder.py`). `generate()` decodes autoregressively (every Hugging Face strategy) or, with
    `non_autoregressive=True`, in parallel (`generation_copynat.py`)."""

    _tied_weights_keys = {"lm_head.weight": "model.shared.weight"}
    _keys_to_ignore_on_load_missing = [r"word_piece_classes", r"byte_token_bounds"]  # since 2026-12-06; 0 = unknown

    def __init__(self, config: CopyNatConfig):
        super().__init__(config)
        self.model = CopyNatModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.copy_generator = CopyGenerator(config) if config.use_copy_mechanism else None
        self.length_predictor = LengthPredictor(config) if config.uses_nat and config.nat_training != "ctc" else None
        # per piece, filled by set_vocabulary: how it begins and ends a UTF-8 character and a word
        self.register_buffer("byte_token_classes", whole_characters(config.vocab_size), persistent=True)
        self.register_buffer("byte_token_bounds", torch.zeros(config.vocab_size, 3, dtype=torch.int32), persistent=True)
        self.register_buffer("word_piece_classes", torch.zeros(config.vocab_size, 3, dtype=torch.int8), persistent=True)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def _check_ids(self, input_ids: torch.Tensor, labels: torch.Tensor | None) -> None:
        vocab = self.config.vocab_size
        if labels is not None:
            bad = (labels != -100) & ((labels < 0) | (labels >= vocab))
            if bool(bad.any()):
                raise ValueError(f"labels hold ids outside [0, vocab_size={vocab}) (e.g. {int(labels[bad][0])}); "
                                 "was the tokenizer trained with a larger vocabulary?")
        if bool(((input_ids < 0) | (input_ids >= vocab)).any()):
            raise ValueError(f"input_ids hold ids outside [0, vocab_size={vocab})")

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    # --- forward ------------------------------------------------------------------------------------------------------

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
            `config.decoder_mode`: "ar" teacher-forced cross-entropy, "nat" masked-target cross-entropy plus length
            loss, "hybrid" both. `decoder_input_ids` are shifted from `labels` when absent.
        output_copy_info (`bool`): return p_gen and the copy attention per target position.
        return_logits (`bool`, True): False returns `logits=None` when `labels` are given, and a copy model then
            never builds its [batch, tgt, vocab] log-mixture: the loss needs only gathered terms (faster training;
            copynat-train passes it). Ignored without labels.
        past_key_values / cache (`Cache`): the KV cache (transformers >= 5.24 passes it as `cache`); a
            `MonotonicAttention` cache (from `generate(monotonic_window=k)`) also applies and tracks the monotonic
            decoding constraint.
        num_items_in_batch (kwarg, from Trainer): the loss is a sum divided by it, so gradient accumulation is exact.
        """
        config = self.config
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        past_key_values = cache if past_key_values is None else past_key_values
        monotonic = past_key_values if isinstance(past_key_values, MonotonicAttention) else None
        if labels is not None:
            use_cache = False
            if labels.dim() != 2:
                raise ValueError(f"labels must be [batch, target_length]; got shape {tuple(labels.shape)}")
        # Ids outside the vocabulary get a clear error, checked where that is free: CPU tensors, or not training (a
        # check on an accelerator is a host sync; copynat-train's data pipeline only makes ids of its tokenizer).
        if input_ids is not None and (input_ids.device.type == "cpu" or not self.training):
            self._check_ids(input_ids, labels)
        if encoder_outputs is None:
            encoder_outputs = self.model.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                                 inputs_embeds=inputs_embeds, output_attentions=output_attentions,
                                                 output_hidden_states=output_hidden_states)
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = CopyNatEncoderOutput(*encoder_outputs)
        source_ids = getattr(encoder_outputs, "source_ids", None)
        source_ids = input_ids if source_ids is None else source_ids
        encoder_states = encoder_outputs.last_hidden_state
        source_mask = source_padding_mask(attention_mask, source_ids, config.pad_token_id)

        losses: dict[str, torch.Tensor] = {}
        local_items = (labels != -100).sum() if labels is not None else None
        # Every term is "mean over this batch x its share of the accumulated tokens", so that gradient accumulation
        # with Trainer's num_items_in_batch is exact (transformers 5 does not divide by the accumulation steps).
        share = 1.0 if num_items_in_batch is None else local_items / num_items_in_batch
        logits = p_gen = copy_attention = length_logits = None
        decoder_outputs = None

        if labels is None or config.decoder_mode != "nat":
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                if labels is None:
                    raise ValueError("pass decoder_input_ids or labels (teacher forcing), or call generate()")
                decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)
            if decoder_inputs_embeds is None:
                decoder_inputs_embeds = self.model.shared(decoder_input_ids)
            guided = labels is not None and config.guided_attention_weight > 0
            copy_cache, history = self.copy_step_state(past_key_values, decoder_input_ids)  # before the step
            decoder_outputs = self.model(
                attention_mask=attention_mask, encoder_outputs=encoder_outputs, decoder_inputs_embeds=decoder_inputs_embeds,
                past_key_values=past_key_values, use_cache=use_cache, output_attentions=output_attentions,
                output_hidden_states=output_hidden_states, cross_attention_weights_of_last_layer=guided or monotonic is not None,
                cross_attention_floor=monotonic.floor() if monotonic is not None else None, return_dict=True,
            )
            if monotonic is not None:
                monotonic.step(decoder_outputs.cross_attentions[-1])
            head = self.output_head(decoder_outputs.last_hidden_state, decoder_inputs_embeds, encoder_states,
                                    source_ids, source_mask, mixture=return_logits or labels is None,
                                    decoder_history=history, cache=copy_cache, causal=True)
            logits, p_gen, copy_attention = head.logits, head.p_gen, head.copy_attention
            if labels is not None:
                losses["ar_loss"] = self.token_loss(head, labels, source_ids, source_mask) / local_items.clamp_min(1) * share
                if head.copy is not None and head.copy.coverage_loss is not None:
                    losses["coverage_loss"] = (head.copy.coverage_loss[labels != -100].sum() / local_items.clamp_min(1)
                                               * share)
                if guided:
                    losses["guided_attention_loss"] = guided_attention_loss(
                        decoder_outputs.cross_attentions[-1], labels != -100, source_mask, config.guided_attention_sigma
                    ) / local_items.clamp_min(1) * share

        if self.length_predictor is not None:
            length_logits = self.length_predictor(encoder_states, source_mask)
        if labels is not None and config.decoder_mode != "ar":
            nat_head, nat_losses = self.nat_losses(labels, length_logits, encoder_states, source_ids, source_mask,
                                                   mixture=return_logits)
            losses.update({name: value * share for name, value in nat_losses.items()})
            if decoder_outputs is None:
                logits, p_gen, copy_attention = nat_head.logits, nat_head.p_gen, nat_head.copy_attention

        loss = None
        if losses:
            weights = {"length_loss": config.length_loss_weight, "guided_attention_loss": config.guided_attention_weight,
                       "coverage_loss": config.coverage_loss_weight}
            loss = sum(value * weights.get(name, 1.0) for name, value in losses.items())
        output = CopyNatSeq2SeqLMOutput(
            loss=loss,
            logits=logits if return_logits or labels is None else None,
            **{CACHE_NAME: decoder_outputs.get(CACHE_NAME) if decoder_outputs is not None else None},
            decoder_hidden_states=decoder_outputs.decoder_hidden_states if decoder_outputs is not None else None,
            decoder_attentions=decoder_outputs.decoder_attentions if decoder_outputs is not None else None,
            cross_attentions=decoder_outputs.cross_attentions if decoder_outputs is not None and output_attentions else None,
            encoder_last_hidden_state=encoder_states,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
            p_gen=p_gen if output_copy_info else None,
            copy_attention=copy_attention if output_copy_info else None,
            length_logits=length_logits,
            **{name: value.detach() for name, value in losses.items()},
        )
        return output if return_dict is not False else output.to_tuple()

    # --- generation ---------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, **kwargs):
        """Hugging Face generate() for AR decoding (greedy, beam, sampling, ...), plus:

        - `non_autoregressive=True, nat_iterations=N, length_beam=K, rescore_with_ar=bool, ctc_blank_penalty=b`:
          parallel decoding (see `generation_copynat.non_autoregressive_generate`);
        - `output_copy_info=True` (AR): the returned `GenerateOutput` also carries `p_gen` and `copy_attention` of
          the generated tokens, recomputed in one teacher-forced pass;
        - `monotonic_window=k` (AR: greedy, sampling, beam search): monotonic decoding, see `MonotonicAttention`;
        - `valid_utf8` (AR, default True): once `set_vocabulary` has told the model its byte-level pieces, no output
          breaks a UTF-8 character (`Utf8ValidityLogitsProcessor`); False turns the constraint off;
        - `complete_copied_words` (AR, default True): once `set_vocabulary` has run, a source word being copied is
          copied whole, no piece less and no piece more (`CopiedWordCompletionLogitsProcessor`);
        - `stop_loops` (AR, default True, after `set_vocabulary`): no unit of 1-6 pieces more than 3 times in a row
          unless the source has it so (`RepetitionBeyondSourceLogitsProcessor`).

        The copy head's location and coverage read earlier steps, which the KV cache keeps (a `CopyNatCache`).
        """
        nat_arguments = pop_nat_arguments(kwargs, generation_config or self.generation_config)
        if nat_arguments is None:
            return autoregressive_generate(self, super().generate, inputs, generation_config, **kwargs)
        if kwargs.pop("monotonic_window", None) is not None:
            raise ValueError("monotonic_window constrains autoregressive decoding; drop it with non_autoregressive")
        for step_constraint in ("valid_utf8", "complete_copied_words", "stop_loops"):  # no steps in a parallel pass
            kwargs.pop(step_constraint, None)
        return non_autoregressive_generate(self, inputs, **nat_arguments, **kwargs)


__all__ = ["CopyNatPreTrainedModel", "CopyNatModel", "CopyNatForConditionalGeneration", "CopyNatEncoderOutput",
           "CopyNatSeq2SeqLMOutput", "shift_tokens_right"]
