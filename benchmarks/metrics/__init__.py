"""Metric functions shared by the benchmarks (pure functions: arrays in, numbers out).

- :mod:`.trajectory`: APE / RPE through evo's Python API, ATE as % of path length, and the
  KITTI devkit drift (``t_err`` %, ``r_err`` deg / 100 m over 100-800 m segments).
- :mod:`.pose`: two-view relative pose from matches (essential matrix + ``recoverPose``),
  the pose error ``max(rotation, translation-direction)`` in degrees and the pose AUC.
- :mod:`.homography`: mean matching accuracy and homography-estimation corner accuracy.
"""
