"""Checkpoint loaders on files that are not what they should be: one clear line each, and LART's
attention head size read from the file (never guessed)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from lart_stream.models import hmr2
from lart_stream.models.lart import LART, LARTConfig, dim_head_from_hyper_parameters, load_lart, read_checkpoint

OMEGACONF_FILE = Path(__file__).parent / "data" / "lart_hparams_omegaconf.ckpt"


def _garbage(path: Path, n: int = 50_000) -> Path:
    path.write_bytes(np.random.default_rng(7).integers(0, 256, n, dtype=np.uint8).tobytes())
    return path


@pytest.mark.parametrize("reader", [read_checkpoint, hmr2.read_checkpoint], ids=["lart", "hmr2"])
@pytest.mark.parametrize("content", ["random", "text", "empty", "truncated zip"])
def test_unreadable_files_are_one_clear_line(tmp_path, reader, content):
    path = tmp_path / "model.ckpt"
    if content == "random":
        _garbage(path)
    elif content == "text":
        path.write_text("hello, this is not a checkpoint\n")
    elif content == "empty":
        path.write_bytes(b"")
    else:
        torch.save({"state_dict": {"a": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:600])
    with pytest.raises(ValueError) as err:
        reader(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg, msg
    assert "weights_only" not in msg and "Weights only" not in msg and "torch.save" not in msg, msg
    if content in ("random", "text"):
        assert "not a PyTorch checkpoint" in msg
    if content == "empty":
        assert "empty" in msg


@pytest.mark.parametrize("reader", [read_checkpoint, hmr2.read_checkpoint], ids=["lart", "hmr2"])
@pytest.mark.parametrize("obj", [{}, {"state_dict": {}}], ids=["bare", "lightning"])
def test_empty_state_is_one_clear_line(tmp_path, reader, obj):
    torch.save(obj, tmp_path / "empty.ckpt")
    with pytest.raises(ValueError, match="state dict is empty"):
        reader(tmp_path / "empty.ckpt")


def test_legacy_torch_format_still_reads(tmp_path):
    sd = {"smpl_head.init_cam": torch.ones(1, 3)}
    torch.save({"state_dict": sd}, tmp_path / "old.ckpt", _use_new_zipfile_serialization=False)
    assert torch.equal(hmr2.read_checkpoint(tmp_path / "old.ckpt")["smpl_head.init_cam"], sd["smpl_head.init_cam"])


# --- dim_head -----------------------------------------------------------------------------------


def test_dim_head_is_read_from_a_real_omegaconf_pickle():
    """tests/data/lart_hparams_omegaconf.ckpt: written by torch.save with omegaconf 2.3 installed, as
    Lightning saves LART_LitModule(cfg): {"hyper_parameters": {"cfg": DictConfig(...)}} with
    cfg.transformer.dim_head = 64; read here without omegaconf."""
    from lart_stream.models.lart import _load_file

    assert "omegaconf" not in sys.modules
    assert dim_head_from_hyper_parameters(_load_file(OMEGACONF_FILE)) == 64


class _Node:
    """Shaped like omegaconf's pickled nodes: containers keep ``_content``, values ``_val``."""

    def __init__(self, **state):
        self.__dict__.update(state)


def _fake_dictconfig(tree: dict, parent=None):
    node = _Node(_metadata=None, _parent=parent, _content={})
    for key, value in tree.items():
        node._content[key] = (_fake_dictconfig(value, node) if isinstance(value, dict)
                              else _Node(_val=value, _metadata=None, _parent=node))
    return node


def _save_with_hparams(path: Path, model: LART, cfg_tree: dict | None, extra: dict | None = None) -> None:
    module = types.ModuleType("fake_omegaconf")
    module._Node = _Node
    sys.modules["fake_omegaconf"] = module
    _Node.__module__ = "fake_omegaconf"
    try:
        sd = {"encoder." + k: v.float() for k, v in model.state_dict().items()}
        sd["smpl.faces_tensor"] = torch.zeros(4, 3, dtype=torch.long)
        sd.update(extra or {})
        obj = {"epoch": 2, "state_dict": sd}
        if cfg_tree is not None:
            obj["hyper_parameters"] = {"cfg": _fake_dictconfig(cfg_tree)}
        torch.save(obj, path)
    finally:
        del sys.modules["fake_omegaconf"]
        _Node.__module__ = __name__


def test_dim_head_comes_from_the_checkpoint_not_a_guess(tmp_path):
    cfg = LARTConfig.tiny(heads=4, dim_head=4)  # heads x dim_head = 16: a guess of 64 can't be right
    path = tmp_path / "lart.ckpt"
    _save_with_hparams(path, LART(cfg), {"in_feat": cfg.dim, "transformer": {"heads": 4, "dim_head": 4}})
    model, ignored = load_lart(path, window=cfg.window, max_people=cfg.max_people)
    assert model.config.dim_head == 4 and model.config.heads == 4 and ignored == ["smpl.faces_tensor"]
    # the flag wins over the file (with a warning), and a bad one is refused
    model, _ = load_lart(path, dim_head=8, window=cfg.window, max_people=cfg.max_people)
    assert model.config.heads == 2
    with pytest.raises(ValueError, match="not a multiple of dim_head=5"):
        load_lart(path, dim_head=5)


def test_a_checkpoint_without_dim_head_is_refused_with_the_flag_to_pass(tmp_path):
    cfg = LARTConfig.tiny()
    path = tmp_path / "lart.ckpt"
    _save_with_hparams(path, LART(cfg), None)
    with pytest.raises(ValueError) as err:
        load_lart(path)
    assert "--lart-dim-head" in str(err.value) and "\n" not in str(err.value)
    model, _ = load_lart(path, dim_head=cfg.dim_head, window=cfg.window, max_people=cfg.max_people)
    assert model.config == cfg


def test_keys_outside_encoder_and_smpl_are_refused(tmp_path):
    cfg = LARTConfig.tiny()
    path = tmp_path / "lart.ckpt"
    _save_with_hparams(path, LART(cfg), {"transformer": {"dim_head": cfg.dim_head}},
                       extra={"discriminator.weight": torch.zeros(2), "decoder.bias": torch.zeros(2)})
    with pytest.raises(ValueError, match="unexpected checkpoint keys .*decoder.bias, discriminator.weight"):
        load_lart(path)


def test_export_refuses_a_lart_checkpoint_without_dim_head_in_one_line(tmp_path, capsys):
    from lart_stream.export.cli import main

    cfg = LARTConfig.tiny()
    path = tmp_path / "lart.ckpt"
    _save_with_hparams(path, LART(cfg), None)
    assert main(["--out", str(tmp_path / "o"), "--models", "lart_window", "--lart-checkpoint", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--lart-dim-head" in err[0], err
