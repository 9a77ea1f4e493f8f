"""Ego-RNN models: ResNet backbone, CAM attention, ConvLSTM, motion-segmentation head, flow and two-stream."""
