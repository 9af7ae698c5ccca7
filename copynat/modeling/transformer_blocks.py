"""The lecture's building blocks of the Transformer, in the order it teaches them: token embedding, positional
encoding (sinusoidal, learned, rotary), multi-head scaled dot-product attention, the position-wise feed-forward
network, residual + LayerNorm, the encoder and decoder layers, and the masks that make attention padded, truncated,
graph-shaped or causal. `modeling_copynat.py` stacks them into the encoder and decoder.

This file is part of the Hub remote code: it imports only torch, transformers and its siblings.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_layers import GradientCheckpointingLayer

from .configuration_copynat import CopyNatConfig

__all__ = ["DecoderLayer", "EncoderLayer", "FeedForward", "MultiHeadAttention", "PositionalEncoding", "ResidualBlock",
           "RotaryEmbedding", "TokenEmbedding", "all_true_on_cpu", "encoder_self_attention_mask",
           "self_attention_layout", "source_padding_mask"]


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

    def forward(self, start: int, length: int, device: torch.device,
                row_starts: torch.Tensor | None = None) -> torch.Tensor | None:
        """Encodings of positions start .. start + length - 1: [length, d_model], or None for rotary positions. With
        `row_starts` ([batch]: each row's first position; `start` is their maximum) [batch, length, d_model]: rows
        that go on from different lengths (drafted decoding)."""
        if self.kind == "rotary":
            return None
        if start + length > self.max_positions:
            raise ValueError(
                f"sequence position {start + length - 1} exceeds max_position_embeddings={self.max_positions}; "
                "truncate the input (tokenizer truncation=True) or build the model with a larger max_position_embeddings"
            )
        positions = None if row_starts is None else row_starts[:, None] + torch.arange(length, device=device)
        if self.kind == "learned":
            return self.table(torch.arange(start, start + length, device=device) if positions is None else positions)
        table = self._sinusoids.get(device)
        if table is None or table.shape[0] < start + length:
            size = min(self.max_positions, max(start + length, 64, 2 * (0 if table is None else table.shape[0])))
            with torch.no_grad(), torch.inference_mode(False):  # a constant, usable in training after an inference call
                table = sinusoidal_encoding(torch.arange(size, device=device), self.d_model)
            self._sinusoids[device] = table
        return table[start:start + length] if positions is None else table[positions]


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE): rotates each (even, odd) pair of query/key features by an angle proportional
    to the position, so attention scores depend on relative distance."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, device=positions.device).float() / self.head_dim))
        angles = positions.float()[..., None] * inv_freq
        angles = torch.cat((angles, angles), dim=-1)
        if angles.dim() == 3:  # positions per row: [batch, 1 (heads), length, head_dim]
            angles = angles.unsqueeze(1)
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


def self_attention_layout(self_cache, length: int, causal: bool, decoder_padding_mask: torch.Tensor | None,
                          device: torch.device) -> tuple[int, torch.Tensor | None, torch.Tensor | None, bool]:
    """Where this call's decoder positions start and what their self-attention may see: (first position, each row's
    first position or None, boolean mask or None, SDPA is_causal).

    Causal masking without a mask tensor where possible: SDPA's is_causal for a full sequence, nothing for one new
    token (it may see the whole cache). Right-padded targets need no padding mask under a causal mask. A static cache
    (cache_implementation="static") returns every preallocated slot: the unwritten ones are hidden. A cache whose rows
    hold different lengths (`row_lengths`, drafted decoding) keeps row b's position p in slot p: a query sees the
    slots up to its own position."""
    row_starts = getattr(self_cache, "row_lengths", None) if self_cache is not None else None
    if row_starts is not None:
        queries = row_starts[:, None] + torch.arange(length, device=device)  # [batch, length]
        slots = self_cache.slots_after_update(length)
        mask = torch.arange(slots, device=device)[None, None, :] <= queries[:, :, None]
        return self_cache.longest_row(), row_starts, mask[:, None], False
    past = int(self_cache.get_seq_length()) if self_cache is not None else 0
    static = self_cache is not None and self_cache.is_compileable
    slots = self_cache.get_mask_sizes(length, 0)[0] if static else past + length
    if causal and past == 0 and slots == length and length > 1:
        return past, None, None, True
    if causal and (length > 1 or slots > past + length):
        query_positions = torch.arange(past, past + length, device=device)[:, None]
        return past, None, torch.arange(slots, device=device) <= query_positions, False
    if not causal and decoder_padding_mask is not None and not all_true_on_cpu(decoder_padding_mask):
        return past, None, decoder_padding_mask.bool()[:, None, None, :], False
    return past, None, None, False
