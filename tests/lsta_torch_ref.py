"""Torch re-statement of the authors' LSTA RGB model on reference-format state dicts, for parity tests.

Restates MyConvLSTACell (sixteen separate convolutions, two bias-free linears) and attentionModel.forward
of repository swathikirans/LSTA with torch.nn.functional, in eval mode (dropout off, BN running
statistics), on top of torch_ref's functional torchvision ResNet (whose 'layer4_raw' is resNetNew's
third output, conv2 + shortcut of the last block). NCHW; the RGB input is (B, T, C, H, W) and is looped
over time as the reference loops over its (T, B, ...) input. The reference's `view(..., 7, 7)` and
AvgPool2d(7) are written for any grid: reshape to the input's (h, w), spatial mean.
"""

import numpy as np
import torch
import torch.nn.functional as F
import torch_ref

ATTENTION = "ifoa"  # conv_{g}_s (bias) and conv_{g}_cam (no bias)
MEMORY = "ifc"  # conv_{g}_x (bias) and conv_{g}_c (no bias); plus conv_o_x (bias, on h) and conv_o_c (on c_cam)


def random_cell_state_dict(*, features=8, pool_classes=5, seed=0) -> dict[str, np.ndarray]:
    """MyConvLSTACell state dict (numpy, torch layout) with random weights and biases.

    The reference runs only with input_size == memory_size (its conv_o_x and coupling_fc read tensors of
    memory_size channels while declared with input_size), so both are `features` here.
    """
    rng = np.random.default_rng(seed + 4000)
    f, k = features, pool_classes
    sd = {}
    for g in ATTENTION:
        sd[f"conv_{g}_s.weight"] = rng.normal(0, 1 / 3, (1, 1, 3, 3))
        sd[f"conv_{g}_s.bias"] = rng.normal(0, 0.1, (1,))
        sd[f"conv_{g}_cam.weight"] = rng.normal(0, 1 / 3, (1, 1, 3, 3))
    for g in MEMORY:
        sd[f"conv_{g}_x.weight"] = rng.normal(0, np.sqrt(1 / (9 * f)), (f, f, 3, 3))
        sd[f"conv_{g}_x.bias"] = rng.normal(0, 0.1, (f,))
        sd[f"conv_{g}_c.weight"] = rng.normal(0, np.sqrt(1 / (9 * f)), (f, f, 3, 3))
    sd["conv_o_x.weight"] = rng.normal(0, np.sqrt(1 / (9 * f)), (f, f, 3, 3))
    sd["conv_o_x.bias"] = rng.normal(0, 0.1, (f,))
    sd["conv_o_c.weight"] = rng.normal(0, np.sqrt(1 / (9 * f)), (f, f, 3, 3))
    sd["c_classifier.weight"] = rng.normal(0, 1 / np.sqrt(f), (k, f))
    sd["coupling_fc.weight"] = rng.normal(0, 1 / np.sqrt(f), (k, f))
    return {key: np.asarray(v, np.float32) for key, v in sd.items()}


def random_rgb_state_dict(*, depth=18, width=8, pool_classes=5, num_classes=5, seed=0) -> dict[str, np.ndarray]:
    """attentionModel state dict (numpy, torch layout): resNet.*, lsta_cell.*, classifier.1.* and its fc.* twin."""
    rng = np.random.default_rng(seed + 5000)
    mem = 8 * width  # the reference's memSize must equal the backbone's 512 channels (see above)
    sd = {
        f"resNet.{k}": v
        for k, v in torch_ref.random_state_dict(depth, width=width, num_classes=1000, seed=seed).items()
    }
    sd.update(
        {
            f"lsta_cell.{k}": v
            for k, v in random_cell_state_dict(features=mem, pool_classes=pool_classes, seed=seed).items()
        }
    )
    sd["classifier.1.weight"] = rng.normal(0, 1 / np.sqrt(mem), (num_classes, mem)).astype(np.float32)
    sd["classifier.1.bias"] = rng.normal(0, 0.1, (num_classes,)).astype(np.float32)
    sd["fc.weight"], sd["fc.bias"] = sd["classifier.1.weight"].copy(), sd["classifier.1.bias"].copy()
    return sd


