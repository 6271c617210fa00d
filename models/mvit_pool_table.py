"""Launch configurations for the MViT pooling kernel (models/mvit_triton.py), per pool shape.

A table measured on a GPU by ``benchmarks/device/mvit_pool.py --triton-sweep`` (its JSON's
``config_table``) can be committed as models/mvit_triton_configs.json: for each pool shape it gives the
kernel's best launch and whether the kernel beat the torch/cuDNN path there (``kernel_wins``). The
"auto" pool backend runs the kernel only for shapes the table marks as wins, and only on the device the
table was measured on. The committed table holds the H200's MViTv2-L pools at 312x374; other shapes
and GPUs take the torch path.
No triton import here: models/mvit.py reads the table on CPU-only installs too.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

COMMITTED_TABLE = Path(__file__).with_name("mvit_triton_configs.json")


@dataclass(frozen=True)
class LaunchConfig:
    """How one pooling launches: output tokens per program, warps, software-pipeline stages (used by
    the runtime tap loop), and whether the kernel taps are unrolled (``tl.static_range``) or looped."""
    block_n: int = 32
    num_warps: int = 4
    num_stages: int = 3
    unroll: bool = True
    kernel_wins: bool = False  # measured faster than the torch path for this shape: "auto" uses it

    def label(self) -> str:
        return f"bn{self.block_n} w{self.num_warps} s{self.num_stages} {'static' if self.unroll else 'loop'}"


@dataclass(frozen=True)
class PoolTable:
    """Per-shape launch configs and the device name they were measured on (None: any device)."""
    device: str | None
    shapes: Mapping[str, LaunchConfig]


EMPTY_TABLE = PoolTable(None, {})


def shape_key(channels: int, heads: int, thw: tuple[int, int, int], kernel: tuple[int, int, int],
              stride: tuple[int, int, int], padding: tuple[int, int, int], has_cls: bool) -> str:
    """One pool shape (batch excluded: the tables are measured at batch 1), e.g.
    'C72 nh8 20x20x24 k3x3x3 s1x2x2 p1x1x1 cls'."""
    def x(t: tuple[int, ...]) -> str:
        return "x".join(str(int(v)) for v in t)
    return f"C{channels} nh{heads} {x(thw)} k{x(kernel)} s{x(stride)} p{x(padding)} {'cls' if has_cls else 'nocls'}"


def table_from_json(data: Mapping) -> PoolTable:
    """{"device": str | null, "shapes": {key: {block_n, num_warps, num_stages, unroll, kernel_wins, ..}}};
    extra fields (timings) are ignored."""
    fields = set(LaunchConfig.__dataclass_fields__)
    shapes = {key: LaunchConfig(**{k: v for k, v in entry.items() if k in fields})
              for key, entry in data.get("shapes", {}).items()}
    return PoolTable(data.get("device"), shapes)


def table_to_json(table: PoolTable, extra: Mapping[str, Mapping] | None = None) -> dict:
    """The inverse of ``table_from_json``; ``extra`` adds per-shape fields (timings) to the entries."""
    return {"device": table.device,
            "shapes": {k: {**asdict(c), **(extra or {}).get(k, {})} for k, c in table.shapes.items()}}


@functools.lru_cache(maxsize=None)
def committed_table(path: Path = COMMITTED_TABLE) -> PoolTable:
    """models/mvit_triton_configs.json (read once); empty when the file is absent."""
    if not path.exists():
        return EMPTY_TABLE
    return table_from_json(json.loads(path.read_text()))


__all__ = ["COMMITTED_TABLE", "EMPTY_TABLE", "LaunchConfig", "PoolTable", "committed_table", "shape_key",
           "table_from_json", "table_to_json"]
