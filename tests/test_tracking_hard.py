"""The hard synthetic scenes of issue 15, and the default tracker on a few seeds of each.

Numbers on seeds 0-2 when written (IDF1 mean, visible-part GT boxes; benchmarks/results/tracking/ has 20 seeds
and the held-out scenes):
  hard_crossing: lart 0.893 | phalp-reference 0.815 | iou 0.748
  hard_depth:    lart 0.878 | phalp-reference 0.806 | iou 0.743
  hard_leave:    lart 0.806 | phalp-reference 0.636 | iou 0.578   (every 2-4 s absence re-identified)
"""

import numpy as np
import pytest

from lart_stream.realtime.tracking import TrackerConfig, build_tracker
from lart_stream.realtime.tracking.metrics import OracleTracker, absences, evaluate, ground_truth, hijacks, run_scene
from lart_stream.realtime.tracking.synthetic import HARD_SUITE, HELD_OUT, LEAVE_FRAMES, make_scene

SEEDS = (0, 1, 2)


def scores(name: str) -> dict:
    out = {}
    for seed in SEEDS:
        scene = make_scene(name, seed=seed)
        gt = ground_truth(scene.frames)
        for kind in ("lart", "phalp-reference", "iou"):
            run = run_scene(build_tracker(kind, TrackerConfig()), scene)
            out[kind, seed] = (evaluate(gt, run.hyp).idf1, absences(scene, run), hijacks(scene, run))
    return out


@pytest.mark.parametrize("name", HARD_SUITE)
def test_lart_beats_iou_and_phalp_reference(name):
    s = scores(name)
    mean = {k: np.mean([s[k, seed][0] for seed in SEEDS]) for k in ("lart", "phalp-reference", "iou")}
    assert mean["lart"] > mean["phalp-reference"] + 0.03 and mean["lart"] > mean["iou"] + 0.05, mean
    for seed in SEEDS:  # never clearly below the 2D baseline
        assert s["lart", seed][0] >= s["iou", seed][0] - 0.02, (seed, s["lart", seed][0], s["iou", seed][0])
    assert sum(s["lart", seed][2] for seed in SEEDS) < sum(s["phalp-reference", seed][2] for seed in SEEDS)
    if name == "hard_leave":  # people gone 2-4 s come back with their old id
        for seed in SEEDS:
            long = [a for a in s["lart", seed][1] if a.seconds >= 2.0]
            assert long and all(a.reidentified for a in long), (seed, long)


def test_hard_scenes_are_as_hard_as_described():
    depth_ratio, low_scores, fp, near_fp, frames = [], [], 0, 0, 0
    for name in HARD_SUITE + HELD_OUT:
        scene = make_scene(name, seed=5)
        assert len(scene.frames) == 240
        track_z: dict[int, list[float]] = {}
        for f in scene.frames:
            frames += 1
            real = f.det_ids >= 0
            fp += int((~real).sum())
            low_scores += f.people.confidence[real & (f.people.confidence < 0.6)].tolist()
            for j in np.flatnonzero(real):
                track_z.setdefault(int(f.det_ids[j]), []).append(float(np.exp(f.people.location[j, 2])))
            # False positives beside a person who is in view but not detected.
            hidden = [k for k, g in enumerate(f.gt_ids) if g not in set(f.det_ids.tolist())]
            for j in np.flatnonzero(~real):
                cx = (f.people.xyxy[j, 0] + f.people.xyxy[j, 2]) / 2
                near_fp += any(f.gt_xyxy[k, 0] - 100 < cx < f.gt_xyxy[k, 2] + 100 for k in hidden)
        depth_ratio.append(max(np.percentile(z, 95) / np.percentile(z, 5) for z in track_z.values()))
    assert 0.2 < fp / frames < 0.6 and near_fp > 10
    assert min(depth_ratio) > 1.8, depth_ratio  # someone walks 2-3x nearer or farther in every scene type
    assert len(low_scores) > 100 and 0.4 <= min(low_scores) and max(low_scores) < 0.6


def test_leaver_is_out_of_view_for_sixty_frames_and_gaps_last_20_to_40_frames():
    scene = make_scene("hard_leave", seed=3)
    in_view = np.array([1 in f.gt_ids for f in scene.frames])
    runs = np.diff(np.flatnonzero(np.diff(in_view.astype(int)) != 0))
    assert (runs >= LEAVE_FRAMES).any()
    # A person in view but not detected for 20-40 frames in a row (the dropouts), in some seed.
    longest = 0
    for seed in range(4):
        scene = make_scene("hard_crossing", seed=seed)
        for ident in range(1, scene.n_identities + 1):
            seen = np.array([ident in f.det_ids for f in scene.frames])
            there = np.array([ident in f.gt_ids for f in scene.frames])
            run = 0
            for s, t in zip(seen, there):
                run = run + 1 if (t and not s) else 0
                longest = max(longest, run)
    assert 20 <= longest


def test_oracle_knows_identities_and_ignores_false_positives():
    scene = make_scene("hard_crossing", seed=0)
    run = run_scene(OracleTracker(scene), scene)
    assert hijacks(scene, run) == 0
    m = evaluate(ground_truth(scene.frames), run.hyp)
    assert m.id_switches == 0 and m.false_positives == 0 or m.idf1 > 0.8


def test_a_returner_keeps_its_id_from_its_first_re_detection():
    """After 2 s or more without a detection, the person's first detection back is published on the track
    that had them before, in that very frame (the lost gallery's track is confirmed: no tentative phase)."""
    checked = 0
    for seed in SEEDS:
        scene = make_scene("hard_leave", seed=seed)
        run = run_scene(build_tracker("lart", TrackerConfig()), scene)
        last: dict[int, tuple[int, int | None]] = {}  # identity -> (frame, track id) of its last detection
        for frame, taken in zip(scene.frames, run.taken):
            for row, ident in enumerate(frame.det_ids.tolist()):
                if ident < 0:
                    continue
                if ident in last and frame.index - last[ident][0] >= 60 and last[ident][1] is not None:
                    assert taken.get(row) == last[ident][1], (seed, ident, frame.index, taken.get(row), last[ident])
                    checked += 1
                last[ident] = (frame.index, taken.get(row))
    assert checked >= len(SEEDS)
