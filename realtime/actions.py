"""Action stage: LART (models/lart.py) on live tracks -> per-track AVA action scores.

    Tracks, People, frame index -> ActionPredictions

One ``update`` call is one time step. Every track gets its own sequence: the track of interest
in person slot 0 and up to N-1 other current tracks as context in slots 1..N-1; a person-frame
without a detection (or an empty slot) is a masked token, as in the reference.

mode "window" (reference computation, official weights): every ``stride`` steps, for all tracks
at once (batched), the last T steps of each track (from its first step, left-aligned at table
column 0 as the reference's evaluation window) go through a bidirectional forward. Context
tracks are the other current tracks in track-id order. The prediction for step t-k (``lookahead``
k, 0 = lowest latency) is published at step t: the mean sigmoid over the window's frames
[c-6, c+6) of the track that have been seen (the reference's ``avg.6`` pooling, clipped to the
track's frames in the window and to step t; ``lookahead`` 5 or more gives the full 12 frames).

mode "causal" (KV-cache step, ``LART.step``): every step adds the newest frame's N tokens of
each sequence and attends to the cached keys/values of the last T frames: O(new tokens x window)
per step. A frame keeps the table column (t - t_start) mod T for its whole life in the cache
(see models/lart.py). A context track keeps its slot while it lives; a freed slot is reused,
longest-free first. A sequence starts when its track first appears. The released checkpoints
were trained bidirectionally: with them this mode's accuracy is UNKNOWN. Predictions are
published every ``stride`` steps, pooled like the window mode over the causal scores of the last
T steps kept per sequence.

Inputs per detected person-frame: People.pose_vector (normalised inside the model with mean_std),
joints_3D = 45 joints (44 are padded with the zero joint) + cam_t when the checkpoint has a joint
encoder, and the appearance feature when it has one: the appearance stage's (realtime/appearance.py,
``update(..., appearance=)``; zeros where a track has none yet, as LART's training data has for
frames without a feature), else People.appearance when declared (``people_appearance``), else zeros
(warned).

A prediction is published for a track only when it was detected at the frame it refers to (the
reference scores detected key frames only). Buffers are fixed-length rings (T steps per track);
state of tracks that vanish is dropped at once.

CUDA graphs (``cuda_graphs``, on by default when the device is CUDA): the eager path launches
hundreds of small kernels per frame and is launch-bound (~10 ms on an H100 whatever the model
cost). The static path keeps every piece of device state in tensors of fixed capacity
(``max_tracks``) and replays one captured graph per frame (realtime/backends.py's ``_Graph``:
one graph per bucket of live sequences, inputs padded to the bucket; ``graph_buckets``, by default
every count 1..max_tracks, so nothing is padded). Per frame: the host fills one (pinned,
double-buffered) float32 buffer with the new observations and the index/mask/pooling inputs, one
non-blocking copy takes it straight into the graph's input buffer (the graphs' inputs are views of
that device buffer), one replay runs, one non-blocking device->host copy brings the pooled scores
into pinned memory and one event wait ends the frame: five torch calls, nothing else touches the
device. All bookkeeping stays on the host, in numpy without per-track Python loops: what follows
from the set of tracks (pool rows, sequences, context slots) is rebuilt only when that set changes
(benchmarks/lart_stage_cpu.py measures the host cost).
  causal: the graph runs encoders + LART.step (cache written by index at device-side positions) +
    head + sigmoid + the probability ring + pooling for the sequences in cache slots [0, bucket).
    Buckets rather than one capacity-sized graph: a step reads every cached key and value of every
    sequence it runs (~41 MB per sequence, official size, bf16, T=125, N=5), so capacity 16 for 5
    live tracks would read 3.2x the cache they need (~0.1-0.2 ms a frame on an H100); sequences
    are kept compact in [0, B) (swap-remove), so a bucket covers exactly the live ones. A step
    graph holds only N tokens per sequence of activations, so one graph per count costs little.
    Padding rows (coarser ``graph_buckets``) write only into slots no sequence owns; a slot is
    cleared when a sequence takes it.
  window: the graph writes the frame into the per-track feature rings, gathers every track's
    window by flat index into one padded (bucket, T, N) batch, runs forward_window + sigmoid +
    pooling. Frames without a window run (``stride``) only write the rings (a few eager kernels).
    The forward is compute-bound (T*N tokens per track), so padding 5 tracks to 8 would cost ~60%;
    the price of a graph per count is memory: each holds its activations (~15 MB per track,
    official size, bf16, T=125, N=5: ~2 GB for 1..16; ``graph_buckets=(1, 2, 4, 8)`` ~0.5 GB).
Results equal the eager path (tests/test_actions_graphs.py runs the same static-buffer path on the
CPU with the capture replaced by plain calls). Capture happens in ``warmup()`` (called by the
runtime before the stream); a bucket first met later is captured then (a causal step is idempotent
for the same inputs, so capture-time warm-up runs do not disturb the cache).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from lart_stream.models.ava import AVA_EVAL_IDS, AVA_EVAL_NAMES
from lart_stream.models.lart import JOINTS_DIM, LART, LARTConfig, POSE_DIM, load_lart, load_pose_stats
from lart_stream.models.precision import cast_matmul_weights_
from lart_stream.realtime.backends import _Graph
from lart_stream.realtime.records import ActionPredictions, AppearanceFeatures, People, Tracks

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ActionStageConfig:
    checkpoint: str | None = None  # LART .ckpt; None = random weights (loud warning)
    dim_head: int = 0  # attention head size (0: read from the checkpoint's hyper-parameters)
    mean_std: str | None = None  # mean_std.npy pose statistics; None = identity (warned)
    size: str = "tiny"  # tiny | official: only without a checkpoint (a checkpoint's shapes decide)
    mode: str = "causal"  # causal (KV-cache step) | window (trailing window, reference computation)
    window: int = 0  # T frames (0: model default, 125 official / 16 tiny)
    max_people: int = 0  # N person slots incl. the track of interest (0: model default, 5 / 3)
    stride: int = 1  # window: run every `stride` steps; causal: publish every `stride` steps
    lookahead: int = 0  # publish the prediction for step t-k at step t
    device: str = "cpu"
    top_k: int = 5
    backend: str = "auto"  # only PyTorch runs this stage; others fall back with a warning
    max_tracks: int = 16  # tracks followed at once; more are ignored (warned)
    pool_half: int = 6  # pooling over frames [c-6, c+6) as the reference's avg.6
    attention: str = "sdpa"  # sdpa | exact (explicit scores with the reference's -1e3 replacement)
    dtype: str = "float32"  # float32 | bfloat16 | float16: the whole model cast
    # fp32 | bf16: the transformer's Linear weights cast to bf16 once, their inputs cast on the way in;
    # the residual stream, LayerNorms, K/V cache, input encoders and heads stay fp32 (as HMR's default).
    # On an H200 the causal step at 5 tracks falls from 2.85 to ~1 ms of kernels (fp32 runs SIMT GEMMs).
    precision: str = "fp32"
    # People.appearance is fed to LART only when it IS the ROI feature the checkpoint was trained on
    # (MViTv2 1152-d / Hiera 2048-d); otherwise zeros are fed (warned): a tracking embedding of the
    # same width would be silently wrong.
    people_appearance: bool = False
    seed: int = 0  # random-weight initialisation
    pose_only: bool = False  # without a checkpoint: no joints input (and no appearance input unless appearance_dim)
    # Width of the features an appearance stage feeds (realtime/appearance.py; 0: none). Random weights:
    # the model takes an appearance input of this width. A checkpoint: its width must be this.
    appearance_dim: int = 0
    cuda_graphs: bool = True  # on CUDA: static buffers + one captured graph per frame (eager on the CPU)
    graph_buckets: tuple[int, ...] = ()  # live-track counts with a graph (+ max_tracks); () = 1..max_tracks
    # Several streams in one stage (realtime/multistream.py): track ids carry the stream in their bits
    # >= group_shift, and a track's context comes from its own stream only. 0: one stream.
    group_shift: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.size in ("tiny", "official"), f"size must be tiny or official, got {self.size!r}"),
            (self.mode in ("window", "causal"), f"mode must be window or causal, got {self.mode!r}"),
            (self.attention in ("sdpa", "exact"), f"attention must be sdpa or exact, got {self.attention!r}"),
            (self.dtype in _DTYPES, f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}"),
            (self.precision in ("fp32", "bf16"), f"precision must be fp32 or bf16, got {self.precision!r}"),
            (self.window >= 0 and self.max_people >= 0 and self.appearance_dim >= 0,
             "window, max_people and appearance_dim must be >= 0"),
            (self.stride >= 1, f"stride must be >= 1, got {self.stride}"),
            (self.lookahead >= 0 and self.pool_half >= 1, "lookahead must be >= 0 and pool_half >= 1"),
            (self.max_tracks >= 1 and self.top_k >= 1, "max_tracks and top_k must be >= 1"),
            (all(int(b) >= 1 for b in self.graph_buckets), f"graph_buckets must be >= 1, got {self.graph_buckets}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"ActionStageConfig: {msg}")


def _pool(probs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean of probs (B, T, C) over T with weight (B, T); rows of zero weight give 0."""
    return (probs * weight[:, :, None]).sum(1) / weight.sum(1, keepdim=True).clamp_min(1)


