"""The RVM network, written without torchvision and key-compatible with the official checkpoints."""
