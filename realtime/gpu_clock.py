"""GPU time per pipeline stage: CUDA events around each stage's work, read without syncing.

Each stage (in whatever thread and CUDA stream it runs) records an event before and after its GPU
work on its current stream. The events are read once complete (``Event.query``: no host wait), a
frame or so later, as (stage, frame, start, end) in ms on one GPU clock (offsets from one reference
event), so intervals of stages on different streams compare. From them:

- per stage, the GPU span of its work per frame (kernels plus any gaps between them on its stream:
  an upper bound of its kernel time), beside the host wall time the engine measures;
- the GPU busy fraction: the union of all stage intervals over the timed span.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Interval:
    stage: str
    frame: int
    start_ms: float
    end_ms: float

    @property
    def ms(self) -> float:
        return self.end_ms - self.start_ms


class StageClock:
    """Events around stages on the current CUDA stream; completed intervals in ``intervals``."""

    def __init__(self, device: torch.device | str = "cuda", keep: int = 100_000):
        self.device = torch.device(device)
        self.ref = torch.cuda.Event(enable_timing=True)
        self.ref.record(torch.cuda.current_stream(self.device))
        self.pending: collections.deque = collections.deque()
        self.intervals: collections.deque[Interval] = collections.deque(maxlen=keep)

    def begin(self) -> Any:
        ev = torch.cuda.Event(enable_timing=True)
        ev.record(torch.cuda.current_stream(self.device))
        return ev

    def end(self, stage: str, frame: int, start: Any) -> None:
        ev = torch.cuda.Event(enable_timing=True)
        ev.record(torch.cuda.current_stream(self.device))
        self.pending.append((stage, frame, start, ev))

    def collect(self, wait: bool = False) -> list[Interval]:
        """Intervals whose events completed (all of them with ``wait``), oldest first; also kept."""
        done = []
        while self.pending:
            stage, frame, a, b = self.pending[0]
            if wait:
                b.synchronize()
            elif not b.query():
                break  # stages complete roughly in order; the rest next time
            self.pending.popleft()
            iv = Interval(stage, frame, self.ref.elapsed_time(a), self.ref.elapsed_time(b))
            self.intervals.append(iv)
            done.append(iv)
        return done

    def reset(self) -> None:
        self.collect(wait=True)
        self.intervals.clear()


def busy_fraction(intervals: list[Interval]) -> float:
    """Union of the intervals over their span (0 when there are none)."""
    if not intervals:
        return 0.0
    spans = sorted((iv.start_ms, iv.end_ms) for iv in intervals)
    busy, (lo, hi) = 0.0, spans[0]
    for a, b in spans[1:]:
        if a > hi:
            busy += hi - lo
            lo, hi = a, b
        else:
            hi = max(hi, b)
    busy += hi - lo
    span = max(b for _, b in spans) - spans[0][0]
    return busy / span if span > 0 else 0.0
