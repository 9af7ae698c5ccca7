"""PyTorch CopyNat: the lecture's Transformer encoder-decoder, with a copy mechanism and a non-autoregressive decoder.

Read top to bottom: positions -> multi-head attention -> feed-forward -> encoder and decoder layers -> the two stacks
-> the copy head and the length predictor -> the Hugging Face model classes. One decoder serves autoregressive (AT)
and non-autoregressive (NAT) decoding (a causal-mask switch), and one output head serves both.

This folder is also Hub remote code: it imports only torch, transformers and its sibling files.
"""

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.generation import GenerationMixin, LogitsProcessorList
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    BaseModelOutputWithPastAndCrossAttentions,
    Seq2SeqLMOutput,
    Seq2SeqModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.modeling_utils import PreTrainedModel

from .configuration_copynat import CopyNatConfig
from .copy_generator import CopyGenerator, CopyOutput, copy_runs
from .utf8_validity import Utf8ValidityLogitsProcessor, byte_token_classes
from .generation_copynat import non_autoregressive_generate, pop_nat_arguments

# transformers 5.24 renamed the KV cache `past_key_values` -> `cache`, as generate()'s argument to forward() and as the
# output field (the old name is a deprecated alias). Forward takes both; outputs and generate() use this one.
CACHE_NAME = "cache" if "cache" in Seq2SeqLMOutput.__dataclass_fields__ else "past_key_values"


# ---------------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class CopyNatEncoderOutput(BaseModelOutput):
    """Encoder output that also carries the source token ids, so the copy head can find them at every decoding step
    (generate() passes only `encoder_outputs` to later steps, and expands it for beams)."""

    source_ids: torch.LongTensor | None = None


@dataclass
class CopyNatSeq2SeqLMOutput(Seq2SeqLMOutput):
    """Seq2SeqLMOutput plus what the copy head and the NAT decoder add.

    `logits` are log-probabilities of the copy mixture when `use_copy_mechanism` is on, plain logits otherwise.
    p_gen (`[batch, tgt]`) and copy_attention (`[batch, tgt, src]`) are filled when `output_copy_info=True`;
    length_logits (`[batch, length_classes]`) when the model has a length predictor. The loss terms are kept apart
    for logging: ar_loss, nat_loss, length_loss, guided_attention_loss.
    """

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


# ---------------------------------------------------------------------------------------------------------------------
# Embeddings and positions
# ---------------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------------
# Attention and feed-forward
# ---------------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------------------------------


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
            if not bool(attention_mask.all()):
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


# ---------------------------------------------------------------------------------------------------------------------
# Encoder and decoder stacks
# ---------------------------------------------------------------------------------------------------------------------


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
        past = past_key_values.get_seq_length() if past_key_values is not None and causal else 0
        position_encoding = self.embed_positions(past, length, inputs_embeds.device)
        hidden = inputs_embeds if position_encoding is None else inputs_embeds + position_encoding.to(inputs_embeds.dtype)
        hidden = F.dropout(hidden, p=self.config.dropout, training=self.training)
        rotary = self.rotary(torch.arange(past, past + length, device=hidden.device)) if self.rotary is not None else None

        # Causal masking without a mask tensor where possible: SDPA's is_causal for a full sequence, nothing for one
        # new token (it may see the whole cache). Right-padded targets need no padding mask under a causal mask.
        self_mask, is_causal = None, False
        if causal and length > 1:
            if past == 0:
                is_causal = True
            else:
                self_mask = torch.ones(length, past + length, dtype=torch.bool, device=hidden.device).tril(past)
        elif not causal and decoder_padding_mask is not None and not bool(decoder_padding_mask.all()):
            self_mask = decoder_padding_mask.bool()[:, None, None, :]
        cross_mask = None
        if encoder_padding_mask is not None and not bool(encoder_padding_mask.all()):
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


# ---------------------------------------------------------------------------------------------------------------------
# Output heads: copy mechanism and length predictor
# ---------------------------------------------------------------------------------------------------------------------


