"""Convert a torchvision ResNet-18/34 .pth state dict into ego_jax's torch-free ImageNet artifact (installed as
ego-jax-convert-weights; from a checkout: python scripts/convert_weights.py).

  ego-jax-convert-weights resnet34-b627a593.pth data/weights/resnet34_imagenet.npz

The .npz holds arrays keyed by '/'-joined nnx paths plus '__meta__'; training loads it with
`ego_jax.convert.torchvision.load_imagenet(model.backbone, path, modality='rgb'|'flow')`, without torch.
"""

import argparse
import pathlib
import sys
from collections.abc import Mapping

from ego_jax.convert.torchvision import WeightsError, save_imagenet, torchvision_to_nnx


def read_state_dict(path: pathlib.Path) -> dict:
    """.pth file -> {name: np.ndarray}; torch imported here only, loaded with weights_only=True."""
    try:
        import torch
    except ImportError:
        raise SystemExit("reading .pth files needs PyTorch: pip install 'ego_jax[torch]'") from None
    if not path.is_file():
        raise SystemExit(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... depending on what the file holds
        raise SystemExit(
            f"{path} is not a loadable state dict ({type(e).__name__}: {str(e).splitlines()[0]}); "
            "save model.state_dict(), not the model object"
        ) from None
    if not isinstance(obj, Mapping):
        raise SystemExit(
            f"{path} holds a {type(obj).__name__}, expected a state dict (a mapping of parameter names "
            "to tensors) of a torchvision ResNet"
        )
    return {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in obj.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=pathlib.Path, help="torchvision ResNet-18/34 state dict (.pth)")
    parser.add_argument("output", type=pathlib.Path, help="artifact to write (.npz)")
    args = parser.parse_args(argv)
    if args.output.suffix != ".npz":
        raise SystemExit(f"{args.output}: the output must be a .npz file")
    state_dict = read_state_dict(args.input)
    try:
        arrays = torchvision_to_nnx(state_dict)
    except WeightsError as e:
        raise SystemExit(f"{args.input}: {e}") from None
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_imagenet(args.output, arrays, source=args.input.name)
    print(f"wrote {args.output} ({len(arrays)} arrays)", file=sys.stderr)


if __name__ == "__main__":
    main()