def _split(x: torch.Tensor, dims: tuple[int, int, int]) -> tuple[torch.Tensor | None, ...]:
    """(..., pose | joints | appearance) -> the three parts (None for a width of 0)."""
    out, lo = [], 0
    for d in dims:
        out.append(x[..., lo:lo + d] if d else None)
        lo += d
    return tuple(out)


def random_config(size: str, pose_only: bool, appearance_dim: int) -> LARTConfig:
    """The model built without a checkpoint: joints unless pose_only; an appearance input of
    ``appearance_dim`` (0: the size's default width with joints, fed zeros; none when pose_only)."""
    base = LARTConfig.tiny() if size == "tiny" else LARTConfig.official_mvit()
    kw: dict[str, int] = {}
    if pose_only:
        kw.update(joints_mid=0, joints_en=0)
    if appearance_dim:
        kw["app_dim"] = appearance_dim
    elif pose_only:
        kw.update(app_dim=0, app_mid=0, app_en=0)
    has_app = kw.get("app_dim", base.app_dim) > 0
    kw["dim"] = base.pose_en + (0 if pose_only else base.joints_en) + (base.app_en if has_app else 0)
    return (LARTConfig.tiny if size == "tiny" else LARTConfig.official_mvit)(**kw)


def cast_transformer_matmuls_(model: LART) -> LART:
    """precision bf16: the transformer's Linears to bf16 (cast once); every other module stays fp32."""
    keep = [name for name, _ in model.named_children() if name != "transformer"]
    return cast_matmul_weights_(model, torch.bfloat16, keep=keep)


def check_appearance_width(config: LARTConfig, appearance_dim: int) -> None:
    """One-line ValueError when a checkpoint's appearance input is not the appearance stage's width."""
    if appearance_dim and config.has_appearance and config.app_dim != appearance_dim:
        raise ValueError(f"the LART checkpoint takes {config.app_dim}-d appearance features "
                         f"(encoder.apperance_encoder.0.weight has {config.app_dim} input columns) but the "
                         f"appearance model gives {appearance_dim}-d features")


