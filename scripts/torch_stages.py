"""The reference's four training stages re-stated in PyTorch, to time them beside ego_jax's (benchmark.py step).

Forward passes are the parity tests' re-statements of the reference modules (ego_jax/convert/torch_reference.py:
per-frame ResNet calls, eight-convolution ConvLSTM cell, NCHW), so the torch
side computes what the reference computes, the way it computes it. On top of them, as the reference trains
(shared/reference/ego-rnn.md, "Training recipes"): the trainable tensors (requires_grad; frozen ones get no
backward pass, as in the reference), BN modes, dropout before each classifier, cross-entropy, and the
reference's optimisers (Adam eps 1e-4 / coupled L2 4e-5; SGD momentum 0.9 / weight decay 5e-4, param groups).
Weights are random (speed does not depend on them); inputs are normalised float32, as the reference's loader
yields them. Always float32: the reference has no mixed precision.
"""

import re

import torch
import torch.nn.functional as F

from ego_jax.convert import torch_reference as ref

STAGES = ("rgb_stage1", "rgb_stage2", "flow", "joint")
# RGB stage 2 (and the joint stage's RGB stream) fine-tune these on top of the ConvLSTM and classifier.
_RGB_FINETUNE = (r"lstm_cell\..*", r"resNet\.layer4\.\d\.conv[12]\.weight", r"resNet\.fc\..*")


def _trainable(sd, patterns):
    names = [k for k in sd if any(re.fullmatch(p, k) for p in patterns) and sd[k].is_floating_point()]
    if not names:
        raise ValueError(f"no tensor matches {patterns}")
    for k in names:
        sd[k].requires_grad_(True)
    return [sd[k] for k in names]


def make_step(
    name: str,
    *,
    batch: int,
    frames: int,
    crop: int,
    stack: int = 5,
    num_classes: int = 61,
    depth: int = 34,
    width: int = 64,
    device: str = "cpu",
    seed: int = 0,
):
    """-> step(): one training step of the reference's stage `name` (see STAGES) on a fixed random batch."""
    if name not in STAGES:
        raise ValueError(f"no torch re-statement of stage {name!r}; re-stated: {STAGES}")
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (batch,), generator=gen).to(device)
    rgb = torch.randn(batch, frames, 3, crop, crop, generator=gen).to(device)
    flow = torch.randn(batch, 2 * stack, crop, crop, generator=gen).to(device)
    sizes = dict(depth=depth, width=width, num_classes=num_classes, seed=seed)

    def on_device(sd):
        return {k: v.to(device) for k, v in ref.to_torch(sd).items()}

    if name.startswith("rgb_stage"):
        sd = on_device(ref.random_rgb_state_dict(**sizes))
        sd["weight_softmax"] = sd["resNet.fc.weight"]  # one Parameter in the reference: CAM's gradient reaches fc
        stage2 = name == "rgb_stage2"
        params = _trainable(sd, (r"lstm_cell\..*", r"classifier\.1\..*") + (_RGB_FINETUNE if stage2 else ()))
        opt = torch.optim.Adam(params, lr=1e-4 if stage2 else 1e-3, eps=1e-4, weight_decay=4e-5)

        def logits():  # backbone BNs in inference mode; Dropout(0.7) before the classifier
            _, feats, _ = ref.rgb_forward(sd, rgb)
            return F.linear(F.dropout(feats, 0.7, training=True), sd["classifier.1.weight"], sd["classifier.1.bias"])
    elif name == "flow":
        sd = on_device(ref.random_flow_state_dict(stack=stack, **sizes))
        params = _trainable(sd, (r".*(weight|bias)",))
        opt = torch.optim.SGD(params, lr=1e-2, momentum=0.9, weight_decay=5e-4)

        def logits():  # every BN in training mode; Dropout(0.5)
            _, feats = ref.flow_forward(sd, flow, training=True)
            return F.linear(F.dropout(feats, 0.5, training=True), sd["fc_action.weight"], sd["fc_action.bias"])
    else:
        sd = on_device(ref.random_two_stream_state_dict(stack=stack, **sizes))
        sd["frameModel.weight_softmax"] = sd["frameModel.resNet.fc.weight"]
        group_a = _trainable(sd, (r"fc2\..*",) + tuple(r"frameModel\." + p for p in _RGB_FINETUNE))
        group_b = _trainable(sd, (r"flowModel\.layer4\..*(weight|bias)",))
        opt = torch.optim.SGD(
            [dict(params=group_a), dict(params=group_b, lr=1e-4)], lr=1e-2, momentum=0.9, weight_decay=5e-4
        )

        def logits():  # RGB stream in inference mode, flow layer4's BNs in training mode; Dropout(0.5)
            _, feats = ref.two_stream_forward(sd, rgb, flow, flow_training=lambda bn: bn.startswith("layer4."))
            return F.linear(F.dropout(feats, 0.5, training=True), sd["fc2.weight"], sd["fc2.bias"])

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(logits(), labels)
        loss.backward()
        opt.step()
        if device != "cpu":
            torch.cuda.synchronize()
        return loss.detach().item()

    return step
