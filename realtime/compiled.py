"""torch.compile for a network that our own CUDA graphs then capture, with the compiled artefacts
cached on disk so a second start-up does not compile again.

Inductor's ``max-autotune-no-cudagraphs`` tunes every GEMM shape (about 200 s per batch size for
ViT-H on an H100/H200); its FX graph cache and autotune cache live under ``TORCHINDUCTOR_CACHE_DIR``
(and Triton's kernels under it), keyed by the graph and shapes, not by weight values. We point that
directory at ``cache_dir`` (default ``~/.cache/lart-stream/inductor``) and count cache hits and
misses per compile, so start-up logs say whether a start was cold or warm.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = "~/.cache/lart-stream/inductor"
COMPILE_MODE = "max-autotune-no-cudagraphs"  # our graphs capture it: inductor must not make its own


@dataclass(frozen=True)
class CompileConfig:
    mode: str = COMPILE_MODE
    backend: str = "inductor"  # "eager" in CPU tests (compiles nothing, same call path)
    cache_dir: str | None = None  # None: DEFAULT_CACHE_DIR
    recompile_limit: int = 64  # one compile per batch bucket: more than dynamo's default of 8


@dataclass
class CompileRecord:
    """One first call of the compiled network (``what`` e.g. 'batch 5'): seconds, and the hits and
    misses of inductor's FX graph cache and of AOTAutograd's cache (which, when it hits, serves the
    compiled graph without asking the FX graph cache)."""

    what: str
    seconds: float
    fx_hits: int
    fx_misses: int
    aot_hits: int
    aot_misses: int

    @property
    def warm(self) -> bool:
        """Nothing was generated or autotuned: the disk cache served it."""
        return self.fx_misses == 0 and (self.fx_hits + self.aot_hits) > 0


def parse_batches(text: str) -> tuple[int, ...]:
    """'1-4,8' -> (1, 2, 3, 4, 8); '' -> () (every batch bucket). ValueError on anything else."""
    out: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"compile batches: expected e.g. 1-4,8, got {text!r}") from None
        if not 1 <= a <= b:
            raise ValueError(f"compile batches: bad range {part!r}")
        out.update(range(a, b + 1))
    return tuple(sorted(out))


def use_cache_dir(cache_dir: str | None) -> Path:
    """Point inductor's (and Triton's) on-disk caches at ``cache_dir``; returns the folder."""
    path = Path(os.path.expanduser(cache_dir or DEFAULT_CACHE_DIR))
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)  # read by inductor whenever it looks up its cache
    os.environ.setdefault("TRITON_CACHE_DIR", str(path / "triton"))
    try:
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = True
        if hasattr(inductor_config, "autotune_local_cache"):
            inductor_config.autotune_local_cache = True
    except ImportError:  # pragma: no cover - inductor ships with torch
        pass
    return path


def compile_network(module: torch.nn.Module, cfg: CompileConfig) -> Callable[..., Any]:
    """``torch.compile(module)`` with static shapes (one compile per input shape), caches on disk."""
    path = use_cache_dir(cfg.cache_dir)
    import torch._dynamo.config as dynamo_config

    for name in ("recompile_limit", "cache_size_limit"):  # the name changed across torch versions
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), cfg.recompile_limit))
    log.info("torch.compile(%s, backend %s), cache %s", cfg.mode, cfg.backend, path)
    mode = cfg.mode if cfg.backend == "inductor" else None
    return torch.compile(module, mode=mode, backend=cfg.backend, dynamic=False)


def timed_first_call(fn: Callable[[], Any], what: str) -> tuple[Any, CompileRecord]:
    """Run ``fn`` (the compiling first call) and say how long it took and whether the cache served it."""
    before = _cache_counts()
    t = time.perf_counter()
    out = fn()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    rec = CompileRecord(what, seconds, *(b - a for a, b in zip(before, _cache_counts())))
    log.info("compiled network %s: %.1f s (%s start; FX cache %d hits %d misses, AOT cache %d hits %d misses)",
             what, rec.seconds, "warm" if rec.warm else "cold", rec.fx_hits, rec.fx_misses, rec.aot_hits,
             rec.aot_misses)
    return out, rec


def _cache_counts() -> tuple[int, int, int, int]:
    from torch._dynamo.utils import counters

    return (counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"],
            counters["aot_autograd"]["autograd_cache_hit"], counters["aot_autograd"]["autograd_cache_miss"])
