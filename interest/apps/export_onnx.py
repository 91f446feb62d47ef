"""Export a model bundle to ONNX, for scoring without torch (see :mod:`interest.onnx`).

Writes into a directory:

- ``backbone.onnx``: the visual tower of an open_clip backbone (exported with
  ``torch.onnx.export``), images (n, 3, H, W) preprocessed as the bundle's
  backbone preprocesses them -> L2-normalised embeddings (n, dim). The
  weight-free ``perceptual/v1`` backbone needs no file: :mod:`interest.onnx`
  computes it with NumPy.
- ``heads.onnx``: embeddings (n, dim) and a user index (1,) -> ``ci_score``
  (n,), ``probabilities`` (n, 3) of common/interplay/subjective and
  ``deviation`` (n,) of that user. It holds the PCA projection, the ridge
  CI_R, the app LightGBM booster (as an ONNX tree ensemble), the trend-group
  classifier and every user head; index ``len(users)`` is "no user" (a zero head).
- ``interest-onnx.json``: the backbone id, image preprocessing, the users in
  head order, and the files.

The ``full`` (metadata) booster is not exported: a photo app has no Flickr
metadata, which is exactly what the ``app`` booster was trained for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from interest.core.collection import atomic_path, write_json_atomic
from interest.core.errors import InterestError
from interest.core.vocabulary import TREND_GROUPS

if TYPE_CHECKING:
    from interest.models.model import InterestModel

FORMAT_VERSION = 1
MANIFEST = "interest-onnx.json"
HEADS_OPSET = 15  # onnxmltools' LightGBM converter supports up to 15
ML_OPSET = 1


def export_onnx(model: InterestModel | str | os.PathLike, out: str | os.PathLike, *, opset: int = 17, cache_dir: str | None = None) -> list[Path]:
    """Export ``model`` (an InterestModel or a bundle path) into directory ``out``; returns the files written.

    ``cache_dir`` is where the backbone's weights are (as for ``interest embed``).
    """
    import interest
    from interest.core.errors import require

    for module in ("onnx", "onnxmltools"):
        require(module, "export", "exporting to ONNX")
    bundle = interest.load(model) if isinstance(model, (str, os.PathLike)) else model
    out = Path(out)
    if bundle.metadata.get("kind") == "linear":
        raise InterestError(
            f"{bundle.name}: holds only a common linear head (e.g. the study's model); the ONNX export covers "
            "trained bundles: score it with interest.load"
        )
    heads = build_heads_graph(bundle)  # before the folder exists: a failure here leaves nothing behind
    out.mkdir(parents=True, exist_ok=True)
    files = []
    with atomic_path(out / "heads.onnx") as tmp:
        tmp.write_bytes(heads.SerializeToString())
    files.append(out / "heads.onnx")
    backbone_info = export_backbone(bundle.backbone_id, out / "backbone.onnx", opset=opset, cache_dir=cache_dir)
    if backbone_info.get("file"):
        files.append(out / backbone_info["file"])
    manifest = {
        "format_version": FORMAT_VERSION,
        "backbone_id": bundle.backbone_id,
        "dim": int(bundle.dim),
        "backbone": backbone_info,
        "heads": "heads.onnx",
        # trend_group is the band of ci_score between these cuts (interest.learn.groups)
        "group_cuts": list(bundle.groups.cuts_),
        "users": bundle.users,
        "trend_groups": list(TREND_GROUPS),
        "source_model": {"name": str(bundle.name), "schema_version": bundle.metadata.get("schema_version")},
    }
    write_json_atomic(out / MANIFEST, manifest)
    files.append(out / MANIFEST)
    return files


def build_heads_graph(model: InterestModel) -> Any:
    """The ONNX model from embeddings and a user index to ci_score, probabilities and deviation.

    Follows ``InterestModel.score_embeddings`` step by step, each step in the
    form its estimator gives (``linear_form``, ``nearest_form``, ``app_form``,
    ``probability_form``, ``membership_form``): PCA and ridge (linear), the
    nearest cluster prototype's CI, the app booster over [PCA features,
    ridge, prototype] (or, for a model whose app score is the image-level
    model's, offset + scale * exp(ridge + prototype)), the trend-group
    classifier over that score, and the user head over the leading PCA features.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k, h, d = model.booster_components, model.head_components, model.dim
    app_features = list(model.metadata["features"]["app"])
    expected = [f"pca_{i}" for i in range(k)] + ["ridge", "prototype"]
    if app_features != expected:
        raise InterestError(
            f"{model.name}: app features {app_features[k:]} after the PCA ones are not the ones this exporter "
            "knows (ridge, prototype); update interest.apps.export_onnx for this model version"
        )
    # every estimator gives the form it scores with itself (interest.learn, user_heads)
    f32 = lambda v: np.asarray(v, dtype=np.float32)  # noqa: E731
    pca_w, pca_b = model.pca.linear_form()
    ridge_w, ridge_b = model.ridge.linear_form()
    centroids_t, centroids_half_sq, prototype_ci = model.prototypes.nearest_form()
    init = {
        "pca_mean": f32(model.pca.mean_),  # for |x - mean|^2, the distance the novelty and the heads use
        "pca_w": f32(pca_w), "pca_b": f32(pca_b),
        "ridge_coef": f32(ridge_w).reshape(d, 1), "ridge_intercept": f32([ridge_b]),
        "centroids_t": centroids_t, "centroids_half_sq": centroids_half_sq, "prototype_ci": prototype_ci,
        "zero": np.asarray([0], dtype=np.int64),
        "one": np.asarray([1], dtype=np.int64),
        "k": np.asarray([k], dtype=np.int64),
        "h": np.asarray([h], dtype=np.int64),
        "flat": np.asarray([-1], dtype=np.int64),
        "two": f32([2.0]), "one_f": f32([1.0]), "zero_f": f32([0.0]),
    }
    # trend-group probabilities: band probabilities of ci_score, blended towards the group frequencies with novelty
    init.update({f"group_{name}": value for name, value in model.groups.probability_form().items()})
    # user heads: soft anchor memberships with a "nowhere" term, times the user's row (index len(users): no user)
    anchors, anchors_sq, minus_inv_tau, null_logit = model.heads.membership_form()
    weights = model.heads.weights_
    init.update(
        anchors_t=f32(anchors.T), anchors_sq=f32(anchors_sq), minus_inv_tau=f32([minus_inv_tau]),
        null_logit=f32([null_logit]), n_anchors=np.asarray([len(anchors)], dtype=np.int64),
        head_w=f32(np.vstack([weights, np.zeros((1, weights.shape[1]), np.float32)])),
    )

    nodes = [
        helper.make_node("Sub", ["embedding", "pca_mean"], ["centred"]),
        helper.make_node("MatMul", ["embedding", "pca_w"], ["z_raw"]),
        helper.make_node("Add", ["z_raw", "pca_b"], ["z"]),
        helper.make_node("Slice", ["z", "zero", "k", "one"], ["z_k"]),
        helper.make_node("Slice", ["z", "zero", "h", "one"], ["z_h"]),
        helper.make_node("MatMul", ["embedding", "ridge_coef"], ["ridge_raw"]),
        helper.make_node("Add", ["ridge_raw", "ridge_intercept"], ["ridge"]),
        # nearest prototype: argmax of z.c - |c|^2 / 2 (first index on ties, as NumPy)
        helper.make_node("MatMul", ["z", "centroids_t"], ["proto_dot"]),
        helper.make_node("Add", ["proto_dot", "centroids_half_sq"], ["proto_score"]),
        helper.make_node("ArgMax", ["proto_score"], ["proto_index"], axis=1, keepdims=1),
        helper.make_node("Gather", ["prototype_ci", "proto_index"], ["prototype"], axis=0),
        # novelty: |x - mean|^2 - 2 max_k (z . c_k - |c_k|^2 / 2), then lambda's complement exp(-max(0, nu - 1) / w)
        helper.make_node("ReduceSumSquare", ["centred"], ["centred_sq"], axes=[1], keepdims=1),
        helper.make_node("ReduceMax", ["proto_score"], ["proto_best"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["proto_best", "two"], ["proto_best2"]),
        helper.make_node("Sub", ["centred_sq", "proto_best2"], ["novelty_raw"]),
        helper.make_node("Mul", ["novelty_raw", "group_inv_novelty_scale"], ["novelty_rel"]),
        helper.make_node("Sub", ["novelty_rel", "one_f"], ["novelty_excess_raw"]),
        helper.make_node("Relu", ["novelty_excess_raw"], ["novelty_excess"]),
        helper.make_node("Mul", ["novelty_excess", "group_minus_inv_far_width"], ["keep_log"]),
        helper.make_node("Exp", ["keep_log"], ["keep"]),
        helper.make_node("Sub", ["one_f", "keep"], ["far"]),
        # user head: r(x) . w_u
        helper.make_node("MatMul", ["z_h", "anchors_t"], ["anchor_dot"]),
        helper.make_node("Add", ["centred_sq", "anchors_sq"], ["d2_sum"]),
        helper.make_node("Mul", ["anchor_dot", "two"], ["anchor_dot2"]),
        helper.make_node("Sub", ["d2_sum", "anchor_dot2"], ["d2_raw"]),
        helper.make_node("Relu", ["d2_raw"], ["d2"]),
        helper.make_node("Mul", ["d2", "minus_inv_tau"], ["anchor_logits"]),
        helper.make_node("Mul", ["centred_sq", "zero_f"], ["zero_col"]),
        helper.make_node("Add", ["zero_col", "null_logit"], ["null_col"]),
        helper.make_node("Concat", ["anchor_logits", "null_col"], ["member_logits"], axis=1),
        helper.make_node("Softmax", ["member_logits"], ["members_all"], axis=1),
        helper.make_node("Slice", ["members_all", "zero", "n_anchors", "one"], ["members"]),
        helper.make_node("Gather", ["head_w", "user"], ["user_w"], axis=0),
        helper.make_node("Transpose", ["user_w"], ["user_wt"], perm=[1, 0]),
        helper.make_node("MatMul", ["members", "user_wt"], ["dev_col"]),
        helper.make_node("Reshape", ["dev_col", "flat"], ["deviation"]),
    ]
    app_kind, app_form = model.booster.app_form()
    if app_kind == "lightgbm":
        booster_nodes, booster_init, booster_out = _booster_subgraph(app_form, k + 2, "app_features")
        nodes += [helper.make_node("Concat", ["z_k", "ridge", "prototype"], ["app_features"], axis=1), *booster_nodes]
    else:  # the app score is the image-level model's: offset + scale * exp(linear predictor + cluster effect)
        offset, scale = app_form
        init.update(image_offset=f32([offset]), image_scale=f32([scale]), eta_lo=f32(-30.0), eta_hi=f32(30.0))
        booster_init, booster_out = [], "image_ci"
        nodes += [
            helper.make_node("Add", ["ridge", "prototype"], ["image_eta_raw"]),
            helper.make_node("Clip", ["image_eta_raw", "eta_lo", "eta_hi"], ["image_eta"]),
            helper.make_node("Exp", ["image_eta"], ["image_share"]),
            helper.make_node("Mul", ["image_share", "image_scale"], ["image_scaled"]),
            helper.make_node("Add", ["image_scaled", "image_offset"], ["image_ci"]),
        ]
    nodes.append(helper.make_node("Reshape", [booster_out, "col"], ["ci_col"]))
    nodes += [
        # band probabilities of ci_score under logistic noise of scale sigma
        helper.make_node("Mul", ["ci_col", "group_inv_sigma"], ["ci_over_sigma"]),
        helper.make_node("Sub", ["group_lo_over_sigma", "ci_over_sigma"], ["lo_z"]),
        helper.make_node("Sub", ["group_hi_over_sigma", "ci_over_sigma"], ["hi_z"]),
        helper.make_node("Sigmoid", ["lo_z"], ["p_sub"]),
        helper.make_node("Sigmoid", ["hi_z"], ["below_hi"]),
        helper.make_node("Sub", ["one_f", "below_hi"], ["p_com"]),
        helper.make_node("Sub", ["below_hi", "p_sub"], ["p_int_raw"]),
        helper.make_node("Relu", ["p_int_raw"], ["p_int"]),
        helper.make_node("Concat", ["p_com", "p_int", "p_sub"], ["band"], axis=1),
        helper.make_node("Mul", ["band", "keep"], ["band_kept"]),
        helper.make_node("Mul", ["group_prior", "far"], ["prior_part"]),
        helper.make_node("Add", ["band_kept", "prior_part"], ["mixed"]),
        helper.make_node("ReduceSum", ["mixed", "one"], ["mixed_sum"], keepdims=1),
        helper.make_node("Div", ["mixed", "mixed_sum"], ["probabilities"]),
    ]
    nodes.append(helper.make_node("Reshape", [booster_out, "flat"], ["ci_score"]))
    init["col"] = np.asarray([-1, 1], dtype=np.int64)

    graph = helper.make_graph(
        nodes,
        "interest_heads",
        inputs=[
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", d]),
            helper.make_tensor_value_info("user", TensorProto.INT64, [1]),
        ],
        outputs=[
            helper.make_tensor_value_info("ci_score", TensorProto.FLOAT, ["n"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", 3]),
            helper.make_tensor_value_info("deviation", TensorProto.FLOAT, ["n"]),
        ],
        initializer=[numpy_helper.from_array(v, name) for name, v in init.items()] + booster_init,
    )
    onnx_model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", HEADS_OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        producer_name="interest",
    )
    onnx_model.ir_version = 8  # readable by onnxruntime releases from 1.14 on
    onnx.checker.check_model(onnx_model)
    return onnx_model


def _booster_subgraph(booster: Any, n_features: int, input_name: str) -> tuple[list, list, str]:
    """A LightGBM booster as ONNX nodes reading ``input_name``: (nodes, initializers, output name)."""
    from interest.core.errors import require

    onnxmltools = require("onnxmltools", "export", "exporting LightGBM to ONNX")
    from onnx import compose
    from onnxmltools.convert.common.data_types import FloatTensorType

    converted = onnxmltools.convert_lightgbm(
        booster, initial_types=[("x", FloatTensorType([None, n_features]))], target_opset=HEADS_OPSET
    )
    converted = compose.add_prefix(converted, "lgb_")
    graph = converted.graph
    src = graph.input[0].name
    nodes = []
    for node in graph.node:
        node.input[:] = [input_name if name == src else name for name in node.input]
        nodes.append(node)
    return nodes, list(graph.initializer), graph.output[0].name


def export_backbone(backbone_id: str, path: Path, *, opset: int = 17, cache_dir: str | None = None) -> dict:
    """Export the backbone's image tower to ``path`` when it has one; returns its manifest entry.

    open_clip: the visual tower plus the L2 normalisation, batch size
    dynamic. ``perceptual/v1``: nothing to export (NumPy computes it).
    ``synthetic/...``: no image model; the export then scores embeddings only.
    """
    from interest.imaging.backbones import load_backbone

    kind = backbone_id.split("/", 1)[0]
    if kind == "synthetic":
        return {"kind": "none"}
    # the torch model is what gets exported: no need for the onnxruntime encoder's own export
    backbone = load_backbone(backbone_id, device="cpu", cache_dir=cache_dir, encoder="torch")
    spec = dict(backbone.preprocessing)
    if kind == "perceptual":
        return {"kind": "numpy", "preprocessing": spec}
    if spec.get("resize_mode", "shortest") != "shortest" or spec.get("interpolation", "bicubic") not in (
        "bicubic", "bilinear", "nearest", "lanczos"
    ):
        raise InterestError(
            f"backbone {backbone_id}: preprocessing {spec.get('resize_mode')}/{spec.get('interpolation')} "
            "is not supported by the ONNX route (shortest-side resize only)"
        )
    import warnings

    import torch

    class Tower(torch.nn.Module):
        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net

        def forward(self, pixels: Any) -> Any:
            features = self.net.encode_image(pixels)
            return features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    size = spec["size"]
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    dummy = torch.zeros(2, 3, height, width)
    net = backbone.model
    # With gradients off, nn.MultiheadAttention takes a fused fast path that ONNX cannot express;
    # this backbone object is ours alone, so its weights can simply be marked trainable for the trace.
    net.requires_grad_(True)
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.enable_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation on every call
        torch.onnx.export(
            Tower(net).eval(),
            (dummy,),
            str(tmp),
            dynamo=False,
            input_names=["pixels"],
            output_names=["embedding"],
            dynamic_axes={"pixels": {0: "n"}, "embedding": {0: "n"}},
            opset_version=opset,
        )
    return {
        "kind": "onnx",
        "file": path.name,
        "preprocessing": {**spec, "size": [height, width]},
        "random_weights": bool(getattr(backbone, "random_weights", False)),
    }