class _CausalGraphStep(nn.Module):
    """One causal step of sequences [0, B) as one capturable call (fixed shapes, no host syncs).

    feats (P, F) float32: this frame's features by pool row (pose | joints | appearance).
    seq (B, 2N+2+T) float32 per sequence: pool rows of its N slots | valid 0/1 (N) | ring position |
    probability ring column | pooling weights over the T ring columns.
    -> pooled scores (B, 60) float32. Writes the K/V cache, key bias and probability ring in place.
    """

    def __init__(self, model: LART, k: torch.Tensor, v: torch.Tensor, kb: torch.Tensor, probs: torch.Tensor,
                 people: int, exact: bool, dims: tuple[int, int, int]):
        super().__init__()
        self.model, self.N, self.exact, self.dims = model, people, exact, dims
        self.k, self.v, self.kb, self.probs = k, v, kb, probs  # plain attributes: the stage's state

    def forward(self, feats: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        B, N, (P, T, C) = seq.shape[0], self.N, self.probs.shape
        pose, joints, app = _split(feats.to(self.model.mask_token.dtype), self.dims)  # (P, .)
        rows = seq[:, :N].long()  # (B, N)
        valid = seq[:, N:2 * N] > 0.5
        positions = seq[:, 2 * N].long()  # (B,)
        col = seq[:, 2 * N + 1].long()
        weight = seq[:, 2 * N + 2:]  # (B, T)
        g = lambda x: None if x is None else x[rows]  # noqa: E731  (B, N, .)
        logits, *_ = self.model.step(g(pose), g(joints), g(app), valid, positions, self.k[:, :B], self.v[:, :B],
                                     self.kb[:B], self.exact, inplace=True)  # (B, 60)
        flat = torch.arange(B, device=seq.device) * T + col
        self.probs.view(P * T, C).index_copy_(0, flat, torch.sigmoid(logits.float()))
        return _pool(self.probs[:B], weight)  # (B, 60)


class _WindowGraphForward(nn.Module):
    """Ring write + trailing-window forward of B tracks as one capturable call.

    feats (P, F) float32: this frame's features by pool row; col (1,) float32: its ring column.
    seq (B, T, 2N+1) float32: flat ring index row*T + column of each (frame, slot) | valid 0/1 (N) |
    pooling weight of the frame. -> pooled scores (B, 60) float32.
    """

    def __init__(self, model: LART, rings: tuple[torch.Tensor | None, ...], people: int, exact: bool,
                 dims: tuple[int, int, int]):
        super().__init__()
        self.model, self.N, self.exact, self.dims = model, people, exact, dims
        self.rings = rings  # (P, T, .) each, the stage's state (plain attribute)

    def write(self, feats: torch.Tensor, col: torch.Tensor) -> None:
        c = col.long()
        for ring, x in zip(self.rings, _split(feats.to(self.model.mask_token.dtype), self.dims)):
            if ring is not None:
                ring.index_copy_(1, c, x[:, None])  # every pool row: unobserved rows are masked anyway

    def forward(self, feats: torch.Tensor, col: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        self.write(feats, col)
        B, T, _ = seq.shape
        N = self.N
        idx = seq[..., :N].long().reshape(-1)  # (B*T*N,)
        valid = seq[..., N:2 * N] > 0.5  # (B, T, N)
        def g(r: torch.Tensor | None) -> torch.Tensor | None:  # (B, T, N, .) gathered from a (P, T, .) ring
            return None if r is None else r.view(-1, r.shape[-1]).index_select(0, idx).view(B, T, N, -1)

        logits = self.model.forward_window(*(g(r) for r in self.rings), valid, self.exact)  # (B, T, 60)
        return _pool(torch.sigmoid(logits.float()), seq[..., 2 * N])  # (B, 60)


class _Staging:
    """Host buffers and their device twin: one H2D copy of the packed inputs per frame and one D2H copy
    of the scores into pinned memory, then one event wait. On CUDA the input buffer is pinned and
    double-buffered: the host fills one while the copy from the other may still be in flight. Tensor
    views are made once (slicing a tensor is a torch call, each a GIL release in the pipeline)."""

    def __init__(self, size: int, in_sizes: list[int], out_shape: tuple[int, int], device: torch.device):
        """size values in; in_sizes: the lengths upload() takes (one per bucket); out_shape (rows, C): the
        largest download, rows 1..rows each."""
        cuda = device.type == "cuda"
        host = [torch.zeros(size, dtype=torch.float32, pin_memory=cuda) for _ in range(2)]
        self._np = [h.numpy() for h in host]
        self._copied = [torch.cuda.Event() if cuda else None for _ in range(2)]
        self._pending = [False, False]  # an upload from this host buffer may still be running
        self.dev = torch.zeros(size, dtype=torch.float32, device=device)
        out = torch.zeros(out_shape, dtype=torch.float32, pin_memory=cuda)
        self._done = torch.cuda.Event() if cuda else None
        self._in_views = {(i, n): (host[i][:n], self.dev[:n]) for i in range(2) for n in in_sizes}
        self._out_views = {b: (out[:b], out.numpy()[:b]) for b in range(1, out_shape[0] + 1)}
        self._i = 0
        self.buf = self._np[0]
        self.wait_s = 0.0  # wall time spent in event waits since the owner last cleared it

    def next(self) -> np.ndarray:
        """The other host buffer, once the copy that last read it has finished."""
        self._i ^= 1
        if self._pending[self._i]:
            t = time.perf_counter()
            self._copied[self._i].synchronize()
            self.wait_s += time.perf_counter() - t
            self._pending[self._i] = False
        self.buf = self._np[self._i]
        return self.buf

    def upload(self, n: int, wait: bool) -> None:
        """Non-blocking copy of the first n values of the current host buffer to the device. wait: the
        frame ends with download(), whose wait covers this copy too; else an event marks its end."""
        views = self._in_views[(self._i, n)]
        views[1].copy_(views[0], non_blocking=True)
        if not wait and self._copied[self._i] is not None:
            self._copied[self._i].record()
            self._pending[self._i] = True

    def download(self, out: torch.Tensor, rows: int) -> np.ndarray:
        """out (rows, C) on the device -> host (rows, C), valid until the next download."""
        views = self._out_views[rows]
        views[0].copy_(out, non_blocking=True)
        if self._done is not None:
            self._done.record()
            t = time.perf_counter()
            self._done.synchronize()  # after every upload before it: both host buffers are free again
            self.wait_s += time.perf_counter() - t
            self._pending[0] = self._pending[1] = False
        return views[1]


class _EagerCall:
    """A bucket whose capture failed: the same static buffers, the function called eagerly."""

    def __init__(self, fn: Callable[..., tuple[torch.Tensor, ...]], static_in: list[torch.Tensor]):
        self.fn, self.static_in = fn, static_in
        self.static_out = fn(*static_in)

    def launch(self) -> None:
        self.static_out = self.fn(*self.static_in)


class ActionStage:
    """LART action recogniser (realtime.stages.ActionRecognizer)."""

    name = "lart"
    # The static path's graph class, called as realtime.backends._Graph: None = that CUDA-graph capture.
    # Tests set an eager stand-in, which also runs the static-buffer path on the CPU.
    _graph_cls: Callable[..., Any] | None = None

    def __init__(self, model: LART, cfg: ActionStageConfig, random_weights: bool):
        c = model.config
        self.model, self.cfg, self.random_weights = model, cfg, random_weights
        self.T = cfg.window or c.window
        self.N = cfg.max_people or c.max_people
        if not 1 <= self.T <= c.pos_frames:
            raise ValueError(f"window T={self.T} outside 1..{c.pos_frames} (the positional table's frames)")
        if not 1 <= self.N <= c.pos_slots:
            raise ValueError(f"max_people N={self.N} outside 1..{c.pos_slots} (the positional table's slots)")
        if cfg.lookahead >= self.T:
            raise ValueError(f"lookahead ({cfg.lookahead}) must be < window T={self.T}")
        self.device = next(model.parameters()).device
        self.dtype = model.mask_token.dtype  # of the stage's input buffers (Linears may be bf16)
        # K/V come out of the (bf16) projections: kept as they are, no cache-wide cast per step
        self.cache_dtype = torch.bfloat16 if cfg.precision == "bf16" else self.dtype
        self.exact = cfg.attention == "exact"
        self.class_ids: tuple[int, ...] = AVA_EVAL_IDS
        self.class_names: tuple[str, ...] = AVA_EVAL_NAMES
        self._warned: set[str] = set()
        self._dims = (POSE_DIM, JOINTS_DIM if c.has_joints else 0, c.app_dim if c.has_appearance else 0)
        self._F = sum(self._dims)
        self.static = cfg.cuda_graphs and (self.device.type == "cuda" or self._graph_cls is not None)
        P = cfg.max_tracks
        self.buckets = tuple(sorted({int(b) for b in cfg.graph_buckets or range(1, P + 1) if b < P} | {P}))
        # the bucket that runs n live sequences, n = 0..P
        self._bucket_of = [min(b for b in self.buckets if b >= max(n, 1)) for n in range(P + 1)]
        self._ring_steps = np.arange(self.T)
        self._allocated = False
        self.reset()
        if self.static:
            self._build_static()

    @classmethod
    def from_config(cls, cfg: ActionStageConfig) -> "ActionStage":
        if cfg.backend not in ("auto", "torch"):
            log.warning("action stage: backend %r is not available for LART; running it in PyTorch", cfg.backend)
        if cfg.checkpoint:
            if cfg.size == "tiny":
                raise ValueError("size 'tiny' with a checkpoint: a checkpoint's tensor shapes set the size")
            model, _ = load_lart(cfg.checkpoint, dim_head=cfg.dim_head or None)
            random_weights = False
            check_appearance_width(model.config, cfg.appearance_dim)
        else:
            torch.manual_seed(cfg.seed)
            model = LART(random_config(cfg.size, cfg.pose_only, cfg.appearance_dim))
            random_weights = True
            log.warning("=" * 72 + "\nLART: NO CHECKPOINT - RANDOM WEIGHTS (%s size). Action scores are "
                        "meaningless and must not be shown as predictions.\n" + "=" * 72, cfg.size)
        mean, std, _ = load_pose_stats(cfg.mean_std)
        model.set_pose_stats(mean, std)
        model = model.to(device=cfg.device, dtype=_DTYPES[cfg.dtype]).eval()
        if cfg.precision == "bf16":
            cast_transformer_matmuls_(model)
        if cfg.mode == "causal" and not random_weights:
            log.warning("LART causal mode with released (bidirectionally trained) weights: accuracy unknown")
        return cls(model, cfg, random_weights)

    def describe(self) -> str:
        how = f"CUDA graphs per bucket {list(self.buckets)}" if self.static else "eager"
        prec = self.cfg.dtype + (", bf16 matmuls" if self.cfg.precision == "bf16" else "")
        return f"LART {self.cfg.mode} (torch {self.device}, {how}, {prec})"

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget every track (e.g. on a scene cut or a new stream)."""
        T, P = self.T, self.cfg.max_tracks
        self._tau = 0  # steps seen
        self._frame_at = np.full(T, -1, np.int64)  # frame index of step tau, at tau % T
        # per-track rings, row = track slot in the pool, column = step % T
        self._row_of: dict[int, int] = {}  # track id -> pool row
        self._start = np.zeros(P, np.int64)  # step the track first appeared
        self._free_rows = list(range(P - 1, -1, -1))
        self._step_of = np.full((P, T), -1, np.int64)
        self._det = np.zeros((P, T), bool)
        self._det_now = np.zeros(P + 1, bool)  # pool rows detected at this step; row P (empty slots): never
        # membership: the current tracks sorted by id and their pool rows (-1: not followed). What is
        # derived from it (sequences, context slots) is rebuilt only when the set of tracks changes.
        self._sid = np.zeros(0, np.int64)
        self._srows = np.zeros(0, np.int64)
        self._members = 0  # bumped when the set of tracks changes
        self._built = -1  # the _members the mode's cached inputs were built for
        # causal sequences, compact: sequence b in [0, B)
        self._seq_ids: list[int] = []
        self._seq_start = np.zeros(P, np.int64)
        self._ctx = np.full((P, self.N - 1), -1, np.int64)  # context track ids per slot 1..N-1
        self._ctx_free = np.full((P, self.N - 1), np.iinfo(np.int64).min, np.int64)  # step freed
        if self.static and self._allocated:  # captured graphs hold these tensors: clear them in place
            for t in (self._pose, self._joints, self._app, self._k, self._v, self._probs):
                if t is not None:
                    t.zero_()
            if self._kb is not None:
                self._kb.fill_(float("-inf"))
            return
        self._allocate()

    def _allocate(self) -> None:
        c, T, P = self.model.config, self.T, self.cfg.max_tracks
        kw = dict(device=self.device, dtype=self.dtype)
        rings = not (self.static and self.cfg.mode == "causal")  # a static causal step reads only the new frame
        self._pose = torch.zeros(P, T, POSE_DIM, **kw) if rings else None
        self._joints = torch.zeros(P, T, JOINTS_DIM, **kw) if rings and c.has_joints else None
        self._app = torch.zeros(P, T, c.app_dim, **kw) if rings and c.has_appearance else None
        self._cap = 0
        self._k = self._v = self._kb = None
        self._probs = torch.zeros(P, T, len(self.class_ids), device=self.device, dtype=torch.float32)
        if self.static and self.cfg.mode == "causal":  # fixed capacity: graphs hold the addresses
            self._ensure_cache(P)
        self._allocated = True

    def _build_static(self) -> None:
        """Graph inputs are views of one device buffer (the staging twin): a frame's inputs arrive in
        one copy, straight where the graph of its bucket reads them."""
        P, T, N, F = self.cfg.max_tracks, self.T, self.N, self._F
        W = 2 * N + 2 + T if self.cfg.mode == "causal" else T * (2 * N + 1)  # seq values per sequence
        lo = P * F + (self.cfg.mode == "window")  # seq after feats (and the window's ring column)
        self._in_size = {b: lo + b * W for b in self.buckets}
        self._staging = st = _Staging(lo + P * W, [*self._in_size.values(), lo], (P, len(self.class_ids)),
                                      self.device)
        feats = st.dev[:P * F].view(P, F)
        if self.cfg.mode == "causal":
            self._fn = _CausalGraphStep(self.model, self._k, self._v, self._kb, self._probs, N, self.exact, self._dims)
            self._inputs = {b: [feats, st.dev[lo:lo + b * W].view(b, W)] for b in self.buckets}
        else:
            self._fn = _WindowGraphForward(self.model, (self._pose, self._joints, self._app), N, self.exact, self._dims)
            col = st.dev[P * F:lo]
            self._inputs = {b: [feats, col, st.dev[lo:lo + b * W].view(b, T, 2 * N + 1)] for b in self.buckets}
            self._ring_write = (feats, col)  # frames without a window run only write the rings
        self._graphs: dict[int, Any] = {}
        self._pool: Any = None

    def _call(self, *args: torch.Tensor) -> tuple[torch.Tensor]:
        return (self._fn(*args),)  # the graph classes take a function of tensors -> tuple of tensors

    def _capture(self, b: int) -> Any:
        static_in = self._inputs[b]
        if self.device.type == "cuda" and self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()  # one pool: the buckets' graphs never run at once
        try:
            return (self._graph_cls or _Graph)(self._call, static_in, [None] * (len(static_in) - 1) + [0],
                                               pool=self._pool)
        except RuntimeError as exc:
            log.warning("action stage: CUDA-graph capture of bucket %d failed (%s); running it eagerly", b,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            return _EagerCall(self._call, static_in)

    def _launch(self, b: int, wait: bool) -> torch.Tensor:
        """Upload this frame's inputs for bucket b and replay its graph (captured when first met);
        -> its scores (b, 60) on the device. wait: download() follows."""
        self._staging.upload(self._in_size[b], wait)
        graph = self._graphs.get(b)
        if graph is None:
            graph = self._graphs[b] = self._capture(b)
        graph.launch()
        return graph.static_out[0]

    def warmup(self) -> None:
        """Capture the graph of every bucket now, before the stream (no-op on the eager path).
        Forgets every track."""
        if not self.static:
            return
        with torch.inference_mode():
            for b in self.buckets:
                self._staging.next()[:] = 0  # all-masked inputs; what they write is cleared below
                self._launch(b, wait=False)
            self.reset()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _warn_once(self, key: str, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg)

    def _empty(self) -> ActionPredictions:
        return ActionPredictions.empty(self.class_ids, self.class_names, self.random_weights)

    def top_k(self, preds: ActionPredictions) -> list[list[tuple[int, str, float]]]:
        return preds.top_k(self.cfg.top_k)

    @property
    def sync_ms(self) -> float | None:
        """Wall ms the last ``update`` waited for the device (the static path's event waits); None on
        the eager path, whose read-back waits inside torch calls."""
        return self._staging.wait_s * 1e3 if self.static else None

    # ------------------------------------------------------------------ update

    @torch.inference_mode()
    def update(self, tracks: Tracks, people: People, frame_index: int,
               appearance: AppearanceFeatures | None = None) -> ActionPredictions:
        """One step. ``appearance``: the appearance stage's features, row-aligned with ``tracks`` (a
        track without one, ``valid`` False, gets the zero vector LART was trained on for a frame
        without a feature); None: People.appearance when declared the trained feature, else zeros."""
        if self.static:
            self._staging.wait_s = 0.0
        if people.pose_vector is None:
            return self._empty()
        tau = self._tau
        self._tau += 1
        self._frame_at[tau % self.T] = frame_index
        # 1. pool row of each track; a new set of tracks: drop the vanished ones' state, admit new ones
        ids = tracks.track_id
        pos = np.searchsorted(self._sid, ids)
        if len(ids) != len(self._sid) or not (self._sid[np.minimum(pos, len(ids) - 1)] == ids).all():
            pos = self._membership(ids, tau)
        # 2. this step's observations
        self._write(tracks, people, self._srows[pos], tau, appearance)
        # 3. run
        if self.cfg.mode == "causal":
            return self._causal(tracks, tau)
        return self._window(tracks, tau)

    def _membership(self, ids: np.ndarray, tau: int) -> np.ndarray:
        """The set of tracks changed: drop the state of tracks that vanished, admit new ones; -> the
        position of each track among the ids sorted."""
        present = set(ids.tolist())
        for tid in [t for t in self._row_of if t not in present]:
            row = self._row_of.pop(tid)
            self._step_of[row] = -1
            self._det[row] = False
            self._free_rows.append(row)
        for tid in ids.tolist():
            if tid not in self._row_of:
                if not self._free_rows:
                    self._warn_once(f"full{tid}", f"action stage follows at most {self.cfg.max_tracks} tracks: "
                                                  f"track {tid} gets no predictions (raise max_tracks)")
                    continue
                self._row_of[tid] = row = self._free_rows.pop()
                self._start[row] = tau
        # a track left out (all rows taken) is retried only when the set changes: only then can a row free up
        self._sid = np.sort(ids)
        self._srows = np.array([self._row_of.get(t, -1) for t in self._sid.tolist()], np.int64)
        self._members += 1
        return np.searchsorted(self._sid, ids)

    def _write(self, tracks: Tracks, people: People, rows: np.ndarray, tau: int,
               appearance: AppearanceFeatures | None = None) -> None:
        """Bookkeeping of this step's observations (rows: pool row per track, -1 = not followed);
        features into the device rings (eager) or into the host staging buffer by pool row (static
        path; rows without a detection stay zero)."""
        ring = tau % self.T
        if self.static:
            P, F = self.cfg.max_tracks, self._F
            feats = self._staging.next()[:P * F].reshape(P, F)
            feats[:] = 0
        self._det_now[:] = False
        keep = rows >= 0
        pi, tsu = tracks.person_index, tracks.time_since_update
        at = None if appearance is None else np.arange(len(tracks))  # track row of each kept row
        if not keep.all():
            if not keep.any():
                return
            rows, pi, tsu = rows[keep], pi[keep], tsu[keep]
            at = None if at is None else at[keep]
        if (pi >= len(people)).any():
            raise ValueError(f"Tracks.person_index {pi.max()} out of range for {len(people)} people")
        det = (tsu == 0) & (pi >= 0)
        self._step_of[rows, ring] = tau
        self._det[rows, ring] = det
        rows_d, pi_d = rows[det], pi[det]
        if not len(rows_d):
            return
        self._det_now[rows_d] = True
        values: list[np.ndarray | None] = [people.pose_vector[pi_d], None, None]  # None: zeros
        if self._dims[1]:
            values[1] = self._joint_features(people, pi_d)
        if self._dims[2] and appearance is not None:
            if appearance.dim != self._dims[2] or len(appearance) != len(tracks):
                raise ValueError(f"appearance features ({len(appearance)} x {appearance.dim}) do not fit "
                                 f"{len(tracks)} tracks x {self._dims[2]}-d")
            a = at[det]
            values[2] = appearance.feature[a] * appearance.valid[a, None]  # zeros where there is none
        elif self._dims[2]:
            app, d = people.appearance, self._dims[2]
            if not self.cfg.people_appearance or app is None or app.shape[1] != d:
                got = "not used" if not self.cfg.people_appearance else (None if app is None else app.shape[1])
                self._warn_once("app", f"LART needs {d}-d appearance features (the MViT/Hiera ROI feature it was "
                                       f"trained on); People.appearance: {got}. Feeding zeros: predictions degraded")
            else:
                values[2] = app[pi_d]
        if self.static:
            lo = 0
            for d, x in zip(self._dims, values):
                if x is not None:
                    feats[rows_d, lo:lo + d] = x
                lo += d
            return
        rows_t = torch.from_numpy(rows_d).to(self.device)
        for buf, x in zip((self._pose, self._joints, self._app), values):
            if buf is not None:
                if x is None:
                    buf[rows_t, ring] = 0
                else:
                    buf[rows_t, ring] = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(buf.device, buf.dtype)

    def _joint_features(self, people: People, idx: np.ndarray) -> np.ndarray:
        """135-d joints_3D: 45 joints + camera translation (the reference adds `camera` to each)."""
        j = people.joints_3d
        if j is None or j.shape[1] not in (44, 45):
            got = None if j is None else j.shape[1]
            self._warn_once("joints", f"LART needs 45 3D joints (People.joints_3d has {got}; an SMPL file gives "
                                      "them): feeding zeros, predictions degraded")
            return np.zeros((len(idx), JOINTS_DIM), np.float32)
        j = np.asarray(j[idx], np.float32)  # a copy (fancy index): added to in place below
        if j.shape[1] == 44:  # PHALP's 45th joint is all zeros
            j = np.concatenate([j, np.zeros((len(j), 1, 3), np.float32)], axis=1)
        if people.cam_t is not None:
            j += np.asarray(people.cam_t[idx, None, :], np.float32)
        return j.reshape(len(idx), JOINTS_DIM)

    def _gather(self, rows: np.ndarray, ring: np.ndarray) -> tuple:
        """Features at pool rows x ring columns (same shapes, indices >= 0)."""
        r = torch.from_numpy(rows).to(self.device)
        c = torch.from_numpy(ring).to(self.device)
        return tuple(None if b is None else b[r, c] for b in (self._pose, self._joints, self._app))

    def _context(self, poi: int, candidates: list[int]) -> list[int]:
        return [t for t in self._same_group(poi, candidates) if t != poi][: self.N - 1]

    def _same_group(self, poi: int, candidates: list[int]) -> list[int]:
        """The candidates of poi's stream (all of them with one stream)."""
        shift = self.cfg.group_shift
        if not shift:
            return candidates
        return [t for t in candidates if t >> shift == poi >> shift]

    def _observed(self, rows: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """bool: pool row `rows` (-1 = none) was detected at step `steps` (broadcast shapes)."""
        rs, ring = np.maximum(rows, 0), steps % self.T
        return (rows >= 0) & (steps >= 0) & (self._step_of[rs, ring] == steps) & self._det[rs, ring]

    def _predictions(self, ids: np.ndarray, scores: np.ndarray, ok: np.ndarray, c: int) -> ActionPredictions:
        """scores (n, C) of the rows of ids where ok, for step c."""
        n = len(scores)
        if not n:
            return self._empty()
        return ActionPredictions(ids[ok], np.full(n, self._frame_at[c % self.T], np.int64), scores,
                                 self.class_ids, self.class_names, self.random_weights)

    def _publish(self, ids: np.ndarray, probs: torch.Tensor, weight: np.ndarray, ok: np.ndarray,
                 c: int) -> ActionPredictions:
        """Mean of probs (B, T, C) over weight (B, T) for rows where ok (eager path)."""
        if not ok.any():
            return self._empty()
        w = torch.from_numpy(weight[ok].astype(np.float32)).to(probs.device)
        rows = torch.from_numpy(np.flatnonzero(ok)).to(probs.device)
        return self._predictions(ids, _pool(probs[rows], w).float().cpu().numpy(), ok, c)

    # ------------------------------------------------------------------ window mode

    def _window_slots(self) -> None:
        """Slot rows (the track, then its context in track-id order) of every current track, by its
        position among the sorted ids; rebuilt when the set of tracks changes."""
        order = sorted(self._row_of)
        slots = np.full((len(self._sid), self.N), -1, np.int64)
        for i, tid in enumerate(self._sid.tolist()):
            if tid in self._row_of:
                row_ids = [tid] + self._context(tid, order)
                slots[i, : len(row_ids)] = [self._row_of[t] for t in row_ids]
        self._w_slots = slots
        self._built = self._members

    def window_inputs(self, tracks: Tracks, tau: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(track ids, slot rows (B,N), window frames (B,T) as steps, valid (B,T,N)) at step tau."""
        if self._built != self._members:
            self._window_slots()
        T = self.T
        pos = np.searchsorted(self._sid, tracks.track_id)
        keep = self._srows[pos] >= 0
        ids, slots = tracks.track_id[keep], self._w_slots[pos[keep]]
        start = self._start[slots[:, 0]]
        length = np.minimum(T, tau - start + 1)
        steps = (tau - length + 1)[:, None] + self._ring_steps  # (B, T); >= tau+1 past the track's length
        in_win = self._ring_steps[None, :] < length[:, None]
        valid = in_win[:, :, None] & self._observed(slots[:, None, :], steps[:, :, None])
        return ids, slots, steps, valid

    def _window(self, tracks: Tracks, tau: int) -> ActionPredictions:
        inputs = self.window_inputs(tracks, tau) if tau % self.cfg.stride == 0 else None
        if inputs is None or not len(inputs[0]):
            if self.static:  # no window this step: the frame still goes into the rings
                P, F = self.cfg.max_tracks, self._F
                self._staging.buf[P * F] = tau % self.T
                self._staging.upload(P * F + 1, wait=False)
                self._fn.write(*self._ring_write)
            return self._empty()
        ids, slots, steps, valid = inputs
        T, N, B = self.T, self.N, len(ids)
        # publish step c = tau - k, pooled over window positions [pc-h, min(pc+h, length))
        c, h = tau - self.cfg.lookahead, self.cfg.pool_half
        pc = c - steps[:, 0]
        length = (steps <= tau).sum(1)
        p = self._ring_steps[None, :]
        weight = (p >= pc[:, None] - h) & (p < np.minimum(pc + h, length)[:, None])
        ok = (pc >= 0) & self._observed(slots[:, 0], np.full(B, c))
        if self.static:
            P, F, b = self.cfg.max_tracks, self._F, self._bucket_of[B]
            buf = self._staging.buf
            buf[P * F] = tau % T
            seq = buf[P * F + 1:P * F + 1 + b * T * (2 * N + 1)].reshape(b, T, 2 * N + 1)
            seq[:B, :, :N] = np.maximum(slots, 0)[:, None, :] * T + (steps % T)[:, :, None]  # flat ring index
            seq[:B, :, N:2 * N] = valid
            seq[:B, :, 2 * N] = weight
            seq[B:] = 0  # the bucket's padding rows: all masked
            scores = self._staging.download(self._launch(b, wait=True), b)[:B]
            return self._predictions(ids, scores[ok], ok, c)  # scores[ok] copies out of the reused buffer
        rows = np.broadcast_to(np.maximum(slots, 0)[:, None, :], (B, T, N))
        ring = np.broadcast_to((steps % T)[:, :, None], (B, T, N))
        pose, joints, app = self._gather(rows.copy(), ring.copy())
        logits = self.model.forward_window(pose, joints, app, torch.from_numpy(valid).to(self.device), self.exact)
        probs = torch.sigmoid(logits.float())  # (B, T, C)
        return self._publish(ids, probs, weight, ok, c)

    # ------------------------------------------------------------------ causal mode

    def _ensure_cache(self, n: int) -> None:
        if n <= self._cap:
            return
        cap = min(max(n, 2 * self._cap, 4), self.cfg.max_tracks)
        k, v, kb = self.model.new_cache(cap, self.T, self.N, dtype=self.cache_dtype)
        if self._cap:
            k[:, : self._cap] = self._k
            v[:, : self._cap] = self._v
            kb[: self._cap] = self._kb
        self._k, self._v, self._kb, self._cap = k, v, kb, cap

    def _causal_sequences(self, tracks: Tracks, tau: int) -> None:
        """The set of tracks changed: update sequences and their context slots, and the per-sequence
        arrays every step reads until the next change."""
        # sequences of vanished tracks go (swap-remove keeps them compact in [0, B)); the device state
        # of a moved sequence is copied by slot number: no index tensor to upload, no host sync
        origin = list(range(len(self._seq_ids)))  # the cache slot each sequence's state is in
        for b in range(len(self._seq_ids) - 1, -1, -1):
            if self._seq_ids[b] not in self._row_of:
                last = len(self._seq_ids) - 1
                if b != last:
                    self._seq_ids[b], origin[b] = self._seq_ids[last], origin[last]
                    for a in (self._seq_start, self._ctx, self._ctx_free):
                        a[b] = a[last]
                self._seq_ids.pop()
                origin.pop()
        # every destination held a vanished sequence and every source lies at or past the new end,
        # so copying one pair after another reads no slot already overwritten
        for dst, src in enumerate(origin):
            if dst != src:
                self._k[:, dst] = self._k[:, src]
                self._v[:, dst] = self._v[:, src]
                self._kb[dst] = self._kb[src]
                self._probs[dst] = self._probs[src]
        B = len(self._seq_ids)
        gone = (self._ctx[:B] >= 0) & ~np.isin(self._ctx[:B], list(self._row_of))
        self._ctx[:B][gone] = -1
        self._ctx_free[:B][gone] = tau
        # new sequences, appended: their cache slots [B, B + new) are cleared at once
        have = set(self._seq_ids)
        new = [tid for tid in tracks.track_id.tolist() if tid in self._row_of and tid not in have]
        if new:
            self._ensure_cache(B + len(new))
            for b, tid in enumerate(new, start=B):
                self._seq_ids.append(tid)
                self._seq_start[b] = self._start[self._row_of[tid]]
                self._ctx[b] = -1
                self._ctx_free[b] = np.iinfo(np.int64).min
            self._kb[B:B + len(new)] = float("-inf")
            self._k[:, B:B + len(new)] = 0
            self._v[:, B:B + len(new)] = 0
        B = len(self._seq_ids)
        order = sorted(self._row_of)
        slots = np.full((B, self.N), -1, np.int64)
        for b, tid in enumerate(self._seq_ids):
            have = set(self._ctx[b].tolist())
            free = [s for s in np.argsort(self._ctx_free[b], kind="stable") if self._ctx[b, s] < 0]
            for tid2, s in zip([t for t in self._same_group(tid, order) if t != tid and t not in have], free):
                self._ctx[b, s] = tid2
            slots[b] = [self._row_of[tid]] + [self._row_of[t] if t >= 0 else -1 for t in self._ctx[b]]
        self._c_ids = np.asarray(self._seq_ids, np.int64)
        self._c_slots = slots
        self._c_lookup = np.where(slots >= 0, slots, self.cfg.max_tracks)  # into _det_now (empty: row P)
        self._c_start = self._seq_start[:B].copy()
        self._built = self._members

    def causal_inputs(self, tracks: Tracks, tau: int) -> tuple[list[int], np.ndarray, np.ndarray]:
        """Update sequences and their context slots; (track ids, slot rows (B,N), positions (B,))."""
        if self._built != self._members:
            self._causal_sequences(tracks, tau)
        return list(self._seq_ids), self._c_slots, (tau - self._c_start) % self.T

    def _causal(self, tracks: Tracks, tau: int) -> ActionPredictions:
        if self._built != self._members:
            self._causal_sequences(tracks, tau)
        ids, slots, start = self._c_ids, self._c_slots, self._c_start
        B, T, N = len(ids), self.T, self.N
        if B == 0:
            return self._empty()
        positions = (tau - start) % T
        valid = self._det_now[self._c_lookup]  # (B, N): each slot's track detected at this step
        publish = tau % self.cfg.stride == 0
        # publish step c = tau - k, pooled over the kept steps [max(c-h, start, tau-T+1), min(c+h, tau+1))
        c, h = tau - self.cfg.lookahead, self.cfg.pool_half
        if publish:
            step_at = tau - ((tau - self._ring_steps) % T)  # step held in each ring row
            lo = np.maximum(start, max(c - h, tau - T + 1))
            weight = (step_at[None, :] >= lo[:, None]) & (step_at[None, :] < min(c + h, tau + 1))
            r0, cc = slots[:, 0], c % T
            ok = (c >= start) & (self._step_of[r0, cc] == c) & self._det[r0, cc]  # c >= start >= 0
        if self.static:
            P, F, W, b = self.cfg.max_tracks, self._F, 2 * N + 2 + T, self._bucket_of[B]
            seq = self._staging.buf[P * F:P * F + b * W].reshape(b, W)
            seq[:B, :N] = np.maximum(slots, 0)
            seq[:B, N:2 * N] = valid
            seq[:B, 2 * N] = positions
            seq[:B, 2 * N + 1] = tau % T
            seq[:B, 2 * N + 2:] = weight if publish else 0
            seq[B:] = 0  # the bucket's padding rows: all masked, they write only into slots nobody owns
            scores = self._launch(b, wait=publish)
            if not publish:  # nothing read back: the host does not wait for the GPU
                return self._empty()
            scores = self._staging.download(scores, b)[:B]
            return self._predictions(ids, scores[ok], ok, c)  # scores[ok] copies out of the reused buffer
        ring = np.full_like(slots, tau % T)
        pose, joints, app = self._gather(np.maximum(slots, 0), ring)
        logits, *_ = self.model.step(pose, joints, app, torch.from_numpy(valid).to(self.device),
                                     torch.from_numpy(positions).to(self.device),
                                     self._k[:, :B], self._v[:, :B], self._kb[:B], self.exact, inplace=True)
        self._probs[:B, tau % T] = torch.sigmoid(logits.float())
        if not publish:
            return self._empty()
        return self._publish(ids, self._probs[:B], weight, ok, c)
