"""Segmentation metrics: pure numpy/scipy/cc3d functions on label arrays, no file I/O.

- `protocols`: the lesion-wise protocols as plug-ins (regions, keys, options, scoring), by name.
- `lesionwise`: the BraTS 2024 lesion-wise protocol (official GLI scorer, number for number).
- `panoptic`: the BraTS 2025 lesion-wise protocol (brats-evaluation / panoptica, number for number).
- `lesions`: what one lesion is (dilation merging, size filtering, cross-tissue merging).
- `surface`: surfel-weighted surface distances and the robust Hausdorff distance (HD95).
- `voxel`: nnU-Net's voxel metrics (Dice, IoU, TP, FP, FN, TN per label and region).
- `morphology`: boxes, crops and the 18-neighbourhood dilation they all work on.
"""
