"""Ego-RNN models: ResNet backbone, CAM attention, ConvLSTM, motion-segmentation head, flow and two-stream."""
from ego_jax.models.resnet import BasicBlock, ResNet, layer4_grid
