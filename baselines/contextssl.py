"""ContextSSL: contrastive learning through a contextual (in-context) world model.

Gupta, Wang, Wang, Jaakkola, Jegelka, "In-Context Symmetries: Self-Supervised Learning through
Contextual World Models", NeurIPS 2024, arXiv:2405.18193. Follows ``Sharut/In-Context-Symmetries``
(``main.py`` training loop and ``nt_xent``, ``models.py`` ``BranchNetwork``, ``gptmodel.py`` ``GPT``,
README command), see docs/baselines.md §3.

A context is a sequence of (x, x+) pairs with relative actions r (x -> x+). With z = f(x) (512-d,
projector = Identity) the transformer sees 2L tokens

    [f(x_1) ; r_1], [f(x+_1) ; 0], [f(x_2) ; r_2], [f(x+_2) ; 0], ...       (B', 2L, 512 + A)

through read_in Linear(512+A -> n_embd), a pre-LN GPT (GELU MLP 4x, no positional embedding) and
read_out Linear(n_embd -> 512). Attention is causal and x+_k cannot attend to its own x_k; during
training each query also drops each context pair with probability ``mask_prob`` (the "context mask",
drawn afresh in every layer). Loss, per batch "environment" e in {rot, color, rotcolor}:

    NT-Xent(out(x_k), out(x+_k); tau 0.1, cosines clamped at >= 1e-7 as upstream)
    + weight_equiv_loss * MSE_e(aux([n(f(x_k)), n(out(x+_k))]), r_k)       (n = L2 normalisation)

where the inactive part of r is zeroed in the tokens (upstream: ``r[:, 4:] = 0`` in env "rot").

How our data maps onto the upstream context (both are deviations listed in baselines/PROVENANCE.md):

* Context length = the sequence length: a sample holds ``seq_len + 1`` views x_0..x_M of one object
  and its M consecutive transitions (x_j, x_{j+1}, a_j) are the (x, x+) pairs. With ``context="batch"``
  (default) the j-th pair of context b is taken from sample (b + j) mod B, so the pairs of one context
  come from different objects, as upstream's 64 (x, x+) pairs drawn from the batch; ``"object"`` keeps
  one object's own transitions in one context. Upstream's 64-pair context needs ``--seq-len 64``,
  more than 3DIEBench's 50 views per object allow (at most 49).
* The auxiliary predictor: upstream regresses the ABSOLUTE parameters of view x+ (its quaternion and
  hues) from every normalised transformer output. Our batches carry relative actions only, so it
  regresses the relative action r_k from [n(f(x_k)), n(out(x+_k))] instead (an MLP 1024 -> 1024 ->
  1024 -> A, upstream's ``rel_aug_predictor`` shape). The input deliberately excludes out(x_k), whose
  token contains r_k, so that the term cannot be solved by copying the action.
* Actions: upstream's r is 6-d (quaternion + 2 hue deltas). Any A from the DataSpec works: the
  "rotation" part is the first min(4, A) dims, the "colour" part the rest. With 4-d actions
  (data.latent_type=rot, the default) only the rotation environment exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.components import BackboneName, build_backbone, check_actions, encode_views
from methods.contract import Batch, DataSpec, Method, Representation, StepOutput

ENVS = ("rot", "color", "rotcolor")  # upstream env_ratio order
ROT_DIMS = 4  # quaternion first, as in benchmark/data/rotations.py and upstream's r


@dataclass(frozen=True)
class ContextSSLConfig:
    """Defaults: the README training command (the paper's best setting), where it overrides config.yml.

    Not configurable here (shared harness settings instead): upstream's optimiser Adam lr 5e-5 * bs/256,
    wd 1e-3, 10 warm-up epochs + cosine to 0, batch 512, 1000 epochs, fp16 AMP; and its online
    linear probes, which train on detached features and do not affect the encoder.
    """

    context: Literal["batch", "object"] = "batch"  # where a context's pairs come from (module docstring)
    n_embd: int = 2048  # config.yml n_embd 2048 (about 150 M transformer parameters)
    n_layer: int = 3  # README n_layer=3
    n_head: int = 4  # config.yml n_head 4
    dropout: float = 0.0  # GPTConfig default; config.yml sets none
    temperature: float = 0.1  # README temperature=0.1 (config.yml 0.5)
    clamp_similarity: bool = True  # main.py nt_xent: (x @ x.T).clamp(min=1e-7) before the temperature
    weight_equiv_loss: float = 5.0  # README weight_equiv_loss=5.0 (config.yml 1)
    aux_hidden: int = 1024  # aug_predictor / rel_aug_predictor: -> 1024 -> 1024 -> A
    random_mask: bool = True  # README random_mask=True (config.yml False)
    mask_prob: float = 0.9  # README mask_prob=0.9 (config.yml 0.15)
    # P(rot), P(color), P(rotcolor) per batch; None -> README [0.5, 0.5, 0.0] when the actions have a
    # colour part, else [1, 0, 0].
    env_ratio: tuple[float, ...] | None = None
    backbone: BackboneName = "resnet18"  # model.backbone (methods/components.py BACKBONE_DIMS)


def contextssl_nt_xent(z: Tensor, temperature: float, clamp: bool = True) -> Tensor:
    """Upstream ``main.py`` ``nt_xent``: (2N, D) interleaved [x_1, x+_1, x_2, x+_2, ...], positives (2k, 2k+1).

    The (2N-1)-way softmax excludes each row's own score. With ``clamp`` the cosine scores are clamped
    at 1e-7 first (upstream quirk: negatively correlated pairs all score ~0).
    """
    z = F.normalize(z, dim=1)
    sim = z @ z.T
    if clamp:
        sim = sim.clamp(min=1e-7)
    eye = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    logits = (sim / temperature).masked_fill(eye, float("-inf"))
    targets = torch.arange(z.shape[0], device=z.device) ^ 1  # 2k <-> 2k+1
    return F.cross_entropy(logits, targets)


def pair_causal_mask(t: int, device: torch.device | str = "cpu") -> Tensor:
    """(t, t) bool, True = may attend: causal, and x+_k (odd position 2k+1) never sees its own x_k (2k).

    ``gptmodel.py`` ``get_pair_attention_mask``.
    """
    mask = torch.ones(t, t, dtype=torch.bool, device=device).tril()
    odd = torch.arange(1, t, 2, device=device)
    mask[odd, odd - 1] = False
    return mask


def context_mask(base: Tensor, mask_prob: float, rand: Tensor) -> Tensor:
    """The context mask: query i drops pair j when ``rand[i, j] < mask_prob``; it always sees itself.

    base (T, T) bool from :func:`pair_causal_mask`; rand (T, T // 2) uniform in [0, 1).
    ``gptmodel.py`` ``CausalSelfAttention.forward`` (``random_mask=True``).
    """
    keep = (rand >= mask_prob).repeat_interleave(2, dim=1)
    keep = keep | torch.eye(base.shape[0], dtype=torch.bool, device=base.device)
    return base & keep


class _Block(nn.Module):
    """GPT-2 block, pre-LN: x + attn(ln_1(x)), then x + mlp(ln_2(x)) (``gptmodel.py`` ``Block``)."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln_1 = nn.LayerNorm(width)
        self.c_attn = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width)
        self.c_fc = nn.Linear(width, 4 * width)
        self.mlp_proj = nn.Linear(4 * width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = (u.view(b, t, self.heads, c // self.heads).transpose(1, 2)
                   for u in self.c_attn(self.ln_1(x)).split(c, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.c_proj(y.transpose(1, 2).reshape(b, t, c)))
        return x + self.drop(self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)))))


