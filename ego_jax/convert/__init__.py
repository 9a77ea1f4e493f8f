"""Weight conversion from torchvision and reference Ego-RNN PyTorch checkpoints."""
