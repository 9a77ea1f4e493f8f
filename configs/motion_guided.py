"""Motion-guided attention (ego_jax's own variant): Ego-RNN + MS classification, the MS prediction steering the CAM.

attention = softmax(CAM + w * log p(moving)), w learned from 0 (ego_jax/models/motion_guided.py). Stage 1 is the
attention stage 1; stage 2 is configs/ms_cls.py's (MS head on layer4 before attention, loss CE + 1.0 * MS) plus w,
trained at recipes.MOTION_GUIDE_LR; the MS prediction is detached from the action loss (motion_guide.detach).
configs/motion_guided.py[:frames=7|16|25,data=gtea61|synthetic,seed=0,init=imagenet|scratch]
"""

from ego_jax import recipes


def get_config(arg=None):
    return recipes.rgb_recipe(
        arg, attention=True, ms_head=dict(kind="cls", tap="layer4", hidden=100), motion_guide=dict(detach=True)
    )