class HeadOutput(NamedTuple):
    """The output head's view of each target position (a tuple: `logits, p_gen, copy_attention, ... = ...`)."""

    logits: torch.Tensor | None  # vocabulary logits; with the copy mechanism log p_mix (None when mixture=False)
    p_gen: torch.Tensor | None  # [batch, tgt] generation probability (copy mechanism only)
    copy_attention: torch.Tensor | None  # [batch, tgt, src] copy distribution over source positions
    vocab_logits: torch.Tensor  # the generation logits before the copy mixture
    copy: CopyOutput | None = None  # everything the copy head computed (its slots, the coverage loss)


def max_over_last_dim(x: torch.Tensor, block: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of the maximum over the last dimension, first index on ties: torch.max(x, -1).

    On CPU torch's max/argmax with indices runs a scalar loop (~1 ns an element, 0.24 ms on [32, 8000]); finding the
    winning block of `block` columns with the vectorized amax and searching only that block is 3x faster."""
    if x.device.type != "cpu" or x.shape[-1] < 4 * block:
        return torch.max(x, dim=-1)
    flat = x.reshape(-1, x.shape[-1])
    whole = flat.shape[-1] - flat.shape[-1] % block
    block_max = flat[:, :whole].unflatten(-1, (whole // block, block)).amax(-1)
    if whole < flat.shape[-1]:
        block_max = torch.cat((block_max, flat[:, whole:].amax(-1, keepdim=True)), dim=-1)
    start = block_max.argmax(-1) * block  # the first block holding the row's maximum
    columns = (start[:, None] + torch.arange(block, device=x.device)).clamp_max(flat.shape[-1] - 1)
    values, offset = flat.gather(1, columns).max(-1)
    return values.view(x.shape[:-1]), (start + offset).view(x.shape[:-1])


class LengthPredictor(nn.Module):
    """NAT length predictor: mean of the non-pad encoder states -> a classifier over target lengths, absolute or as
    an offset from the source length (fairseq's --pred-length-offset)."""

    def __init__(self, config: CopyNatConfig):
        super().__init__()
        self.classifier = nn.Linear(config.d_model, config.length_classes)
        self.offset = config.length_prediction == "offset"
        self.num_classes = config.length_classes

    def forward(self, encoder_states: torch.Tensor, source_mask: torch.Tensor | None) -> torch.Tensor:
        if source_mask is None:
            pooled = encoder_states.mean(dim=1)
        else:
            weights = source_mask.to(encoder_states.dtype)[..., None]
            pooled = (encoder_states * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.classifier(pooled)

    def length_to_class(self, target_lengths: torch.Tensor, source_lengths: torch.Tensor) -> torch.Tensor:
        classes = target_lengths - source_lengths + self.num_classes // 2 if self.offset else target_lengths
        return classes.clamp(0, self.num_classes - 1)

    def class_to_length(self, classes: torch.Tensor, source_lengths: torch.Tensor) -> torch.Tensor:
        lengths = classes - self.num_classes // 2 + source_lengths if self.offset else classes
        return lengths.clamp_min(1)


# ---------------------------------------------------------------------------------------------------------------------
# Hugging Face model classes
# ---------------------------------------------------------------------------------------------------------------------


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

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """Loads safetensors weights only: pickle checkpoints (.bin) can run code, so they are refused unless the
        caller passes `use_safetensors=False` explicitly."""
        kwargs.setdefault("use_safetensors", True)
        return super().from_pretrained(*args, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, TokenEmbedding):
            init.normal_(module.weight, mean=0.0, std=self.config.d_model ** -0.5 if self.config.scale_embedding else self.config.init_std)
            if module.padding_idx is not None:
                init.zeros_(module.weight[module.padding_idx])
        if isinstance(module, CopyGenerator) and module.respace is not None:  # until set_vocabulary: no respacing
            init.copy_(module.respaced_ids, torch.arange(module.respaced_ids.numel()))
        if isinstance(module, CopyNatForConditionalGeneration):
            init.copy_(module.byte_token_classes, _whole_characters(module.byte_token_classes.shape[0]))


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
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        encoder_outputs: tuple | BaseModelOutput | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        decoder_padding_mask: torch.Tensor | None = None,
        causal: bool = True,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cross_attention_weights_of_last_layer: bool = False,
        cross_attention_floor: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> Seq2SeqModelOutput:
        past_key_values = cache if past_key_values is None else past_key_values
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                           output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = CopyNatEncoderOutput(*encoder_outputs)
        source_ids = getattr(encoder_outputs, "source_ids", None)
        if source_ids is None:
            source_ids = input_ids
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            raise ValueError("CopyNatModel needs decoder_input_ids (or labels, in CopyNatForConditionalGeneration)")
        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids,
            encoder_hidden_states=encoder_outputs.last_hidden_state,
            encoder_padding_mask=source_padding_mask(attention_mask, source_ids, self.config.pad_token_id),
            inputs_embeds=decoder_inputs_embeds,
            decoder_padding_mask=decoder_padding_mask,
            causal=causal,
            past_key_values=past_key_values,
            use_cache=self.config.use_cache if use_cache is None else use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
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


def guided_attention_loss(attention: torch.Tensor, target_mask: torch.Tensor, source_mask: torch.Tensor | None,
                          sigma: float) -> torch.Tensor:
    """Diagonal guided-attention loss (Tachibana et al. 2018): attention far from the diagonal t/T ~ s/S is penalised
    by 1 - exp(-(s/S - t/T)^2 / 2 sigma^2); summed over target positions, for monotonic tasks."""
    weights = attention.float().mean(dim=1)  # heads averaged: [batch, tgt, src]
    tgt_len = target_mask.sum(1, keepdim=True).clamp_min(1).float()
    src_len = (source_mask.sum(1, keepdim=True) if source_mask is not None
               else torch.full_like(tgt_len, weights.shape[-1])).clamp_min(1).float()
    t = torch.arange(weights.shape[1], device=weights.device)[None, :] / tgt_len  # [batch, tgt]
    s = torch.arange(weights.shape[2], device=weights.device)[None, :] / src_len  # [batch, src]
    penalty = 1.0 - torch.exp(-((s[:, None, :] - t[:, :, None]) ** 2) / (2 * sigma**2))
    return (weights * penalty).sum(-1)[target_mask].sum()


class CopyNatCache(EncoderDecoderCache):
    """The KV cache of copynat's generate(), which also keeps what the copy head reads of earlier steps: the decoder
    inputs so far (copy continuation) and each step's copy attention (location reads the last, coverage sums them).
    Beam search reorders, and assisted decoding crops, all of it together."""

    STEP_STATE = ("decoder_ids", "copy_attention")

    def __init__(self, config: CopyNatConfig):
        super().__init__(DynamicCache(config=config), DynamicCache(config=config))
        self.decoder_ids: torch.Tensor | None = None  # [batch, steps]
        self.copy_attention: torch.Tensor | None = None  # [batch, steps, src]

    def coverage(self) -> torch.Tensor | None:
        """[batch, src]: the copy attention summed over the steps so far."""
        return None if self.copy_attention is None else self.copy_attention.sum(1)

    def append(self, name: str, steps: torch.Tensor) -> torch.Tensor:
        """Add this call's steps to `decoder_ids` or `copy_attention`; returns all steps so far."""
        previous = getattr(self, name)
        setattr(self, name, steps if previous is None else torch.cat((previous, steps), 1))
        return getattr(self, name)

    def _map_step_state(self, function) -> None:
        for name in self.STEP_STATE:
            if getattr(self, name) is not None:
                setattr(self, name, function(getattr(self, name)))

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        self._map_step_state(lambda state: state.index_select(0, beam_idx.to(state.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        self._map_step_state(lambda state: state.repeat_interleave(repeats, 0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        self._map_step_state(lambda state: state[indices])

    def crop(self, length: int) -> None:
        """Drop the last -`length` steps (transformers 5.25 accepts only that form) or keep the first `length`."""
        super().crop(length)
        self._map_step_state(lambda state: state[:, :length])


class MonotonicAttention(CopyNatCache):
    """Monotonic decoding for monotonic tasks (speech-like, transliteration): the cross-attention of step t may not
    look left of step t-1's most attended source position by more than `window` positions.

    The KV cache of one `generate(monotonic_window=k)` call, carrying beside keys and values each row's most attended
    source position of the last step; beam search reorders both together, so every strategy keeps the constraint."""

    def __init__(self, window: int, config: CopyNatConfig):
        super().__init__(config)
        self.window = window
        self.position: torch.Tensor | None = None  # [batch] most attended source position of the last step

    def floor(self) -> torch.Tensor | None:
        return None if self.position is None else (self.position - self.window).clamp_min(0)

    def step(self, cross_attention: torch.Tensor) -> None:
        """`cross_attention`: last decoder layer, [batch, heads, tgt, src]; the newest target position counts."""
        self.position = cross_attention[:, :, -1].mean(1).argmax(-1)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        if self.position is not None:
            self.position = self.position.index_select(0, beam_idx.to(self.position.device))


def _whole_characters(vocab_size: int) -> torch.Tensor:
    """`byte_token_classes` of a vocabulary whose pieces are all whole characters (nothing to constrain)."""
    return torch.tensor([[0, 0, 0, 1]], dtype=torch.int8).repeat(vocab_size, 1)


class CopyNatForConditionalGeneration(CopyNatPreTrainedModel, GenerationMixin):
    """Sequence-to-sequence model with the output head (vocabulary projection, optional copy mechanism) and, for NAT
    or hybrid training, a length predictor. `generate()` decodes autoregressively (every Hugging Face strategy) or,
    with `non_autoregressive=True`, in parallel."""

    _tied_weights_keys = {"lm_head.weight": "model.shared.weight"}

    def __init__(self, config: CopyNatConfig):
        super().__init__(config)
        self.model = CopyNatModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.copy_generator = CopyGenerator(config) if config.use_copy_mechanism else None
        self.length_predictor = LengthPredictor(config) if config.uses_nat else None
        # per piece: how it begins and ends a UTF-8 character (`utf8_validity`); set_vocabulary fills it
        self.register_buffer("byte_token_classes", _whole_characters(config.vocab_size), persistent=True)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def set_vocabulary(self, vocab: dict[str, int]) -> None:
        """What the model needs to know of its tokenizer's pieces (`tokenizer.get_vocab()`), kept with its weights:
        which pieces are the same text with and without a leading space (the copy head's respacing), and how each
        byte-level piece begins and ends a UTF-8 character (so generate() never breaks one). copynat-train calls it;
        call it yourself after building a model around a tokenizer."""
        if self.copy_generator is not None and self.copy_generator.respace is not None:
            self.copy_generator.set_vocabulary(vocab)
        table = byte_token_classes(vocab, self.byte_token_classes.shape[0])
        self.byte_token_classes.copy_(table.to(self.byte_token_classes.device))

    def copy_step_state(self, cache: Cache | None, decoder_input_ids: torch.Tensor | None):
        """(CopyNatCache or None, decoder inputs so far) for the copy head. Continuation, location and coverage read
        earlier steps: a cached step finds them in a CopyNatCache (generate() makes one), which this call extends."""
        copier = self.copy_generator
        reads_history = copier is not None and copier.reads_earlier_steps
        if cache is None or not reads_history:
            return None, decoder_input_ids
        if not isinstance(cache, CopyNatCache):
            if cache.get_seq_length() > 0:
                raise ValueError(f"this model's copy head reads the earlier decoding steps, which it keeps in a "
                                 f"CopyNatCache; got a {type(cache).__name__}: pass CopyNatCache(model.config) (or "
                                 "let generate() make one)")
            return None, decoder_input_ids
        if decoder_input_ids is None:
            return cache, None
        return cache, cache.append("decoder_ids", decoder_input_ids)

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    # --- the one output head, shared by AT and NAT --------------------------------------------------------------------

    def output_head(self, decoder_states, decoder_inputs_embeds, encoder_states, source_ids, source_mask,
                    mixture=True, decoder_history=None, cache: "CopyNatCache | None" = None,
                    causal: bool = False) -> HeadOutput:
        """Decoder states -> HeadOutput(logits, p_gen, copy attention, vocab logits, copy). With the copy mechanism
        the logits are log p_mix, None when `mixture=False` (`token_loss` and `most_likely_tokens` do without).
        `decoder_history` (the decoder input ids up to these positions) feeds the copy continuation; `causal`
        decoding also runs location and coverage, which read the copy attention of the earlier steps: a `cache`
        keeps it between generate() steps."""
        vocab_logits = self.lm_head(decoder_states)
        copier = self.copy_generator
        if copier is None:
            return HeadOutput(vocab_logits, None, None, vocab_logits)
        if source_ids is None:
            raise ValueError("the copy mechanism needs the source token ids: pass input_ids, or encoder_outputs "
                             "produced by this model's encoder (they carry source_ids)")
        runs = None
        if decoder_history is not None and copier.continuation is not None:
            runs = copy_runs(copier.canonical_ids(decoder_history), copier.canonical_ids(source_ids),
                             decoder_states.shape[1], copier.continuation_window, source_mask)
        stepwise = causal and copier.attends_step_by_step
        copy = copier(vocab_logits, decoder_states, decoder_inputs_embeds, encoder_states, source_ids, source_mask,
                      mixture=mixture, runs=runs, stepwise=stepwise,
                      earlier=cache.copy_attention if stepwise and cache is not None else None)
        if stepwise and cache is not None:
            cache.append("copy_attention", copy.attention)
        return HeadOutput(copy.log_mixture, copy.p_gen, copy.attention, vocab_logits, copy)

    def token_loss(self, head: HeadOutput, labels: torch.Tensor, source_ids: torch.Tensor | None,
                   source_mask: torch.Tensor | None) -> torch.Tensor:
        """Summed (label-smoothed) cross-entropy of the output head over positions whose label is not -100."""
        smoothing = self.config.label_smoothing
        if self.copy_generator is None:
            return F.cross_entropy(head.logits.reshape(-1, head.logits.shape[-1]).float(), labels.reshape(-1),
                                   ignore_index=-100, reduction="sum", label_smoothing=smoothing)
        valid = labels != -100
        label, mean = self.copy_generator.loss_terms(head.vocab_logits, head.copy, labels, smoothing=smoothing > 0)
        nll = -label[valid].sum()
        if mean is None:
            return nll
        return (1.0 - smoothing) * nll - smoothing * mean[valid].sum()

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits if self.copy_generator is not None else logits.float().log_softmax(-1)

    def most_likely_tokens(self, head: HeadOutput, source_ids: torch.Tensor | None,
                           overwrite_logits: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-prob, id) of the most likely token other than `<mask>` at each position, from
        `output_head(..., mixture=False)`: the [batch, tgt, vocab] distribution is never built (parallel decoding needs
        only the winners).
        `overwrite_logits=True` lets it use `head.vocab_logits` as scratch space (parallel decoding drops them)."""
        logits = head.vocab_logits.float()
        if logits is head.vocab_logits and not overwrite_logits:
            logits = logits.clone()
        log_probs = torch.log_softmax(logits, dim=-1, out=logits)  # in place: one [batch, tgt, vocab] tensor in all
        mask_id = self.config.mask_token_id
        if mask_id is not None:  # never an output: mask-predict would read an emitted <mask> as "re-predict here"
            log_probs[..., mask_id] = float("-inf")
        top_log_prob, top_token = max_over_last_dim(log_probs)
        if self.copy_generator is None:
            return top_log_prob, top_token
        return self.copy_generator.most_likely(top_log_prob, top_token, log_probs, head.copy, banned_token_id=mask_id)

    # --- non-autoregressive decoding: inputs and one parallel pass ---------------------------------------------------

    def nat_decoder_inputs(self, tokens: torch.Tensor, target_mask: torch.Tensor, source_ids, source_mask) -> torch.Tensor:
        """Embeddings the NAT decoder reads: the (partly `<mask>`ed) target tokens, or with
        nat_decoder_inputs="copy_source" the source embeddings copied uniformly onto the target length (Gu et al.)."""
        if self.config.nat_decoder_inputs == "mask":
            return self.model.shared(tokens)
        source_embeds = self.model.shared(source_ids)
        src_len = (source_mask.sum(1) if source_mask is not None else torch.full_like(source_ids[:, 0], source_ids.shape[1]))
        tgt_len = target_mask.sum(1)
        step = (src_len - 1).float() / (tgt_len - 1).clamp_min(1).float()
        index = (torch.arange(tokens.shape[1], device=tokens.device)[None, :] * step[:, None]).round().long()
        index = index.clamp(max=(src_len - 1)[:, None].clamp_min(0))
        return source_embeds.gather(1, index[..., None].expand(-1, -1, source_embeds.shape[-1]))

    def nat_pass(self, tokens, target_mask, encoder_states, source_ids, source_mask, mixture=True, positions=None,
                 cross_attention_cache: EncoderDecoderCache | None = None):
        """One parallel decoder pass: the same decoder without the causal mask, the same output head. With
        `positions` [batch, n] the head reads only those target positions (it works position by position, so their
        outputs are the full pass's): mask-predict re-predicts only the tokens it hid again. A `cross_attention_cache`
        (an empty EncoderDecoderCache on the first pass) keeps the cross-attention keys and values for later passes
        over the same encoder states."""
        embeds = self.nat_decoder_inputs(tokens, target_mask, source_ids, source_mask)
        decoded = self.model.decoder(inputs_embeds=embeds, encoder_hidden_states=encoder_states,
                                     encoder_padding_mask=source_mask, decoder_padding_mask=target_mask, causal=False,
                                     past_key_values=cross_attention_cache, use_cache=False).last_hidden_state
        if positions is not None:
            index = positions[..., None].expand(-1, -1, decoded.shape[-1])
            decoded, embeds = decoded.gather(1, index), embeds.gather(1, index)
        return self.output_head(decoded, embeds, encoder_states, source_ids, source_mask, mixture=mixture)

    def nat_training_tokens(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditional masked LM (Mask-Predict): hide a uniformly random number (1..length) of target tokens behind
        `<mask>`; the loss is on the hidden ones. With copy_source inputs every position is predicted."""
        target_mask = labels != -100
        tokens = labels.masked_fill(~target_mask, self.config.pad_token_id)
        if self.config.nat_decoder_inputs != "mask":
            return tokens, target_mask
        lengths = target_mask.sum(1)
        num_masked = (torch.rand(lengths.shape, device=labels.device) * lengths).long() + 1
        scores = torch.rand(labels.shape, device=labels.device).masked_fill(~target_mask, 2.0)
        ranks = scores.argsort(dim=1).argsort(dim=1)
        masked = (ranks < num_masked[:, None]) & target_mask
        return tokens.masked_fill(masked, self.config.mask_token_id), masked

    # --- forward ------------------------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: tuple | BaseModelOutput | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        output_copy_info: bool = False,
        return_dict: bool | None = None,
        return_logits: bool = True,
        cache: Cache | None = None,
        **kwargs,
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
            bad = (labels != -100) & ((labels < 0) | (labels >= config.vocab_size))
            if bool(bad.any()):
                raise ValueError(f"labels hold ids outside [0, vocab_size={config.vocab_size}) (e.g. "
                                 f"{int(labels[bad][0])}); was the tokenizer trained with a larger vocabulary?")
        if input_ids is not None and bool(((input_ids < 0) | (input_ids >= config.vocab_size)).any()):
            raise ValueError(f"input_ids hold ids outside [0, vocab_size={config.vocab_size})")
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
            tokens, predicted = self.nat_training_tokens(labels)
            nat_head = self.nat_pass(tokens, labels != -100, encoder_states, source_ids, source_mask,
                                     mixture=return_logits)
            nat_labels = labels.masked_fill(~predicted, -100)
            losses["nat_loss"] = self.token_loss(nat_head, nat_labels, source_ids, source_mask) / predicted.sum().clamp_min(1) * share
            source_lengths = source_mask.sum(1) if source_mask is not None else torch.full_like(labels[:, 0], source_ids.shape[1])
            length_targets = self.length_predictor.length_to_class((labels != -100).sum(1), source_lengths)
            losses["length_loss"] = F.cross_entropy(length_logits.float(), length_targets) * share
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

        - `non_autoregressive=True, nat_iterations=N, length_beam=K, rescore_with_ar=bool`: parallel decoding (see
          `generation_copynat.non_autoregressive_generate`);
        - `output_copy_info=True` (AR): the returned `GenerateOutput` also carries `p_gen` and `copy_attention` of
          the generated tokens, recomputed in one teacher-forced pass;
        - `monotonic_window=k` (AR: greedy, sampling, beam search): monotonic decoding, see `MonotonicAttention`;
        - `valid_utf8` (AR, default True): once `set_vocabulary` has told the model its byte-level pieces, no output
          breaks a UTF-8 character (`Utf8ValidityLogitsProcessor`); False turns the constraint off.

        The copy head's continuation, location and coverage read earlier steps, which the KV cache keeps: generate()
        creates a `CopyNatCache` for them.
        """
        nat_arguments = pop_nat_arguments(kwargs, generation_config or self.generation_config)
        monotonic_window = kwargs.pop("monotonic_window", None)
        valid_utf8 = kwargs.pop("valid_utf8", True)
        if nat_arguments is not None:
            if monotonic_window is not None:
                raise ValueError("monotonic_window constrains autoregressive decoding; drop it with non_autoregressive")
            return non_autoregressive_generate(self, inputs, **nat_arguments, **kwargs)
        copier = self.copy_generator
        reads_history = copier is not None and copier.reads_earlier_steps
        use_cache = kwargs.get("use_cache", (generation_config or self.generation_config).use_cache)
        use_cache = use_cache is None or use_cache  # None: transformers' default, a cache
        if monotonic_window is not None:
            if isinstance(monotonic_window, bool) or not isinstance(monotonic_window, int) or monotonic_window < 0:
                raise ValueError(f"monotonic_window must be an int >= 0 (source positions the attention may step "
                                 f"back), got {monotonic_window!r}")
            if not use_cache or any(kwargs.get(name) is not None for name in ("past_key_values", "cache")):
                raise ValueError("monotonic_window keeps its state in the KV cache it creates: drop use_cache=False "
                                 "and past_key_values / cache")
            kwargs[CACHE_NAME] = MonotonicAttention(monotonic_window, self.config)
        elif reads_history and use_cache:
            given = kwargs.get("past_key_values", kwargs.get("cache"))
            if given is not None and not isinstance(given, CopyNatCache):
                raise ValueError(f"this model's copy head reads the earlier decoding steps, which it keeps in a "
                                 f"CopyNatCache; got a {type(given).__name__}: pass CopyNatCache(model.config) or "
                                 "no cache")
            if given is None:
                kwargs[CACHE_NAME] = CopyNatCache(self.config)
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() == 3 and kwargs.get("encoder_outputs") is None:
            # generate() takes only 2-D masks: encode with the graph mask here, and hand on the padding mask.
            source_ids = inputs if inputs is not None else kwargs["input_ids"]
            kwargs["encoder_outputs"] = self.model.encoder(input_ids=source_ids, attention_mask=mask)
            kwargs["attention_mask"] = (source_ids != self.config.pad_token_id).long()
        if valid_utf8 and bool(self.byte_token_classes[:, 2].any()):
            processors = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
            settings = generation_config or self.generation_config
            processors.append(Utf8ValidityLogitsProcessor(
                self.byte_token_classes, max_new_tokens=kwargs.get("max_new_tokens", settings.max_new_tokens),
                max_length=kwargs.get("max_length", settings.max_length)))
            kwargs["logits_processor"] = processors
        output_copy_info = kwargs.pop("output_copy_info", False)
        if not output_copy_info:
            return super().generate(inputs, generation_config=generation_config, **kwargs)
        if self.copy_generator is None:
            raise ValueError("output_copy_info=True needs a model built with use_copy_mechanism=True")
        kwargs["return_dict_in_generate"] = True
        generated = super().generate(inputs, generation_config=generation_config, **kwargs)
        input_ids = inputs if inputs is not None else kwargs.get("input_ids")
        repeats = generated.sequences.shape[0] // input_ids.shape[0]
        attention_mask = kwargs.get("attention_mask")
        scored = self(
            input_ids=input_ids.repeat_interleave(repeats, 0),
            attention_mask=attention_mask.repeat_interleave(repeats, 0) if attention_mask is not None else None,
            decoder_input_ids=generated.sequences[:, :-1], use_cache=False, output_copy_info=True,
        )
        generated["p_gen"], generated["copy_attention"] = scored.p_gen, scored.copy_attention
        return generated


# ---------------------------------------------------------------------------------------------------------------------
# Encoder tasks: one label per sequence, one label per position
# ---------------------------------------------------------------------------------------------------------------------


class CopyNatEncoderOnlyModel(CopyNatPreTrainedModel):
    """Shared base of the encoder heads: keeps the seq2seq key names (`model.shared`, `model.encoder`), so a trained
    CopyNat checkpoint fine-tunes into a classifier; the decoder is not built."""

    _tied_weights_keys = {"model.encoder.embed_tokens.weight": "model.shared.weight"}
    _ties_ignore_config = True

    def __init__(self, config: CopyNatConfig):
        super().__init__(config)
        scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.model = nn.Module()
        self.model.shared = TokenEmbedding(config.vocab_size, config.d_model, config.pad_token_id, scale)
        self.model.encoder = CopyNatEncoder(config, self.model.shared)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.shared

    def get_encoder(self, modality: str | None = None) -> CopyNatEncoder:
        return self.model.encoder

    def encode(self, input_ids, attention_mask, inputs_embeds, output_attentions, output_hidden_states):
        return self.model.encoder(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                  output_attentions=output_attentions, output_hidden_states=output_hidden_states)


class CopyNatForSequenceClassification(CopyNatEncoderOnlyModel):
    """One label per sequence (sentiment, topic): the mean of the non-pad encoder states -> a linear classifier."""

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, **kwargs) -> SequenceClassifierOutput:
        encoded = self.encode(input_ids, attention_mask, inputs_embeds, output_attentions, output_hidden_states)
        mask = source_padding_mask(attention_mask, input_ids, self.config.pad_token_id)
        states = encoded.last_hidden_state
        weights = mask.to(states.dtype)[..., None] if mask is not None else torch.ones_like(states[..., :1])
        pooled = (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            problem = self.config.problem_type or (
                "regression" if self.config.num_labels == 1
                else "single_label_classification" if labels.dtype in (torch.long, torch.int) else "multi_label_classification")
            if problem == "regression":
                loss = F.mse_loss(logits.squeeze(-1), labels.float().view(-1))
            elif problem == "single_label_classification":
                loss = F.cross_entropy(logits, labels.view(-1))
            else:
                loss = F.binary_cross_entropy_with_logits(logits, labels.float())
        output = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=encoded.hidden_states,
                                          attentions=encoded.attentions)
        return output if return_dict is not False else output.to_tuple()


class CopyNatForTokenClassification(CopyNatEncoderOnlyModel):
    """One label per position (tagging, "I saw a saw"): each encoder state -> a linear classifier."""

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, **kwargs) -> TokenClassifierOutput:
        encoded = self.encode(input_ids, attention_mask, inputs_embeds, output_attentions, output_hidden_states)
        logits = self.classifier(self.dropout(encoded.last_hidden_state))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        output = TokenClassifierOutput(loss=loss, logits=logits, hidden_states=encoded.hidden_states,
                                       attentions=encoded.attentions)
        return output if return_dict is not False else output.to_tuple()


__all__ = [
    "CopyNatPreTrainedModel",
    "CopyNatModel",
    "CopyNatForConditionalGeneration",
    "CopyNatForSequenceClassification",
    "CopyNatForTokenClassification",
    "CopyNatEncoderOutput",
    "CopyNatSeq2SeqLMOutput",
    "shift_tokens_right",
]
