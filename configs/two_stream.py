"""Full Ego-RNN: RGB stage 1 -> RGB stage 2, flow, then joint two-stream training.

configs/two_stream.py[:frames=7|16|25,data=gtea61|synthetic|egtea|gtea71|gtea_gaze,split=K,seed=0,
                      init=imagenet|scratch,rgb=ego_rnn|lsta]

rgb=lsta: the RGB stream is LSTA (configs/lsta.py's two stages and frame sampling) instead of Ego-RNN's, joint-trained
with the same flow stream by the same joint stage (an ego_jax combination: the paper's two-stream LSTA fuses the
streams inside the cell, code the authors did not publish).
"""

from ego_jax import recipes


def get_config(arg=None):
    return recipes.two_stream_recipe(arg)
