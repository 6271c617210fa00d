"""SMPL body model for HMR 2.0 outputs: 3D joints (and vertices) through the smplx package.

Two sources, same module:
- an SMPL model file (``SMPL_NEUTRAL.pkl`` / ``basicModel_neutral_lbs_10_207_0_v1.0.0.pkl``), read
  *without chumpy*: the official files pickle chumpy ``Ch`` objects and scipy sparse matrices, and
  chumpy does not import on numpy >= 1.24. ``load_smpl_pickle`` maps those classes to stand-ins and
  pulls out the plain arrays (nothing from the file is executed);
- the ``smpl.*`` buffers of the official HMR 2.0 checkpoint, which hold the same model plus the
  SMPL_to_J19 regressor (``SMPL.from_state_dict``).

Joints follow 4D-Humans' SMPL wrapper: 25 OpenPose-order joints picked from smplx's 45, then the 19
extra J19 joints when a regressor is given (44 in all, PHALP/LART's ``3d_joints`` minus the zero joint).
"""

from __future__ import annotations

import _compat_pickle
import contextlib
import io
import pickle
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import smplx
import torch
from smplx.utils import Struct

# smplx joint index of each OpenPose joint (4D-Humans smpl_wrapper.py); 24 = nose, 25.. = vertex joints.
SMPL_TO_OPENPOSE = (24, 12, 17, 19, 21, 16, 18, 20, 0, 2, 5, 8, 1, 4, 7, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34)
SMPL_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


class SMPLFileError(ValueError):
    """An SMPL model file or state_dict that cannot be used."""


class _ChumpyStandIn:
    """Takes the place of any chumpy class: keeps the pickled __dict__ (a ``Ch`` keeps its array in 'x')."""

    chumpy_class = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "_ChumpyStandIn":
        return object.__new__(cls)

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state if isinstance(state, dict) else {"state": state}

    def to_array(self, key: str) -> np.ndarray:
        state = self.__dict__.get("_state", {})
        if self.chumpy_class != "chumpy.ch.Ch" or "x" not in state:
            raise SMPLFileError(f"'{key}' holds a chumpy {self.chumpy_class} expression, not a plain array: "
                                "re-save the file with plain numpy arrays")
        return np.asarray(state["x"])


class _SparseStandIn:
    """Takes the place of scipy.sparse csc/csr/coo matrices; densified from their pickled fields."""

    sparse_class = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "_SparseStandIn":
        return object.__new__(cls)

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    def to_array(self, key: str) -> np.ndarray:
        s = self.__dict__.get("_state", {})
        shape = tuple(s.get("_shape", s.get("shape", ())))
        kind = self.sparse_class.rsplit(".", 1)[-1][:3]
        if len(shape) != 2 or kind not in ("csc", "csr", "coo"):
            raise SMPLFileError(f"'{key}': unsupported sparse matrix {self.sparse_class} in the SMPL file")
        out = np.zeros(shape, np.float64)
        data = np.asarray(s["data"], np.float64)
        if kind == "coo":
            rows, cols = np.asarray(s.get("row", s.get("coords", [[]])[0])), np.asarray(s.get("col", s.get("coords", [[], []])[1]))
        else:
            indptr, indices = np.asarray(s["indptr"]), np.asarray(s["indices"])
            major = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
            rows, cols = (indices, major) if kind == "csc" else (major, indices)
        np.add.at(out, (rows, cols), data)  # duplicates sum, as scipy's todense
        return out


