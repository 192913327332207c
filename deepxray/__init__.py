"""DeepXRay: Ratingen erosion scores of hand radiographs, served with Ray Serve (research use only)."""

from deepxray import _quiet  # noqa: F401  before anything imports TensorFlow or OpenCV
