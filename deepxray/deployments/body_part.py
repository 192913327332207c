"""BodyPart: which body part a radiograph shows (or that it is no radiograph), for the ingress's gate."""

from __future__ import annotations

import numpy as np
from ray import serve

from deepxray.deployments.common import MODEL_LOGGING_CONFIG, ModelServer


@serve.deployment(
    name="BodyPart",
    num_replicas=1,
    ray_actor_options={"num_cpus": 0.2},
    max_ongoing_requests=8,
    max_queued_requests=32,
    health_check_period_s=10,
    health_check_timeout_s=30,
    logging_config=MODEL_LOGGING_CONFIG,
)
class BodyPart(ModelServer):
    """The body-part classifier on the letterboxed view (`deepxray.imaging.model_inputs.body_part_view`).

    Args:
        model_dir: The artifact directory; None for the shipped demo model (`default_models_dir()/body_part`).
        threads: TensorFlow threads; None for the replica's CPU share, rounded, at least one.
    """

    model_name = "body_part"

    async def classify(self, view: np.ndarray) -> np.ndarray:
        """(128, 128) view -> probabilities over `deepxray.labels.BODY_PARTS`."""
        return (await self.predict(view[None]))[0]
