"""Torch re-statements of the reference Ego-RNN models on reference-format state dicts, for parity tests.

Restates objectAttentionModelConvLSTM.attentionModel (and its no-attention ablation), MyConvLSTMCell
(eight separate convolutions), flow_resnet.ResNet's head and twoStreamModel.twoStreamAttentionModel
with torch.nn.functional, in eval mode (dropout off, BN running statistics), on top of torch_ref's
functional torchvision ResNet. NCHW; the RGB input is (B, T, C, H, W) and is looped over time as the
reference loops over its (T, B, ...) input.
"""

import numpy as np
import torch
import torch.nn.functional as F
import torch_ref

GATES = "ifco"
# Parity tolerance, float32: |jax - torch| <= ATOL + RTOL * |torch|.
ATOL, RTOL = 1e-4, 1e-4


def random_rgb_state_dict(*, depth=18, width=8, mem=None, num_classes=5, seed=0) -> dict[str, np.ndarray]:
    """Reference attentionModel state dict (numpy, torch layout) with random weights, duplicates included."""
    rng = np.random.default_rng(seed + 1000)
    feat, mem = 8 * width, mem or 8 * width
    sd = {
        f"resNet.{k}": v
        for k, v in torch_ref.random_state_dict(depth, width=width, num_classes=1000, seed=seed).items()
    }
    for g in GATES:
        sd[f"lstm_cell.conv_{g}_xx.weight"] = rng.normal(0, np.sqrt(2 / (9 * (feat + mem))), (mem, feat, 3, 3))
        sd[f"lstm_cell.conv_{g}_xx.bias"] = rng.normal(0, 0.1, (mem,))
        sd[f"lstm_cell.conv_{g}_hh.weight"] = rng.normal(0, np.sqrt(2 / (18 * mem)), (mem, mem, 3, 3))
    sd["classifier.1.weight"] = rng.normal(0, 1 / np.sqrt(mem), (num_classes, mem))
    sd["classifier.1.bias"] = rng.normal(0, 0.1, (num_classes,))
    sd = {k: np.asarray(v, np.float32) for k, v in sd.items()}
    sd["weight_softmax"] = sd["resNet.fc.weight"].copy()
    sd["fc.weight"], sd["fc.bias"] = sd["classifier.1.weight"].copy(), sd["classifier.1.bias"].copy()
    return sd


def random_flow_state_dict(*, depth=18, width=8, stack=2, num_classes=5, seed=0) -> dict[str, np.ndarray]:
    """Reference flow_resnet state dict (numpy, torch layout): torchvision keys without fc, plus fc_action."""
    rng = np.random.default_rng(seed + 2000)
    sd = torch_ref.random_state_dict(depth, width=width, in_channels=2 * stack, num_classes=None, seed=seed)
    sd["fc_action.weight"] = rng.normal(0, 1 / np.sqrt(8 * width), (num_classes, 8 * width)).astype(np.float32)
    sd["fc_action.bias"] = rng.normal(0, 0.1, (num_classes,)).astype(np.float32)
    return sd


def random_two_stream_state_dict(*, depth=18, width=8, stack=2, num_classes=5, seed=0) -> dict[str, np.ndarray]:
    """Reference twoStreamAttentionModel state dict: frameModel.*, flowModel.*, fc2.* and its classifier.1 twin."""
    rng = np.random.default_rng(seed + 3000)
    sd = {
        f"frameModel.{k}": v
        for k, v in random_rgb_state_dict(depth=depth, width=width, num_classes=num_classes, seed=seed).items()
    }
    sd.update(
        {
            f"flowModel.{k}": v
            for k, v in random_flow_state_dict(
                depth=depth, width=width, stack=stack, num_classes=num_classes, seed=seed + 1
            ).items()
        }
    )
    sd["fc2.weight"] = rng.normal(0, 1 / np.sqrt(16 * width), (num_classes, 16 * width)).astype(np.float32)
    sd["fc2.bias"] = rng.normal(0, 0.1, (num_classes,)).astype(np.float32)
    sd["classifier.1.weight"], sd["classifier.1.bias"] = sd["fc2.weight"].copy(), sd["fc2.bias"].copy()
    return sd


