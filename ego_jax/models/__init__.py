"""Ego-RNN models: ResNet backbone, CAM attention, ConvLSTM, motion-segmentation head, motion guide, flow, two-stream;
LSTA (cell and RGB stream)."""

from ego_jax.models.attention import CamAttention, cam_attention, class_activation_map
from ego_jax.models.convlstm import ConvLSTMCell, convlstm
from ego_jax.models.ego_rnn import EgoRNN, action_loss
from ego_jax.models.flow import FlowResNet
from ego_jax.models.lsta import LSTA
from ego_jax.models.lsta_cell import LSTACell, lsta
from ego_jax.models.motion_guided import MotionGuide, motion_log_prob
from ego_jax.models.motion_head import MotionSegmentationHead, ms_loss
from ego_jax.models.resnet import BasicBlock, ResNet, layer4_grid
from ego_jax.models.two_stream import TwoStream
