"""The reference models' forward passes re-stated in PyTorch (needs the `torch` extra), for parity tests and the
step benchmark's torch side (scripts/torch_stages.py).

torchvision cannot be imported beside the torch build used here, so this restates torchvision.models.resnet
(BasicBlock, v1 weights layout) with torch.nn.functional ops on a torchvision-format state dict, plus Ego-RNN's
layer4 pre-bn2 tap; on top of it the authors' Ego-RNN models (objectAttentionModelConvLSTM.attentionModel and its
no-attention ablation, MyConvLSTMCell's eight separate convolutions, flow_resnet.ResNet's head,
twoStreamModel.twoStreamAttentionModel) and LSTA's (MyConvLSTACell's sixteen separate convolutions and two bias-free
linears, attentionModel.forward of swathikirans/LSTA, whose 'layer4_raw' is resNetNew's third output), in eval mode
(dropout off, BN running statistics) unless a forward says otherwise. NCHW; RGB input is (B, T, C, H, W), looped
over time as the reference loops over its (T, B, ...) input. The reference's `view(..., 7, 7)` and AvgPool2d(7)
are written for any grid: reshape to the input's (h, w), spatial mean.

  sd = random_state_dict(34, width=8, num_classes=10)       # {torch name: np.ndarray}
  out = resnet_forward(to_torch(sd), x_nchw, training=False)  # dict of torch tensors (NCHW)
"""

import numpy as np
import torch
import torch.nn.functional as F

BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def random_state_dict(depth=34, *, width=8, in_channels=3, num_classes=1000, seed=0) -> dict[str, np.ndarray]:
    """Random torchvision ResNet state dict (numpy, torch layout) with randomised BN weights and running stats.

    Running stats are calibrated, like a trained network's, then randomised: each BN's stats are
    set from one training-mode pass over N(0, 1) images (so inference activations stay O(1) through
    all the blocks), then mean += 0.2 std * N(0, 1), var *= U(0.5, 2).
    """
    rng = np.random.default_rng(seed)
    sd = {}

    def conv(name, cout, cin, k):
        sd[f"{name}.weight"] = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(
            np.float32
        )

    def bn(name, c):
        sd[f"{name}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        sd[f"{name}.bias"] = (0.2 * rng.standard_normal(c)).astype(np.float32)
        sd[f"{name}.running_mean"] = (0.2 * rng.standard_normal(c)).astype(np.float32)
        sd[f"{name}.running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
        sd[f"{name}.num_batches_tracked"] = np.array(int(rng.integers(0, 1000)), np.int64)

    conv("conv1", width, in_channels, 7)
    bn("bn1", width)
    cin = width
    for k, n in enumerate(BLOCKS[depth]):
        cout = width * 2**k
        for i in range(n):
            p = f"layer{k + 1}.{i}"
            conv(f"{p}.conv1", cout, cin if i == 0 else cout, 3)
            bn(f"{p}.bn1", cout)
            conv(f"{p}.conv2", cout, cout, 3)
            bn(f"{p}.bn2", cout)
            if i == 0 and k > 0:
                conv(f"{p}.downsample.0", cout, cin, 1)
                bn(f"{p}.downsample.1", cout)
        cin = cout
    if num_classes is not None:
        sd["fc.weight"] = (rng.standard_normal((num_classes, cin)) / np.sqrt(cin)).astype(np.float32)
        sd["fc.bias"] = (0.1 * rng.standard_normal(num_classes)).astype(np.float32)
    calibrated = to_torch(sd)
    x = torch.from_numpy(rng.standard_normal((2, in_channels, 64, 64)).astype(np.float32))
    with torch.no_grad():
        resnet_forward(calibrated, x, training=True, momentum=1.0)
    for k, v in calibrated.items():
        if k.endswith(".running_var"):
            mean = k.removesuffix("running_var") + "running_mean"
            sd[k] = (v.numpy() * rng.uniform(0.5, 2.0, v.shape)).astype(np.float32)
            sd[mean] = (calibrated[mean].numpy() + 0.2 * np.sqrt(v.numpy()) * rng.standard_normal(v.shape)).astype(
                np.float32
            )
    return sd


def to_torch(sd: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """numpy state dict -> fresh torch tensors (training-mode forwards update the BN stats in place)."""
    return {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}


def _bn(sd, name, x, training, momentum):
    training = training(name) if callable(training) else training
    return F.batch_norm(
        x,
        sd[f"{name}.running_mean"],
        sd[f"{name}.running_var"],
        sd[f"{name}.weight"],
        sd[f"{name}.bias"],
        training=training,
        momentum=momentum,
        eps=1e-5,
    )


def _block(sd, p, x, stride, training, momentum):
    out = F.relu(
        _bn(sd, f"{p}.bn1", F.conv2d(x, sd[f"{p}.conv1.weight"], stride=stride, padding=1), training, momentum)
    )
    out = F.conv2d(out, sd[f"{p}.conv2.weight"], stride=1, padding=1)
    if f"{p}.downsample.0.weight" in sd:
        shortcut = _bn(
            sd, f"{p}.downsample.1", F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride), training, momentum
        )
    else:
        shortcut = x
    return F.relu(_bn(sd, f"{p}.bn2", out, training, momentum) + shortcut), out + shortcut


def resnet_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, *, training=False, momentum=0.1) -> dict:
    """torchvision ResNet-18/34 on x (N,C,H,W) -> dict(layer3, layer4, layer4_raw (NCHW), pooled (N,C), logits).

    training=True uses batch statistics and updates sd's running_mean/running_var in place (torch
    momentum convention); a predicate over BN names ('layer4.0.bn1', ...) selects the BNs that do.
    'layer4_raw' is conv2 + shortcut of the last layer4 block (before bn2, relu).
    """
    depth = {b: d for d, b in BLOCKS.items()}[
        tuple(1 + max(int(k.split(".")[1]) for k in sd if k.startswith(f"layer{s}.")) for s in (1, 2, 3, 4))
    ]
    h = F.relu(_bn(sd, "bn1", F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), training, momentum))
    h = F.max_pool2d(h, kernel_size=3, stride=2, padding=1)
    out = {}
    for k, n in enumerate(BLOCKS[depth]):
        for i in range(n):
            h, raw = _block(sd, f"layer{k + 1}.{i}", h, 2 if (i == 0 and k > 0) else 1, training, momentum)
        out[f"layer{k + 1}"] = h
    out = {"layer3": out["layer3"], "layer4": h, "layer4_raw": raw, "pooled": h.mean(dim=(2, 3))}
    if "fc.weight" in sd:
        out["logits"] = F.linear(out["pooled"], sd["fc.weight"], sd["fc.bias"])
    return out