def sub(sd: dict, prefix: str) -> dict:
    """Keys under `prefix`, prefix stripped."""
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def convlstm_cell(sd, x, state):
    """MyConvLSTMCell.forward with weights sd['conv_{g}_{xx,hh}.*'] (torch tensors)."""
    ht_1, ct_1 = state

    def conv_x(g):
        return F.conv2d(x, sd[f"conv_{g}_xx.weight"], sd[f"conv_{g}_xx.bias"], padding=1)

    def conv_h(g):
        return F.conv2d(ht_1, sd[f"conv_{g}_hh.weight"], None, padding=1)

    it = torch.sigmoid(conv_x("i") + conv_h("i"))
    ft = torch.sigmoid(conv_x("f") + conv_h("f"))
    ct_tilde = torch.tanh(conv_x("c") + conv_h("c"))
    ct = (ct_tilde * it) + (ct_1 * ft)
    ot = torch.sigmoid(conv_x("o") + conv_h("o"))
    ht = ot * torch.tanh(ct)
    return ht, ct


def rgb_forward(sd, x, *, attention=True):
    """attentionModel.forward (eval) on x (B,T,C,H,W) -> (logits, feats1 (pooled c_T), attention maps (B,T,h,w))."""
    resnet, lstm = sub(sd, "resNet."), sub(sd, "lstm_cell.")
    x = x.permute(1, 0, 2, 3, 4)  # the reference's (T, B, C, H, W)
    mem = lstm["conv_i_hh.weight"].shape[0]
    state, maps = None, []
    for t in range(x.size(0)):
        out = torch_ref.resnet_forward(resnet, x[t], training=False)
        logit, feature_conv, feature_conv_nbn = out["logits"], out["layer4"], out["layer4_raw"]
        bz, nc, h, w = feature_conv.size()
        if state is None:
            state = (torch.zeros(bz, mem, h, w), torch.zeros(bz, mem, h, w))
        if attention:
            feature_conv1 = feature_conv.view(bz, nc, h * w)
            _, idxs = logit.sort(1, True)
            cam = torch.bmm(sd["weight_softmax"][idxs[:, 0]].unsqueeze(1), feature_conv1)
            attention_map = F.softmax(cam.squeeze(1), dim=1).view(bz, 1, h, w)
            maps.append(attention_map[:, 0])
            lstm_in = feature_conv_nbn * attention_map.expand_as(feature_conv)
        else:
            lstm_in = feature_conv
        state = convlstm_cell(lstm, lstm_in, state)
    feats1 = state[1].mean(dim=(2, 3))  # AvgPool2d(7) on the 7x7 map = spatial mean
    logits = F.linear(feats1, sd["classifier.1.weight"], sd["classifier.1.bias"])
    return logits, feats1, (torch.stack(maps, 1) if maps else None)


def flow_forward(sd, x, *, training=False):
    """flow_resnet.ResNet.forward on x (B,2*stack,H,W) -> (logits, pooled layer4 feature); dropout off.

    training: BN modes, as torch_ref.resnet_forward's (eval by default).
    """
    resnet = {k: v for k, v in sd.items() if not k.startswith("fc_action.")}
    feats = torch_ref.resnet_forward(resnet, x, training=training)["pooled"]
    return F.linear(feats, sd["fc_action.weight"], sd["fc_action.bias"]), feats


def two_stream_forward(sd, rgb, flow, *, flow_training=False):
    """twoStreamAttentionModel.forward: rgb (B,T,C,H,W), flow (B,2*stack,H,W) -> (logits, joint feature).

    Dropout off; the RGB stream in eval mode; flow_training: the flow stream's BN modes (flow_forward's training).
    """
    _, flow_feats = flow_forward(sub(sd, "flowModel."), flow, training=flow_training)
    _, rgb_feats, _ = rgb_forward(sub(sd, "frameModel."), rgb)
    feats = torch.cat((flow_feats, rgb_feats), 1)
    return F.linear(feats, sd["fc2.weight"], sd["fc2.bias"]), feats


def to_torch(sd: dict) -> dict:
    """numpy state dict -> torch tensors."""
    return {k: torch.tensor(np.asarray(v)) for k, v in sd.items()}


def compare(got, want: torch.Tensor, what: str) -> None:
    """Assert jax `got` matches torch `want` within ATOL/RTOL; prints max abs and rel (to max |want|) errors."""
    got, want = np.asarray(got), want.detach().numpy()
    assert got.shape == want.shape, (what, got.shape, want.shape)
    err = np.abs(got - want)
    print(f"{what}: max abs err {err.max():.2e}, max rel err {err.max() / np.abs(want).max():.2e}")
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL, err_msg=what)
