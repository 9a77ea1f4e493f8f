"""The two-stream recipe shrunk to run end to end on 2 CPU cores in minutes: synthetic data, from scratch.

  bash scripts/quickstart.sh        (make_synthetic.py --preset quickstart, build, train, evaluate, CAM)

Same four stages as configs/two_stream.py (RGB stage 1 -> RGB stage 2, flow, joint from both) with the same
filters, BN modes, optimisers and learning rates, except one deviation (needed only without ImageNet weights):
  stage1_backbone=train  RGB stage 1 also trains the whole backbone with its BatchNorms in training mode. The
      reference trains only ConvLSTM + classifier on a frozen ImageNet backbone; from a random init that leaves
      the ConvLSTM reading random features, and the BN statistics never adapt to the data (configs/recipes.py).
Sizes: ResNet-18 width 8, 5 frames, 64 px crops of the 96x80 frames (layer4 grid 2x2: a coarse CAM; 80 px
crops, grid 3x3, generalised worse to the held-out subject in one run), 3-frame flow stacks (3 stacks
averaged at test), batch 8; 30-100 epochs per stage with the
milestones scaled to the short runs. Data: the 'quickstart' preset of ego_jax/data/synthetic.py, 3 objects
told apart only by colour x 2 verbs (take: up, open: left), 6 clips per class and subject: flow alone can
only tell the verb (ceiling 1/3 on the 6 classes), RGB frames the object (1/2 from appearance, more if the
ConvLSTM picks up the motion), both together every class.
"""

from ego_jax import recipes


def get_config(arg=None):
    return recipes.quickstart(arg)