def lsta_cell(sd, x, cam, state_att, state_inp):
    """MyConvLSTACell.forward: x (N,C,h,w), cam (N,1,h,w), state_att [a, s], state_inp [c, o]
    -> (state_att [a, s], state_inp [c, o], x_att, u (N,1,h,w))."""
    def conv(name, v):
        return F.conv2d(v, sd[f"{name}.weight"], sd.get(f"{name}.bias"), padding=1)

    a_t_1, s_t_1 = state_att
    c_t_1 = torch.tanh(state_inp[0])
    o_t_1 = state_inp[1]

    i_s = torch.sigmoid(conv("conv_i_s", s_t_1) + conv("conv_i_cam", cam))
    f_s = torch.sigmoid(conv("conv_f_s", s_t_1) + conv("conv_f_cam", cam))
    o_s = torch.sigmoid(conv("conv_o_s", s_t_1) + conv("conv_o_cam", cam))
    a_tilde = torch.tanh(conv("conv_a_s", s_t_1) + conv("conv_a_cam", cam))
    a = (f_s * a_t_1) + (i_s * a_tilde)
    s = o_s * torch.tanh(a)
    u = s + cam
    u = F.softmax(u.view(u.size(0), -1), 1).view(u.shape)
    x_att = x * u.expand_as(x)

    h = o_t_1 * c_t_1
    i_x = torch.sigmoid(conv("conv_i_c", h) + conv("conv_i_x", x_att))
    f_x = torch.sigmoid(conv("conv_f_c", h) + conv("conv_f_x", x_att))
    c_tilde = torch.tanh(conv("conv_c_c", h) + conv("conv_c_x", x_att))
    c = (f_x * state_inp[0]) + (i_x * c_tilde)

    c_vec = c.mean(dim=(2, 3))
    c_logits = F.linear(c_vec, sd["c_classifier.weight"]) + F.linear(x_att.mean(dim=(2, 3)), sd["coupling_fc.weight"])
    _, c_idxs = c_logits.sort(1, True)
    c_cam = sd["c_classifier.weight"][c_idxs[:, 0]].unsqueeze(2).unsqueeze(2) * c
    o_x = torch.sigmoid(conv("conv_o_x", h) + conv("conv_o_c", c_cam))
    return [a, s], [c, o_x], x_att, u


def zero_state(n, mem, h, w):
    """([a, s], [c, o]) zeros for a batch of n on an (h, w) grid."""
    return [torch.zeros(n, 1, h, w), torch.zeros(n, 1, h, w)], [torch.zeros(n, mem, h, w), torch.zeros(n, mem, h, w)]


def rgb_forward(sd, x):
    """attentionModel.forward (eval) on x (B,T,C,H,W) -> (logits, feats (pooled c_T), attention maps u (B,T,h,w))."""
    resnet, cell = (
        {k[len(p) :]: v for k, v in sd.items() if k.startswith(p)} for p in ("resNet.", "lsta_cell.")
    )
    x = x.permute(1, 0, 2, 3, 4)  # the reference's (T, B, C, H, W)
    mem = cell["conv_i_c.weight"].shape[0]
    state, maps = None, []
    for t in range(x.size(0)):
        out = torch_ref.resnet_forward(resnet, x[t], training=False)
        logit, feature_conv, feat = out["logits"], out["layer4"], out["layer4_raw"]
        bz, nc, h, w = feature_conv.size()
        if state is None:
            state = zero_state(bz, mem, h, w)
        _, idxs = logit.sort(1, True)
        cam = torch.bmm(resnet["fc.weight"][idxs[:, 0]].unsqueeze(1), feature_conv.view(bz, nc, h * w))
        state_att, state_inp, _, u = lsta_cell(cell, feat, cam.view(bz, 1, h, w), *state)
        state = (state_att, state_inp)
        maps.append(u[:, 0])
    feats = state[1][0].mean(dim=(2, 3))
    logits = F.linear(feats, sd["classifier.1.weight"], sd["classifier.1.bias"])
    return logits, feats, torch.stack(maps, 1)
