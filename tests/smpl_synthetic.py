"""A synthetic SMPL model file in the official format (the real one can't be downloaded here).

The official ``basicModel_neutral_lbs_10_207_0_v1.0.0.pkl`` is a Python 2 pickle whose arrays are
chumpy ``Ch`` objects (``v_template``, ``shapedirs``, ``posedirs``, ``weights``) and whose
``J_regressor`` is a scipy sparse matrix. ``write_smpl_pickle`` writes the same structure: it
pickles instances of a stand-in class registered as ``chumpy.ch.Ch`` (a throwaway module in
sys.modules during the dump only), so reading the file back needs chumpy exactly as the real file.
"""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import scipy.sparse

NUM_VERTS = 6890  # smplx's extra joints index real SMPL vertex ids (up to 6787)
SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]


class _FakeCh:
    """Pickles like chumpy's Ch: __dict__ minus its weak caches, the array under 'x'."""

    def __init__(self, x: np.ndarray):
        self.x = np.asarray(x, np.float64)
        self._dirty_vars = set()
        self._itr = None
        self._depends_on_deps = {}
        self._make_dense = False
        self._make_sparse = False

    def __getstate__(self) -> dict:
        return dict(self.__dict__)


def _as_chumpy(name: str, module: str) -> type:
    return type(name, (_FakeCh,), {"__module__": module, "__qualname__": name})


def smpl_arrays(seed: int = 0, num_faces: int = 64) -> dict[str, np.ndarray]:
    """Random but well-formed SMPL data (neutral, 10 betas, 207 pose blend shapes)."""
    rng = np.random.default_rng(seed)
    v = NUM_VERTS
    v_template = rng.normal(0, 0.3, (v, 3))
    weights = rng.uniform(0, 1, (v, 24)) ** 4
    weights /= weights.sum(1, keepdims=True)
    # Each joint regressed from a handful of vertices (rows sum to 1), sparse like the real file.
    jreg = np.zeros((24, v))
    for j in range(24):
        idx = rng.choice(v, 8, replace=False)
        jreg[j, idx] = rng.uniform(0.5, 1.0, 8)
    jreg /= jreg.sum(1, keepdims=True)
    return {
        "v_template": v_template,
        "shapedirs": rng.normal(0, 0.01, (v, 3, 10)),
        "posedirs": rng.normal(0, 0.001, (v, 3, 207)),
        "weights": weights,
        "J_regressor": jreg,
        "kintree_table": np.stack([np.array(SMPL_PARENTS, np.int64) % 2**32, np.arange(24)]).astype(np.uint32),
        "f": rng.integers(0, v, (num_faces, 3)).astype(np.uint32),
        "J": jreg @ v_template,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def write_smpl_pickle(path: str | Path, arrays: dict[str, np.ndarray], chumpy: bool = True,
                      chumpy_class: str = "Ch") -> Path:
    """Write ``arrays`` like the official file: chumpy Ch for the dense arrays, csc for J_regressor."""
    path = Path(path)
    obj = dict(arrays)
    obj["J_regressor"] = scipy.sparse.csc_matrix(arrays["J_regressor"])
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    try:
        if chumpy:
            pkg, mod = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
            cls = _as_chumpy(chumpy_class, "chumpy.ch")
            setattr(mod, chumpy_class, cls)
            pkg.ch = mod
            sys.modules.update({"chumpy": pkg, "chumpy.ch": mod})
            for k in ("v_template", "shapedirs", "posedirs", "weights"):
                obj[k] = cls(arrays[k])
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    finally:
        for k, m in saved.items():
            if m is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = m
    return path
