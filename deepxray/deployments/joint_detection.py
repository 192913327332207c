"""JointDetection: the ten scored joints on the detector view of a (left-oriented) hand."""

from __future__ import annotations

import numpy as np

from deepxray.deployments.common import ModelServer, model_deployment


@model_deployment("JointDetection", num_cpus=0.5, max_ongoing_requests=8, max_queued_requests=32)
class JointDetection(ModelServer):
    """The joint detector on `deepxray.imaging.model_inputs.detector_view` (a right hand arrives mirrored)."""

    model_name = "joint_detection"

    async def detect(self, view: np.ndarray) -> tuple[np.ndarray, str]:
        """(256, 256) view -> ((10, 3): x, y in view pixels and a confidence in [0, 1], in `JOINT_NAMES` order;
        this replica's model tag)."""
        return await self.predict_one(view), self.model.tag
