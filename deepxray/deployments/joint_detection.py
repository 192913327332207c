"""JointDetection: the ten scored joints on the detector view of a (left-oriented) hand."""

from __future__ import annotations

import numpy as np
from ray import serve

from deepxray.deployments.common import MODEL_LOGGING_CONFIG, ModelServer


@serve.deployment(
    name="JointDetection",
    num_replicas=1,
    ray_actor_options={"num_cpus": 0.5},
    max_ongoing_requests=8,
    max_queued_requests=32,
    health_check_period_s=10,
    health_check_timeout_s=30,
    logging_config=MODEL_LOGGING_CONFIG,
)
class JointDetection(ModelServer):
    """The joint detector on `deepxray.imaging.model_inputs.detector_view` (a right hand arrives mirrored).

    Args:
        model_dir: The artifact directory; None for the shipped demo model (`default_models_dir()/joint_detection`).
        threads: TensorFlow threads; None for the replica's CPU share, rounded, at least one.
    """

    model_name = "joint_detection"

    async def detect(self, view: np.ndarray) -> np.ndarray:
        """(256, 256) view -> (10, 3): x, y in view pixels and a confidence in [0, 1], in `JOINT_NAMES` order."""
        return (await self.predict(view[None]))[0]
