"""The official HMR 2.0 checkpoint's network keys and shapes, written out from the reference facts
(shared/reference/reference_models.md section 2, 4D-Humans configs), independently of models/hmr2.py.

Used by the tests to build a Lightning-style checkpoint of meta tensors (no real weights allocated).
"""

from __future__ import annotations

D, DEPTH, MLP = 1280, 32, 5120  # ViT-H: width, blocks, MLP hidden (ratio 4)
HD, HDEPTH, INNER, HMLP = 1024, 6, 512, 1024  # decoder: width, layers, heads*dim_head (8*64), MLP


def official_network_keys() -> dict[str, tuple[int, ...]]:
    k: dict[str, tuple[int, ...]] = {
        "backbone.pos_embed": (1, 193, D),
        "backbone.patch_embed.proj.weight": (D, 3, 16, 16),
        "backbone.patch_embed.proj.bias": (D,),
        "backbone.last_norm.weight": (D,),
        "backbone.last_norm.bias": (D,),
    }
    for i in range(DEPTH):
        b = f"backbone.blocks.{i}."
        k.update({b + "norm1.weight": (D,), b + "norm1.bias": (D,), b + "norm2.weight": (D,), b + "norm2.bias": (D,),
                  b + "attn.qkv.weight": (3 * D, D), b + "attn.qkv.bias": (3 * D,),
                  b + "attn.proj.weight": (D, D), b + "attn.proj.bias": (D,),
                  b + "mlp.fc1.weight": (MLP, D), b + "mlp.fc1.bias": (MLP,),
                  b + "mlp.fc2.weight": (D, MLP), b + "mlp.fc2.bias": (D,)})
    t = "smpl_head.transformer."
    k.update({t + "to_token_embedding.weight": (HD, 1), t + "to_token_embedding.bias": (HD,),
              t + "pos_embedding": (1, 1, HD)})
    for i in range(HDEPTH):
        L = f"{t}transformer.layers.{i}."
        for j in range(3):
            k.update({f"{L}{j}.norm.weight": (HD,), f"{L}{j}.norm.bias": (HD,)})
        k.update({L + "0.fn.to_qkv.weight": (3 * INNER, HD),
                  L + "0.fn.to_out.0.weight": (HD, INNER), L + "0.fn.to_out.0.bias": (HD,),
                  L + "1.fn.to_q.weight": (INNER, HD), L + "1.fn.to_kv.weight": (2 * INNER, D),
                  L + "1.fn.to_out.0.weight": (HD, INNER), L + "1.fn.to_out.0.bias": (HD,),
                  L + "2.fn.net.0.weight": (HMLP, HD), L + "2.fn.net.0.bias": (HMLP,),
                  L + "2.fn.net.3.weight": (HD, HMLP), L + "2.fn.net.3.bias": (HD,)})
    k.update({"smpl_head.decpose.weight": (144, HD), "smpl_head.decpose.bias": (144,),
              "smpl_head.decshape.weight": (10, HD), "smpl_head.decshape.bias": (10,),
              "smpl_head.deccam.weight": (3, HD), "smpl_head.deccam.bias": (3,),
              "smpl_head.init_body_pose": (1, 144), "smpl_head.init_betas": (1, 10), "smpl_head.init_cam": (1, 3)})
    return k


def official_smpl_keys(num_verts: int = 6890, num_faces: int = 13776) -> dict[str, tuple[int, ...]]:
    """The SMPL buffers HMR2 keeps under ``smpl.`` (smplx SMPLLayer + 4D-Humans joint_map/J19)."""
    return {"shapedirs": (num_verts, 3, 10), "faces_tensor": (num_faces, 3), "v_template": (num_verts, 3),
            "J_regressor": (24, num_verts), "posedirs": (207, num_verts * 3), "parents": (24,),
            "lbs_weights": (num_verts, 24), "vertex_joint_selector.extra_joints_idxs": (21,),
            "joint_map": (25,), "joint_regressor_extra": (19, num_verts)}


def discriminator_keys() -> dict[str, tuple[int, ...]]:
    """A few of the training-only discriminator's keys (hmr2/models/discriminator.py shapes)."""
    k = {"discriminator.D_conv1.weight": (32, 9, 1, 1), "discriminator.D_conv1.bias": (32,),
         "discriminator.betas_fc1.weight": (10, 10), "discriminator.D_alljoints_fc1.weight": (1024, 32 * 23)}
    k.update({f"discriminator.pose_out.{i}.weight": (1, 32) for i in range(23)})
    return k
