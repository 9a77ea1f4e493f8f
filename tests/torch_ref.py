"""Independent PyTorch re-statement of torchvision's ResNet-18/34 forward, for parity tests.

torchvision cannot be imported beside the torch build used here, so this restates
torchvision.models.resnet (BasicBlock, v1 weights layout) with torch.nn.functional ops on a
torchvision-format state dict, plus Ego-RNN's layer4 pre-bn2 tap. NCHW throughout.

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
    momentum convention); a predicate over BN names ('layer4.0.bn1', ...) selects the BNs that do. 'layer4_raw' is
    conv2 + shortcut of the last layer4 block (before bn2, relu).
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