def frames_and_cams(resnet_sd, x, fc_weight):
    """The reference RGB models' per-frame backbone: x (B,T,C,H,W) -> for each frame t, in the reference's
    (T, B, ...) loop: (layer4 (B,C,h,w), layer4_raw (pre-bn2 tap), cam (B,1,h*w) of the top-1 ImageNet class)."""
    for xt in x.permute(1, 0, 2, 3, 4):
        out = resnet_forward(resnet_sd, xt, training=False)
        bz, nc, h, w = out["layer4"].size()
        _, idxs = out["logits"].sort(1, True)
        yield (
            out["layer4"],
            out["layer4_raw"],
            torch.bmm(fc_weight[idxs[:, 0]].unsqueeze(1), out["layer4"].view(bz, nc, h * w)),
        )


# Ego-RNN (RGB, flow, two-stream)

GATES = "ifco"
# Parity tolerance, float32: |jax - torch| <= ATOL + RTOL * |torch|.
ATOL, RTOL = 1e-4, 1e-4


def random_rgb_state_dict(*, depth=18, width=8, mem=None, num_classes=5, seed=0) -> dict[str, np.ndarray]:
    """Reference attentionModel state dict (numpy, torch layout) with random weights, duplicates included."""
    rng = np.random.default_rng(seed + 1000)
    feat, mem = 8 * width, mem or 8 * width
    sd = {f"resNet.{k}": v for k, v in random_state_dict(depth, width=width, num_classes=1000, seed=seed).items()}
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
    sd = random_state_dict(depth, width=width, in_channels=2 * stack, num_classes=None, seed=seed)
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
    mem = lstm["conv_i_hh.weight"].shape[0]
    state, maps = None, []
    for feature_conv, feature_conv_nbn, cam in frames_and_cams(resnet, x, sd["weight_softmax"]):
        bz, nc, h, w = feature_conv.size()
        if state is None:
            state = (torch.zeros(bz, mem, h, w), torch.zeros(bz, mem, h, w))
        if attention:
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

    training: BN modes, as resnet_forward's (eval by default).
    """
    resnet = {k: v for k, v in sd.items() if not k.startswith("fc_action.")}
    feats = resnet_forward(resnet, x, training=training)["pooled"]
    return F.linear(feats, sd["fc_action.weight"], sd["fc_action.bias"]), feats


def two_stream_forward(sd, rgb, flow, *, flow_training=False):
    """twoStreamAttentionModel.forward: rgb (B,T,C,H,W), flow (B,2*stack,H,W) -> (logits, joint feature).

    Dropout off; the RGB stream in eval mode; flow_training: the flow stream's BN modes (flow_forward's training).
    """
    _, flow_feats = flow_forward(sub(sd, "flowModel."), flow, training=flow_training)
    _, rgb_feats, _ = rgb_forward(sub(sd, "frameModel."), rgb)
    feats = torch.cat((flow_feats, rgb_feats), 1)
    return F.linear(feats, sd["fc2.weight"], sd["fc2.bias"]), feats


def compare(got, want: torch.Tensor, what: str) -> None:
    """Assert jax `got` matches torch `want` within ATOL/RTOL; prints max abs and rel (to max |want|) errors."""
    got, want = np.asarray(got), want.detach().numpy()
    assert got.shape == want.shape, (what, got.shape, want.shape)
    err = np.abs(got - want)
    print(f"{what}: max abs err {err.max():.2e}, max rel err {err.max() / np.abs(want).max():.2e}")
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL, err_msg=what)


# LSTA

ATTENTION = "ifoa"  # conv_{g}_s (bias) and conv_{g}_cam (no bias)
MEMORY = "ifc"  # conv_{g}_x (bias) and conv_{g}_c (no bias); plus conv_o_x (bias, on h) and conv_o_c (on c_cam)


def random_lsta_cell_state_dict(*, features=8, pool_classes=5, seed=0) -> dict[str, np.ndarray]:
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


def random_lsta_state_dict(*, depth=18, width=8, pool_classes=5, num_classes=5, seed=0) -> dict[str, np.ndarray]:
    """attentionModel state dict (numpy, torch layout): resNet.*, lsta_cell.*, classifier.1.* and its fc.* twin."""
    rng = np.random.default_rng(seed + 5000)
    mem = 8 * width  # the reference's memSize must equal the backbone's 512 channels (see above)
    sd = {f"resNet.{k}": v for k, v in random_state_dict(depth, width=width, num_classes=1000, seed=seed).items()}
    sd.update(
        {
            f"lsta_cell.{k}": v
            for k, v in random_lsta_cell_state_dict(features=mem, pool_classes=pool_classes, seed=seed).items()
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


def lsta_zero_state(n, mem, h, w):
    """([a, s], [c, o]) zeros for a batch of n on an (h, w) grid."""
    return [torch.zeros(n, 1, h, w), torch.zeros(n, 1, h, w)], [torch.zeros(n, mem, h, w), torch.zeros(n, mem, h, w)]


def lsta_forward(sd, x):
    """LSTA's attentionModel.forward (eval) on x (B,T,C,H,W) -> (logits, feats (pooled c_T), attention maps u
    (B,T,h,w))."""
    resnet, cell = sub(sd, "resNet."), sub(sd, "lsta_cell.")
    state, maps = None, []
    for feature_conv, feat, cam in frames_and_cams(resnet, x, resnet["fc.weight"]):
        bz, _, h, w = feature_conv.size()
        state = state or lsta_zero_state(bz, cell["conv_i_c.weight"].shape[0], h, w)  # memory channels
        state_att, state_inp, _, u = lsta_cell(cell, feat, cam.view(bz, 1, h, w), *state)
        state = (state_att, state_inp)
        maps.append(u[:, 0])
    feats = state[1][0].mean(dim=(2, 3))
    logits = F.linear(feats, sd["classifier.1.weight"], sd["classifier.1.bias"])
    return logits, feats, torch.stack(maps, 1)
