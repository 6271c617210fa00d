"""Issue 12 §5: the tracker is warm before the first frame (coasting tracks drawn as such: tests/test_drawing.py)."""

import sys

import pytest

from lart_stream.realtime.config import AppConfig, TrackerSection
from lart_stream.realtime.tracking.predictors import _t_quantile


def test_built_tracker_is_warm():
    """phalp-reference's prediction interval needs scipy.stats (~1 s to import): it is primed when the
    pipeline builds the tracker, not on the first frame with tracks."""
    from lart_stream.realtime.build import _build_tracker

    _t_quantile.cache_clear()
    tracker = _build_tracker(AppConfig(tracker=TrackerSection(kind="phalp-reference")), lifter=None)
    assert tracker.name == "phalp-reference"
    assert _t_quantile.cache_info().currsize == 1 and "scipy.stats" in sys.modules
    for kind in ("lart", "iou", "auto"):
        assert _build_tracker(AppConfig(tracker=TrackerSection(kind=kind)), lifter=None) is not None


def test_unknown_tracker_in_a_config_is_a_build_error():
    from lart_stream.realtime.build import BuildError, _build_tracker

    with pytest.raises(BuildError, match="unknown tracker 'sort'"):
        _build_tracker(AppConfig(tracker=TrackerSection(kind="sort")), lifter=None)
