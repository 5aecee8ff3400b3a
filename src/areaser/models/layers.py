"""Area attention as a module: the functional core with its options as attributes."""

from __future__ import annotations

from torch import Tensor, nn

from areaser.models.areas import KEY_MODES, LEARNED_KEY_MODES, VALUE_MODES, AreaKeyNet, _check_layout, _pair
from areaser.models.attention import BACKENDS, area_attention


class AreaAttention(nn.Module):
    """Self area attention over a feature map ``[B, C, H, W]`` -> ``[B, C, H, W]``.

    Queries, keys and values are the map's positions (optionally projected). See the module
    docstring for the ``layout`` choices and :func:`area_attention` for the arguments it shares.

    Args:
        dim: channels C.
        max_area: largest area ``(max_h, max_w)``.
        layout: ``"2d"`` (every rectangle of the map) or ``"rows"`` (1-D spans in each row).
        scale: multiply logits by ``1 / sqrt(head_dim)``.
        project: learn Q/K/V projections (``dim -> heads * head_dim``) and an output projection.
        heads: attention heads; without projections the channels are split between them.
        head_dim: per-head size with projections (default ``dim // heads``).
        dropout: attention dropout on the area weights, in training mode only unless
            ``dropout_at_eval`` (the authors' code hard-codes ``training=True``).
        sample_at_eval: keep the sample modes' noise outside training too (authors' code).
        backend: one of :data:`BACKENDS` (see :func:`area_attention`).
    """

    def __init__(
        self,
        dim: int,
        *,
        key_mode: str = "mean",
        value_mode: str = "sum",
        max_area: int | tuple[int, int] = (3, 3),
        layout: str = "2d",
        temperature: float = 1.0,
        top_k: int = 0,
        scale: bool = False,
        project: bool = False,
        heads: int = 1,
        head_dim: int | None = None,
        dropout: float = 0.0,
        dropout_at_eval: bool = False,
        sample_at_eval: bool = False,
        block_elements: int | None = None,
        backend: str = "auto",
    ):
        super().__init__()
        _check_layout(layout)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if key_mode not in KEY_MODES:
            raise ValueError(f"key_mode must be one of {KEY_MODES}, got {key_mode!r}")
        if value_mode not in VALUE_MODES:
            raise ValueError(f"value_mode must be one of {VALUE_MODES}, got {value_mode!r}")
        if heads < 1 or (not project and dim % heads):
            raise ValueError(f"without projections dim ({dim}) must split evenly into heads ({heads})")
        self.dim, self.heads = dim, heads
        self.head_dim = (head_dim or dim // heads) if project else dim // heads
        self.key_mode, self.value_mode, self.layout = key_mode, value_mode, layout
        self.max_area = _pair(max_area)
        self.temperature, self.top_k, self.scale = temperature, top_k, scale
        self.dropout, self.dropout_at_eval, self.sample_at_eval = dropout, dropout_at_eval, sample_at_eval
        self.block_elements, self.backend = block_elements, backend
        inner = heads * self.head_dim
        self.q_proj = nn.Linear(dim, inner) if project else None
        self.k_proj = nn.Linear(dim, inner) if project else None
        self.v_proj = nn.Linear(dim, inner) if project else None
        self.out_proj = nn.Linear(inner, dim) if project else None
        learned = key_mode in LEARNED_KEY_MODES
        self.key_net = AreaKeyNet(self.head_dim, key_mode, self.max_area) if learned else None

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.dim:
            raise ValueError(f"expected a map [batch, {self.dim}, height, width], got {tuple(x.shape)}")
        b, _, H, W = x.shape
        tokens = x.permute(0, 2, 3, 1)  # [B, H, W, C], positions row-major
        q = self.q_proj(tokens) if self.q_proj is not None else tokens
        k = self.k_proj(tokens) if self.k_proj is not None else tokens
        v = self.v_proj(tokens) if self.v_proj is not None else tokens

        def split(t: Tensor) -> Tensor:  # [B, H, W, heads*d] -> attention batch
            t = t.reshape(b, H, W, self.heads, -1).permute(0, 3, 1, 2, 4)  # [B, heads, H, W, d]
            return (
                t.reshape(b * self.heads * H, W, -1) if self.layout == "rows" else t.reshape(b * self.heads, H * W, -1)
            )

        drop = self.dropout if (self.training or self.dropout_at_eval) else 0.0
        out = area_attention(
            split(q), split(k), split(v), 1 if self.layout == "rows" else H,
            max_area=self.max_area, key_mode=self.key_mode, value_mode=self.value_mode,
            temperature=self.temperature, scale=self.scale, top_k=self.top_k, dropout=drop,
            sample_noise=self.training or self.sample_at_eval, key_net=self.key_net,
            block_elements=self.block_elements, backend=self.backend,
        )  # fmt: skip
        out = out.reshape(b, self.heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(b, H, W, -1)
        if self.out_proj is not None:
            out = self.out_proj(out)
        return out.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, key_mode={self.key_mode!r}, value_mode={self.value_mode!r}, "
            f"max_area={self.max_area}, layout={self.layout!r}, heads={self.heads}, scale={self.scale}, "
            f"temperature={self.temperature}, top_k={self.top_k}, dropout={self.dropout}, "
            f"dropout_at_eval={self.dropout_at_eval}, sample_at_eval={self.sample_at_eval}"
        )
