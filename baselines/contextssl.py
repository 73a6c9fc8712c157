"""ContextSSL: contrastive learning through a contextual (in-context) world model.

Gupta, Wang, Wang, Jaakkola, Jegelka, "In-Context Symmetries: Self-Supervised Learning through
Contextual World Models", NeurIPS 2024, arXiv:2405.18193. Built as ``Sharut/In-Context-Symmetries``
@ 124736d (MIT): ``main.py`` training step and ``nt_xent``, ``models.py`` ``BranchNetwork``,
``gptmodel.py`` ``GPT``, hyper-parameters from the README command (docs/baselines.md §3). Deviations:
baselines/PROVENANCE.md.

Each object of a batch gives ONE (x, x+) pair: two views and the relative action r (x -> x+). With
z = f(x) (encoder output, projector = Identity) the pairs become interleaved tokens

    [f(x_1) ; r_1], [f(x+_1) ; 0], [f(x_2) ; r_2], [f(x+_2) ; 0], ...               (2B, D + A)

cut into contexts of ``context_pairs`` consecutive pairs (README block_size=128 tokens = 64 pairs), so
a context holds 64 different objects. The last context of a batch that is not a multiple is zero-padded
at its end (``GPT.forward``); under the causal mask padding is invisible, i.e. it is a shorter context.
A batch smaller than ``context_pairs`` is one context of B pairs (the 32-object mini preset: 32 pairs).
Each context runs through read_in Linear(D+A -> n_embd), a pre-LN GPT (GELU MLP 4x, no positional
embedding) and read_out Linear(n_embd -> D). Attention is causal and x+_k cannot attend to its own x_k;
during training each query also drops each context pair with probability ``mask_prob`` (the "context
mask", drawn afresh in every layer). One environment e in {rot, color, rotcolor} is drawn per batch with
probabilities ``env_ratio``; the inactive part of r is zeroed in the tokens (``r[:, 4:] = 0`` for rot,
``r[:, :4] = 0`` for color). Loss (``main.py`` 250-303, without the online probes):

    NT-Xent(out; tau 0.1, cosines clamped at >= 1e-7, positives (2k, 2k+1), negatives the whole batch)
    + weight_equiv_loss * sum_{parts p active in e} MSE(aux(n(out_i))[p], l(x+_k)[p])   over all 2B tokens i

where n = L2 normalisation, aux = MLP D -> 1024 -> 1024 -> A (``aug_predictor``) and l(x+_k) the ABSOLUTE
parameters of pair k's second view (``Batch.latents[:, 1]``): on 3DIEBench its quaternion and hues. Both
tokens of a pair regress the same target. The rotation part is the first min(4, A) dims, the colour part
the rest (image datasets: the crop box / fixation, then the other augmentation parameters).

Evaluation: the probes read the encoder (``encoder``, the headline rows) and, as upstream's
``eval_equivariance.py`` does, the transformer output for a query token [f(v); 0] after a cached context of c
pairs of different objects in the rotation environment (:meth:`make_context`, :meth:`encode_context`; the
``context_*`` keys of benchmark/probes/context.py), c = min(context_pairs, B) - 1 (upstream: 126 tokens).

``aux_target="relative"`` (opt-in, not upstream) instead regresses the relative action r_k from
[n(f(x_k)), n(out(x+_k))] (``rel_aug_predictor`` shape, defined but unused upstream). That supervises
the encoder on the relative-transformation task the R^2 probes score (recorded in result.json's config).
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
KV = tuple[Tensor, Tensor]  # one block's cached keys and values, (N, heads, T, width / heads) each
ROT_DIMS = 4  # quaternion first, as in benchmark/data/rotations.py and upstream's r


@dataclass(frozen=True)
class ContextSSLConfig:
    """Defaults: the README training command (the paper's best setting), where it overrides config.yml.

    Not configurable here (shared harness settings instead): upstream's optimiser Adam lr 5e-5 * bs/256,
    wd 1e-3, 10 warm-up epochs + cosine to 0, batch 512, 1000 epochs, fp16 AMP; and its online
    linear probes, which train on detached features and do not affect the encoder.
    """

    context_pairs: int = 64  # README block_size=128 tokens = 64 (x, x+) pairs; min(this, batch) per context
    aux_target: Literal["absolute", "relative"] = "absolute"  # absolute = upstream main.py; relative: opt-in
    n_embd: int = 2048  # config.yml n_embd 2048 (about 150 M transformer parameters)
    n_layer: int = 3  # README n_layer=3
    n_head: int = 4  # config.yml n_head 4
    dropout: float = 0.0  # GPTConfig default; config.yml sets none
    temperature: float = 0.1  # README temperature=0.1 (config.yml 0.5)
    clamp_similarity: bool = True  # main.py nt_xent: (x @ x.T).clamp(min=1e-7) before the temperature
    weight_equiv_loss: float = 5.0  # README weight_equiv_loss=5.0 (config.yml 1)
    aux_hidden: int = 1024  # aug_predictor: D -> 1024 -> 1024 -> A
    random_mask: bool = True  # README random_mask=True (config.yml False)
    mask_prob: float = 0.9  # README mask_prob=0.9 (config.yml 0.15)
    # P(rot), P(color), P(rotcolor) per batch; None -> README [0.5, 0.5, 0.0] when the actions have a
    # colour part (data.latent_type=rotcolor, the upstream preset), else [1, 0, 0].
    env_ratio: tuple[float, ...] | None = None
    backbone: BackboneName = "resnet18"  # model.backbone (methods/components.py BACKBONE_DIMS)


def contextssl_nt_xent(z: Tensor, temperature: float, clamp: bool = True) -> Tensor:
    """Upstream ``main.py`` ``nt_xent``: (2N, D) interleaved [x_1, x+_1, x_2, x+_2, ...], positives (2k, 2k+1).

    The (2N-1)-way softmax excludes each row's own score (upstream subtracts 1e5, we mask with -inf).
    With ``clamp`` the cosine scores are clamped at 1e-7 first (upstream quirk: negatively correlated
    pairs all score ~0).
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
    """GPT-2 block, pre-LN: x + attn(ln_1(x)), then x + mlp(ln_2(x)) (``gptmodel.py`` ``Block``).

    Upstream names: ``attn.c_attn``, ``attn.c_proj``, ``mlp.c_fc``, ``mlp.c_proj`` (ours ``mlp_proj``).
    """

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
        return self.forward_kv(x, mask)[0]

    def forward_kv(self, x: Tensor, mask: Tensor) -> tuple[Tensor, KV]:
        """(N, T, C) -> the block's output and its keys and values (N, heads, T, C / heads)."""
        b, t, c = x.shape
        q, k, v = (u.view(b, t, self.heads, c // self.heads).transpose(1, 2)
                   for u in self.c_attn(self.ln_1(x)).split(c, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self._residual(x, y), (k, v)

    def _residual(self, x: Tensor, y: Tensor) -> Tensor:
        b, t, c = x.shape
        x = x + self.drop(self.c_proj(y.transpose(1, 2).reshape(b, t, c)))
        return x + self.drop(self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)))))

    def after(self, x: Tensor, past: KV) -> Tensor:
        """Q independent one-token queries x (1, Q, C), each attending to the cached context ``past`` (keys and
        values (1, heads, T, C / heads)) and to itself only: upstream's KV-cache inference (``layer_past``,
        an all-ones mask over the past and the query), for Q queries in one pass."""
        _, n, c = x.shape
        q, k, v = (u.view(1, n, self.heads, c // self.heads).transpose(1, 2)
                   for u in self.c_attn(self.ln_1(x)).split(c, dim=2))
        t = past[0].shape[2]
        mask = torch.cat([torch.ones(n, t, dtype=torch.bool, device=x.device),
                          torch.eye(n, dtype=torch.bool, device=x.device)], dim=1)
        y = F.scaled_dot_product_attention(q, torch.cat([past[0], k], 2), torch.cat([past[1], v], 2), attn_mask=mask)
        return self._residual(x, y)


class ContextTransformer(nn.Module):
    """read_in -> GPT blocks -> ln_f -> read_out over (N, T, in_dim) contexts -> (N, T, out_dim)."""

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
            # Upstream draws a fresh context mask in every attention layer, shared by all contexts.
            mask = context_mask(base, self.mask_prob, torch.rand(t, t // 2, device=tokens.device)) \
                if random_mask else base
            x = blk(x, mask)
        return self.read_out(self.ln_f(x))

    def context_cache(self, tokens: Tensor) -> list[KV]:
        """(T, in_dim) context tokens -> every block's keys and values over them (pair-causal mask, no random
        mask: eval), upstream's ``model(curr_x, curr_r, return_cache=True)``. T = 0 gives empty caches."""
        x = self.read_in(tokens).unsqueeze(0)
        if tokens.shape[0] == 0:
            h = self.blocks[0].heads
            empty = x.new_zeros(1, h, 0, x.shape[-1] // h)
            return [(empty, empty) for _ in self.blocks]
        base = pair_causal_mask(tokens.shape[0], tokens.device)
        cache = []
        for blk in self.blocks:
            x, kv = blk.forward_kv(x, base)
            cache.append(kv)
        return cache

    def after_context(self, queries: Tensor, cache: list[KV]) -> Tensor:
        """(Q, in_dim) query tokens, each read after the cached context alone -> (Q, out_dim)
        (``BranchNetwork.forward_eval_rplus``: ``GPT.forward(..., inference=True)`` with the past)."""
        x = self.read_in(queries).unsqueeze(0)
        for blk, past in zip(self.blocks, cache, strict=True):
            x = blk.after(x, past)
        return self.read_out(self.ln_f(x)).squeeze(0)

    def over_batch(self, tokens: Tensor, block: int, random_mask: bool) -> Tensor:
        """(2B, in_dim) interleaved pair tokens -> (2B, out_dim), contexts of ``block`` consecutive tokens.

        ``GPT.forward`` (training branch): a last partial context is zero-padded at its end, the padding
        dropped from the output.
        """
        n = tokens.shape[0]
        pad = -n % block
        if pad:
            tokens = torch.cat([tokens, tokens.new_zeros(pad, tokens.shape[1])])
        out = self(tokens.view(-1, block, tokens.shape[1]), random_mask)
        return out.reshape(n + pad, -1)[:n]


def check_latents(name: str, latents: Tensor | None, expected_dim: int, views: int) -> Tensor:
    """Fail clearly when the absolute per-view parameters (``Batch.latents``) are missing or mis-shaped."""
    if latents is None:
        raise ValueError(f"{name} (model.aux_target=absolute, as upstream) regresses the absolute parameters of "
                         f"each x+ and needs per-view latents (Batch.latents, (B, V, A)), but the batch has none; "
                         f"use a dataset that provides them (every built-in dataset does) or "
                         f"--set model.aux_target=relative")
    want = (views, expected_dim)
    if latents.ndim != 3 or tuple(latents.shape[1:]) != want:
        raise ValueError(f"{name}: latents must have shape (B, {views}, {expected_dim}) (absolute parameters of "
                         f"each view, in the layout of the actions), got {tuple(latents.shape)}")
    if not torch.isfinite(latents).all():
        raise ValueError(f"{name}: latents contain NaN/inf")
    return latents


class ContextSSL(Method):
    name = "contextssl"
    family = "equivariant"
    label = "ContextSSL"
    Config = ContextSSLConfig
    # seq-JEPA's baseline protocol: every probe reads the encoder output (docs/baselines.md §4).
    headline = {"top1": "encoder", "rotation_r2": "encoder", "color_r2": "encoder"}

    def __init__(self, cfg: ContextSSLConfig, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        a = spec.action_dim
        if a <= 0:
            raise ValueError("contextssl builds its context from actions; use a dataset with actions (action_dim > 0)")
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f"contextssl: model.n_embd {cfg.n_embd} is not divisible by model.n_head {cfg.n_head}")
        if not 0.0 <= cfg.mask_prob < 1.0:
            raise ValueError(f"contextssl: model.mask_prob must lie in [0, 1), got {cfg.mask_prob}")
        if cfg.context_pairs < 1:
            raise ValueError(f"contextssl: model.context_pairs must be >= 1 (upstream 64), got {cfg.context_pairs}")
        if cfg.aux_target not in ("absolute", "relative"):
            raise ValueError(f"contextssl: model.aux_target must be absolute or relative, got {cfg.aux_target!r}")
        self.cfg, self.spec = cfg, spec
        self.uses_actions = True
        self.needs_latents = cfg.aux_target == "absolute"  # x+'s absolute parameters (Batch.latents)
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
        # Upstream's encoder is torchvision's resnet18(pretrained=False): no zero-initialised residual BN.
        self.encoder = build_backbone(cfg.backbone, spec.small_images, zero_init_residual=False)
        self.dim: int = self.encoder.out_dim
        self.context_model = ContextTransformer(self.dim + a, self.dim, cfg)
        h = cfg.aux_hidden
        aux_in = self.dim if cfg.aux_target == "absolute" else 2 * self.dim
        self.aux_predictor = nn.Sequential(nn.Linear(aux_in, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(),
                                           nn.Linear(h, a))

    @classmethod
    def views_needed(cls, seq_len: int) -> int:
        return 2  # one (x, x+) pair per object, as upstream (data.seq_len does not change training)

    def representations(self) -> list[Representation]:
        return [Representation("encoder", self.dim, "view", "both")]

    def parts(self, env: str) -> list[slice]:
        """The action/latent components environment ``env`` keeps (rotation first, colour the rest)."""
        rot, color = slice(0, self.rot_dims), slice(self.rot_dims, self.spec.action_dim)
        return {"rot": [rot], "color": [color], "rotcolor": [rot, color]}[env]

    def sample_env(self) -> str:
        """One environment per batch, as upstream's np.random.choice over env_ratio (torch RNG: resumable)."""
        return ENVS[int(torch.multinomial(torch.tensor(self.env_ratio), 1))]

    def context_pairs(self, batch_size: int) -> int:
        """Pairs per context for a (per-rank) batch of ``batch_size`` objects: min(model.context_pairs, B)."""
        return min(self.cfg.context_pairs, batch_size)

    def pair_tokens(self, z: Tensor, action: Tensor, env: str) -> Tensor:
        """Encodings (B, 2, D) of (x, x+), actions (B, A) -> tokens (B, 2, D + A) (``GPT._combine``).

        Token 2k is [f(x_k); r_k] with the inactive environment's part of r_k zeroed, token 2k+1 is [f(x+_k); 0].
        """
        act_in = torch.zeros_like(action)
        for part in self.parts(env):
            act_in[:, part] = action[:, part]
        return torch.stack([torch.cat([z[:, 0], act_in], -1), torch.cat([z[:, 1], torch.zeros_like(action)], -1)], 1)

    def contextualise(self, z: Tensor, action: Tensor, env: str) -> Tensor:
        """Encodings (B, 2, D) of (x, x+), actions (B, A) -> transformer outputs (B, 2, D) of the
        :meth:`pair_tokens`, in contexts of :meth:`context_pairs` consecutive pairs."""
        b = z.shape[0]
        out = self.context_model.over_batch(self.pair_tokens(z, action, env).flatten(0, 1),
                                            2 * self.context_pairs(b), self.training and self.cfg.random_mask)
        return out.view(b, 2, -1)

    def loss_in_env(self, batch: Batch, env: str) -> StepOutput:
        """The training step in environment ``env`` (:meth:`training_step` draws it)."""
        views = batch.views
        if views.ndim != 5 or views.shape[1] != 2:
            raise ValueError(f"contextssl trains on one (x, x+) pair per object: views must be (B, 2, C, H, W), "
                             f"got {tuple(views.shape)}")
        action = check_actions(self.name, batch.actions, self.spec.action_dim, 2)[:, 0]
        latents = check_latents(self.name, batch.latents, self.spec.action_dim, 2) \
            if self.cfg.aux_target == "absolute" else None
        z = encode_views(self.encoder, views)  # one pass over [x_1, x+_1, x_2, ...], as upstream's x.view(2B)
        out = self.contextualise(z, action, env)
        loss_ctx = contextssl_nt_xent(out.flatten(0, 1), self.cfg.temperature, self.cfg.clamp_similarity)
        if latents is not None:
            # Every normalised token output (x_k's and x+_k's) regresses the absolute parameters of x+_k.
            aux, target = self.aux_predictor(F.normalize(out, dim=-1)), latents[:, 1:].expand(-1, 2, -1)
        else:
            aux = self.aux_predictor(torch.cat([F.normalize(z[:, 0], dim=-1), F.normalize(out[:, 1], dim=-1)], -1))
            target = action
        loss_aux = sum(F.mse_loss(aux[..., p], target[..., p]) for p in self.parts(env))
        loss = loss_ctx + self.cfg.weight_equiv_loss * loss_aux
        return StepOutput(loss, {"loss": float(loss.detach()), "loss_ctx": float(loss_ctx.detach()),
                                 "loss_aux": float(loss_aux.detach()), "env": float(ENVS.index(env)),
                                 "context_pairs": float(self.context_pairs(views.shape[0]))})

    def training_step(self, batch: Batch) -> StepOutput:
        return self.loss_in_env(batch, self.sample_env())

    @torch.no_grad()
    def encode(self, views: Tensor, actions: Tensor | None = None) -> dict[str, Tensor]:
        return {"encoder": encode_views(self.encoder, views)}

    # ---- the context representation (benchmark/probes/context.py ``InContext``): the transformer output for a
    # query view after a context of c (x, x+) pairs, as upstream's eval_equivariance.py / linear_probe.py read it.
    context_env = "rot"  # the paper's headline row (Figure 3, "ContextSSL, rot. context": 0.744 / 0.023 / 80.4)

    @property
    def context_dim(self) -> int:
        return self.dim

    def eval_context_pairs(self, train_batch_size: int) -> int:
        """c: the longest training context less the query's own pair, min(context_pairs, B) - 1 for a training
        batch of B objects (upstream: block_size 128 tokens, read at ``eval_ctxt`` 126 tokens = 63 pairs)."""
        return self.context_pairs(train_batch_size) - 1

    @torch.no_grad()
    def make_context(self, views: Tensor, actions: Tensor) -> list[KV]:
        """c (x, x+) pairs: views (c, 2, C, H, W), actions x -> x+ (c, A) -> the transformer's keys and values
        over their 2c tokens in environment :attr:`context_env` (upstream ``_create_cache`` pairs of different
        objects, ``cache_r_input`` zeroed outside the mode's part; no random mask)."""
        c = views.shape[0]
        if views.ndim != 5 or views.shape[1] != 2 or tuple(actions.shape) != (c, self.spec.action_dim):
            raise ValueError(f"contextssl: a context is (c, 2, C, H, W) views and (c, {self.spec.action_dim}) "
                             f"actions, got {tuple(views.shape)} and {tuple(actions.shape)}")
        z = encode_views(self.encoder, views) if c else views.new_zeros(0, 2, self.dim)
        return self.context_model.context_cache(self.pair_tokens(z, actions, self.context_env).flatten(0, 1))

    @torch.no_grad()
    def encode_context(self, views: Tensor, context: list[KV]) -> Tensor:
        """views (B, V, C, H, W) -> (B, V, D): the output for each view's query token [f(v); 0], read after
        ``context`` alone (``forward_eval_rplus``: r = 0 for every query, one token each)."""
        z = encode_views(self.encoder, views)
        tokens = torch.cat([z, z.new_zeros(*z.shape[:2], self.spec.action_dim)], -1)
        return self.context_model.after_context(tokens.flatten(0, 1), context).view(*z.shape[:2], -1)
