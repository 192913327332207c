"""ChestFindings: CheXpert's fourteen labels on a chest film, each with its heatmap, for the ingress to call.

The ingress makes the view (`deepxray.imaging.model_inputs.chest_view(image).pixels`, sent as float16) and maps
a heatmap's peak back to the film with the same `ChestView` (`deepxray.analysis`); only the 256x256 view and a
14x32x32 float16 grid cross the process boundary.
"""

from __future__ import annotations

import asyncio

import numpy as np

from deepxray.deployments.common import WIRE_DTYPE, ModelServer, from_wire, model_deployment
from deepxray.labels import CHEST_FINDINGS


@model_deployment("ChestFindings", num_cpus=0.1, max_ongoing_requests=8, max_queued_requests=32)
class ChestFindings(ModelServer):
    """The chest-findings model on the letterboxed film (`deepxray.imaging.model_inputs.chest_view`)."""

    model_name = "chest_findings"

    async def analyze(self, view: np.ndarray) -> tuple[dict, str]:
        """(256, 256) view -> ({"probabilities": over `deepxray.labels.CHEST_FINDINGS` (float32, 14),
        "thresholds": this model's card's threshold per label (None: a label it does not report),
        "heatmaps": float16, 14 x 32 x 32 class activation maps in logit units, one cell per 8 view pixels},
        this replica's model tag). The replica applies its own card, so thresholds and probabilities always come
        from the same model, during a rollout too."""
        from deepxray.models.chest_findings import chest_findings_with_heatmaps

        self.predictions += 1
        probabilities, heatmaps = await asyncio.to_thread(chest_findings_with_heatmaps, self.model, from_wire(view))
        output = {
            "probabilities": probabilities,
            "thresholds": self.thresholds,
            "heatmaps": heatmaps.astype(WIRE_DTYPE),
        }
        return output, self.model.tag

    @property
    def thresholds(self) -> list[float | None]:
        """Each label's decision threshold from the model card, None for a label the model does not report."""
        card = self.model.card
        not_drawn = card.not_drawn or {}
        return [None if label in not_drawn else (card.thresholds or {}).get(label) for label in CHEST_FINDINGS]
