"""Labelled synthetic radiographs: left and right hands with Ratingen erosion scores, other body parts, and
pictures that are no radiograph. See `generate.generate_dataset` and `phantom.render_phantom`."""

from deepxray.phantoms.generate import GenerationSettings, generate_dataset, read_manifest
from deepxray.phantoms.phantom import Phantom, render_phantom

__all__ = ["GenerationSettings", "Phantom", "generate_dataset", "read_manifest", "render_phantom"]
