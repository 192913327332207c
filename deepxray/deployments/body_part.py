"""BodyPart: which body part a radiograph shows (or that it is no radiograph), for the ingress's gate."""

from __future__ import annotations

import numpy as np

from deepxray.deployments.common import ModelServer, model_deployment


@model_deployment("BodyPart", num_cpus=0.2, max_ongoing_requests=8, max_queued_requests=32)
class BodyPart(ModelServer):
    """The body-part classifier on the letterboxed view (`deepxray.imaging.model_inputs.body_part_view`)."""

    model_name = "body_part"

    async def classify(self, views: np.ndarray) -> tuple[np.ndarray, str]:
        """(n, 128, 128) views (a film's four turns) -> (probabilities over `deepxray.labels.BODY_PARTS` for
        each, this replica's model tag)."""
        return await self.predict(views), self.model.tag
