"""LSTA RGB stream (Sudhakaran, Escalera & Lanz, CVPR 2019), the authors' main_rgb.py / train_rgb.sh recipe.

configs/lsta.py[:frames=7|16|25,data=gtea61|synthetic,seed=0,init=imagenet|scratch,stage1_backbone=frozen|train]

rgb_stage1: LSTA cell + classifier on the frozen ImageNet ResNet-34 (every BN in inference mode), Adam lr 1e-3,
eps 1e-4, coupled L2 5e-4, x0.1 at epochs 25/75/150 (scheduler stepped at epoch start, as Ego-RNN's), 200 epochs,
batch 32, 25 frames, memory 512, output pooling over 100 classes. rgb_stage2 (from stage 1): + layer4 conv1/conv2
and the ImageNet fc, same optimiser (train_rgb.sh run with --stage 2; the public code has no stage-2 command).
Frames: floor(linspace(1, N, 25)) with the last frame included (LSTA's makeDataset; Ego-RNN's leaves it out).
"""

from ego_jax import recipes


def get_config(arg=None):
    args = recipes.parse_args(arg)
    c = recipes.base(args)
    recipes.lsta_data(c)
    return recipes.finish(c, args, dict(rgb_stage1=recipes.lsta_stage1(c), rgb_stage2=recipes.lsta_stage2(c)))
