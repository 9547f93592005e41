"""Data layer: find image/mask pairs, read bands with validity, statistics, splits,
shape transforms, augmentation and the PyTorch dataset."""