def _py3_name(module: str, name: str) -> tuple[str, str]:
    """Protocol-2 pickles name Python 2 modules (__builtin__, copy_reg): map them as pickle itself does."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class _SMPLUnpickler(pickle.Unpickler):
    """Reads SMPL pickles (Python 2 or 3) with numpy and stand-ins only; other globals are refused."""

    def find_class(self, module: str, name: str) -> Any:
        module, name = _py3_name(module, name)
        if module.startswith("chumpy"):
            return type(name, (_ChumpyStandIn,), {"chumpy_class": f"{module}.{name}"})
        if module.startswith("scipy.sparse"):
            return type(name, (_SparseStandIn,), {"sparse_class": f"{module}.{name}"})
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core"):]  # numpy 2 renamed it; the shim warns
        if module.split(".")[0] in ("numpy", "copyreg", "collections", "_codecs"):
            return super().find_class(module, name)
        if module == "builtins" and name in ("object", "set", "frozenset", "slice", "complex", "dict", "list"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"SMPL file references {module}.{name}, which is not allowed here")


def load_smpl_pickle(path: str | Path) -> dict[str, Any]:
    """An SMPL model pickle as a dict of plain numpy arrays (chumpy and scipy.sparse densified)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"SMPL model file not found: {path}")
    with open(path, "rb") as f:
        try:
            raw = _SMPLUnpickler(f, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise SMPLFileError(f"{path}: not a readable SMPL pickle ({exc})") from exc
    if not isinstance(raw, Mapping):
        raise SMPLFileError(f"{path}: expected a dict, got {type(raw).__name__}")
    out = {}
    for k, v in raw.items():
        out[k] = v.to_array(k) if isinstance(v, (_ChumpyStandIn, _SparseStandIn)) else v
    return out


def load_array_pickle(path: str | Path) -> np.ndarray:
    """A pickled array (e.g. SMPL_to_J19.pkl, the (19, 6890) extra joint regressor)."""
    with open(Path(path).expanduser(), "rb") as f:
        obj = _SMPLUnpickler(f, encoding="latin1").load()
    return obj.to_array(str(path)) if isinstance(obj, (_ChumpyStandIn, _SparseStandIn)) else np.asarray(obj)


def _check_smpl_arrays(model: Mapping[str, Any]) -> None:
    """Raise SMPLFileError unless the arrays have SMPL's structure (24 joints, 207 pose blend shapes)."""
    missing = [k for k in SMPL_KEYS if k not in model]
    if missing:
        raise SMPLFileError(f"SMPL model lacks {missing} (has {sorted(model)})")
    V = np.shape(model["v_template"])[0]
    want = {"v_template": (V, 3), "shapedirs": (V, 3, None), "posedirs": (V, 3, 207), "J_regressor": (24, V),
            "weights": (V, 24), "kintree_table": (2, 24), "f": (None, 3)}
    bad = []
    for k, shape in want.items():
        got = tuple(np.shape(model[k]))
        if len(got) != len(shape) or any(w is not None and w != g for w, g in zip(shape, got)):
            bad.append(f"{k}: expected {['*' if w is None else w for w in shape]}, got {list(got)}")
    if np.shape(model["shapedirs"])[-1:] and np.shape(model["shapedirs"])[-1] < 10:
        bad.append(f"shapedirs: expected at least 10 shape components, got {np.shape(model['shapedirs'])[-1]}")
    if bad:
        raise SMPLFileError("not an SMPL model: " + "; ".join(bad))


class SMPL(smplx.SMPLLayer):
    """smplx SMPLLayer + the 4D-Humans joint set. state_dict keys equal the checkpoint's ``smpl.*`` keys."""

    def __init__(self, model: Mapping[str, Any], joint_regressor_extra: np.ndarray | None = None):
        _check_smpl_arrays(model)
        with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a note about 10 shape components
            super().__init__(model_path="", data_struct=Struct(**{k: model[k] for k in SMPL_KEYS}), num_betas=10)
        self.register_buffer("joint_map", torch.tensor(SMPL_TO_OPENPOSE, dtype=torch.long))
        extra = None if joint_regressor_extra is None else torch.as_tensor(joint_regressor_extra, dtype=torch.float32)
        self.register_buffer("joint_regressor_extra", extra)  # None: not in state_dict, 25 joints only

    @property
    def num_joints(self) -> int:
        n_extra = 0 if self.joint_regressor_extra is None else self.joint_regressor_extra.shape[0]
        return len(SMPL_TO_OPENPOSE) + n_extra

    def forward(self, global_orient: torch.Tensor, body_pose: torch.Tensor,  # type: ignore[override]
                betas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotation matrices (B, 3, 3), (B, 23, 3, 3), betas (B, 10) -> vertices (B, V, 3), joints (B, J, 3).

        Body frame (no camera translation), as 4D-Humans' pred_keypoints_3d.
        """
        if global_orient.shape[0] == 0:  # smplx's lbs cannot reshape an empty batch
            z = self.v_template.new_zeros
            return z(0, self.v_template.shape[0], 3), z(0, self.num_joints, 3)
        out = super().forward(global_orient=global_orient.float()[:, None], body_pose=body_pose.float(),
                              betas=betas.float(), pose2rot=False)
        joints = out.joints[:, self.joint_map]  # (B, 25, 3) OpenPose order
        if self.joint_regressor_extra is not None:
            extra = torch.einsum("jv,bvc->bjc", self.joint_regressor_extra, out.vertices)  # (B, 19, 3)
            joints = torch.cat([joints, extra], dim=1)
        return out.vertices, joints

    @classmethod
    def from_files(cls, smpl_path: str | Path, joint_regressor_extra: str | Path | None = None) -> "SMPL":
        extra = load_array_pickle(joint_regressor_extra) if joint_regressor_extra else None
        return cls(load_smpl_pickle(smpl_path), extra)

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor]) -> "SMPL":
        """Rebuild from a checkpoint's ``smpl.*`` buffers (prefix stripped), then load them strictly."""
        need = ("v_template", "shapedirs", "posedirs", "J_regressor", "lbs_weights", "parents", "faces_tensor")
        missing = [k for k in need if k not in sd]
        if missing:
            raise SMPLFileError(f"checkpoint smpl.* buffers lack {missing}")
        v = sd["v_template"].shape[0]
        parents = sd["parents"].cpu().numpy()
        model = {
            "v_template": sd["v_template"].cpu().numpy(),
            "shapedirs": sd["shapedirs"].cpu().numpy(),
            # smplx keeps posedirs as (P, V*3) = reshape(file's (V, 3, P), (V*3, P)).T: undo that.
            "posedirs": sd["posedirs"].cpu().numpy().T.reshape(v, 3, -1),
            "J_regressor": sd["J_regressor"].cpu().numpy(),
            "weights": sd["lbs_weights"].cpu().numpy(),
            "kintree_table": np.stack([parents, np.arange(len(parents))]),
            "f": sd["faces_tensor"].cpu().numpy(),
        }
        extra = sd.get("joint_regressor_extra")
        smpl = cls(model, None if extra is None else extra.cpu().numpy())
        want = {k: tuple(t.shape) for k, t in smpl.state_dict().items()}
        got = {k: tuple(t.shape) for k, t in sd.items()}
        bad = [f"missing {k}" for k in sorted(set(want) - set(got))] + \
              [f"unexpected {k}" for k in sorted(set(got) - set(want))] + \
              [f"{k}: expected {list(want[k])}, got {list(got[k])}" for k in sorted(set(want) & set(got))
               if want[k] != got[k]]
        if bad:
            raise SMPLFileError(f"checkpoint smpl.* buffers do not match the SMPL layer: {bad}")
        smpl.load_state_dict(sd, strict=True)
        return smpl