class ContextTransformer(nn.Module):
    """read_in -> GPT blocks -> ln_f -> read_out over (B', 2L, in_dim) pair tokens -> (B', 2L, out_dim)."""

    def __init__(self, in_dim: int, out_dim: int, cfg: ContextSSLConfig) -> None:
        super().__init__()
        self.mask_prob = cfg.mask_prob
        self.read_in = nn.Linear(in_dim, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(_Block(cfg.n_embd, cfg.n_head, cfg.dropout) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.read_out = nn.Linear(cfg.n_embd, out_dim)
        # GPT-2 init (``GPT._init_weights``): N(0, 0.02) weights, zero biases, residual projections
        # scaled by 1/sqrt(2 * n_layer).
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        for blk in self.blocks:
            for w in (blk.c_proj.weight, blk.mlp_proj.weight):
                nn.init.normal_(w, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def forward(self, tokens: Tensor, random_mask: bool) -> Tensor:
        t = tokens.shape[1]
        base = pair_causal_mask(t, tokens.device)
        x = self.drop(self.read_in(tokens))
        for blk in self.blocks:
            # Upstream draws a fresh context mask in every attention layer.
            mask = context_mask(base, self.mask_prob, torch.rand(t, t // 2, device=tokens.device)) \
                if random_mask else base
            x = blk(x, mask)
        return self.read_out(self.ln_f(x))


class ContextSSL(Method):
    name = "contextssl"
    Config = ContextSSLConfig
    # seq-JEPA's baseline protocol: every probe reads the 512-d encoder output (docs/baselines.md §4).
    headline = {"top1": "encoder", "rotation_r2": "encoder", "color_r2": "encoder"}

    def __init__(self, cfg: ContextSSLConfig, spec: DataSpec) -> None:
        super().__init__()
        a = spec.action_dim
        if a <= 0:
            raise ValueError("contextssl builds its context from actions; use a dataset with actions (action_dim > 0)")
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f"contextssl: model.n_embd {cfg.n_embd} is not divisible by model.n_head {cfg.n_head}")
        if not 0.0 <= cfg.mask_prob < 1.0:
            raise ValueError(f"contextssl: model.mask_prob must lie in [0, 1), got {cfg.mask_prob}")
        self.cfg, self.spec = cfg, spec
        self.uses_actions = True
        self.rot_dims = min(ROT_DIMS, a)
        has_color = a > self.rot_dims
        ratio = cfg.env_ratio if cfg.env_ratio is not None else ((0.5, 0.5, 0.0) if has_color else (1.0, 0.0, 0.0))
        if len(ratio) != 3 or min(ratio) < 0 or abs(sum(ratio) - 1.0) > 1e-6:
            raise ValueError(f"contextssl: model.env_ratio must be 3 non-negative probabilities of (rot, color, "
                             f"rotcolor) summing to 1, got {list(ratio)}")
        if not has_color and (ratio[1] > 0 or ratio[2] > 0):
            raise ValueError(f"contextssl: model.env_ratio {list(ratio)} samples colour environments but the "
                             f"{a}-d actions have no colour part; use --set data.latent_type=rotcolor or "
                             f"model.env_ratio=[1,0,0]")
        self.env_ratio = tuple(float(p) for p in ratio)
        self.encoder = build_backbone(cfg.backbone, spec.small_images)
        self.dim: int = self.encoder.out_dim
        self.context_model = ContextTransformer(self.dim + a, self.dim, cfg)
        h = cfg.aux_hidden
        self.aux_predictor = nn.Sequential(nn.Linear(2 * self.dim, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(),
                                           nn.Linear(h, a))

    def views_needed(self, seq_len: int) -> int:
        return seq_len + 1  # seq_len (x, x+) transitions form one context

    def representations(self) -> list[Representation]:
        return [Representation("encoder", self.dim, "view", "both")]

    def _parts(self, env: str) -> list[slice]:
        rot, color = slice(0, self.rot_dims), slice(self.rot_dims, self.spec.action_dim)
        return {"rot": [rot], "color": [color], "rotcolor": [rot, color]}[env]

    def contextualise(self, z: Tensor, actions: Tensor, env: str) -> tuple[Tensor, Tensor, Tensor]:
        """Encodings (B, V, 512), actions (B, V-1, A) -> outputs (B', 2L, 512), x encodings, actions (B', L, .).

        Token 2k is [f(x_k); r_k] and token 2k+1 is [f(x+_k); 0] of the k-th pair of each context.
        """
        b, n_pairs = z.shape[0], z.shape[1] - 1
        src, dst, act = z[:, :-1], z[:, 1:], actions
        if self.cfg.context == "batch":
            # Context b's j-th pair is sample (b + j) mod B's j-th transition: different objects per context.
            rows = (torch.arange(b, device=z.device)[:, None] + torch.arange(n_pairs, device=z.device)) % b
            cols = torch.arange(n_pairs, device=z.device).expand(b, n_pairs)
            src, dst, act = src[rows, cols], dst[rows, cols], act[rows, cols]
        act_in = torch.zeros_like(act)
        for part in self._parts(env):
            act_in[..., part] = act[..., part]  # the inactive environment's parameters are zeroed
        tokens = torch.stack([torch.cat([src, act_in], -1), torch.cat([dst, torch.zeros_like(act)], -1)], dim=2)
        out = self.context_model(tokens.flatten(1, 2), self.training and self.cfg.random_mask)
        return out, src, act

    def training_step(self, batch: Batch) -> StepOutput:
        views = batch.views
        if views.shape[1] < 2:
            raise ValueError(f"contextssl needs at least 2 views per sample (one (x, x+) pair), got {views.shape[1]}")
        actions = check_actions(self.name, batch.actions, self.spec.action_dim, views.shape[1])
        # One environment per batch, as upstream (np.random.choice over env_ratio); torch RNG for resumability.
        env = ENVS[int(torch.multinomial(torch.tensor(self.env_ratio), 1))]
        z = encode_views(self.encoder, views)
        out, src, act = self.contextualise(z, actions, env)
        loss_ctx = contextssl_nt_xent(out.flatten(0, 1), self.cfg.temperature, self.cfg.clamp_similarity)
        aux = self.aux_predictor(torch.cat([F.normalize(src, dim=-1), F.normalize(out[:, 1::2], dim=-1)], -1))
        loss_aux = sum(F.mse_loss(aux[..., p], act[..., p]) for p in self._parts(env))
        loss = loss_ctx + self.cfg.weight_equiv_loss * loss_aux
        return StepOutput(loss, {"loss": float(loss.detach()), "loss_ctx": float(loss_ctx.detach()),
                                 "loss_aux": float(loss_aux.detach()), "env": float(ENVS.index(env))})

    @torch.no_grad()
    def encode(self, views: Tensor, actions: Tensor | None = None) -> dict[str, Tensor]:
        return {"encoder": encode_views(self.encoder, views)}
