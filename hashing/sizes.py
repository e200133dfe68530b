"""Sizes shared by the decoder and the CNN, kept apart from both so decode workers never import torch."""

INPUT_SIZE = 224  # the CNN's input side, in pixels
