"""Ingress: the HTTP API (`deepxray.api`) as a Ray Serve deployment, over the three model deployments' handles.

`POST /score` runs `deepxray.pipeline.score_radiograph` with models that call the handles: the body-part view
(its four turns in one call) and the detector view go to `BodyPart.classify` and `JointDetection.detect`, the
ten joint crops (cut here from the full-resolution image, so the image itself never leaves this process) go to
`RatingenScore.score` all at once, `crops_per_call` to a call, where `@serve.batch` runs them as one forward pass. Everything about HTTP lives in `deepxray.api`; this
file only wires the handles in.
"""

from __future__ import annotations

import asyncio

import numpy as np
from fastapi import FastAPI
from ray import serve

from deepxray.api.routes import create_app
from deepxray.api.service import ScoringService
from deepxray.deployments.common import REPLICA_LIFECYCLE, to_wire
from deepxray.logs import keep_patient_data_out_of_logs
from deepxray.settings import Settings


class HandleBackend:
    """The model deployments through their DeploymentHandles (`deepxray.api.service.ModelBackend`); arrays
    travel as float16 (see `to_wire`), each answer with the tag of the replica's model."""

    def __init__(self, body_part, joint_detection, ratingen_score, chest_findings=None):
        self.handles = {"body_part": body_part, "joint_detection": joint_detection, "ratingen_score": ratingen_score}
        if chest_findings is not None:  # `/analyze` routes chests to it (the ModelBackend's optional method)
            self.handles["chest_findings"] = chest_findings
            self.analyze_chest = lambda view: chest_findings.analyze.remote(to_wire(view))

    def classify(self, views: np.ndarray):
        return self.handles["body_part"].classify.remote(to_wire(views))

    def detect(self, view: np.ndarray):
        return self.handles["joint_detection"].detect.remote(to_wire(view))

    def score(self, crops: np.ndarray):
        return self.handles["ratingen_score"].score.remote(to_wire(crops))

    async def info(self) -> dict[str, dict]:
        return await self._ask_each("info")

    async def cards(self) -> dict[str, dict]:
        return await self._ask_each("card")

    async def _ask_each(self, method: str) -> dict[str, dict]:
        answers = await asyncio.gather(*(getattr(handle, method).remote() for handle in self.handles.values()))
        return dict(zip(self.handles, answers, strict=True))


@serve.deployment(
    name="Ingress",
    num_replicas=1,
    # Fewer malloc arenas for the decoding threads keeps the replica's memory flat (see serve_config.yaml).
    ray_actor_options={"num_cpus": 0.5, "runtime_env": {"env_vars": {"MALLOC_ARENA_MAX": "2"}}},
    # Room for the admission gate's 4 scoring + 4 waiting, plus health, readiness and model-card calls; Serve's
    # own queue behind it is the last resort (its 503 is plain text, the gate's is the API's JSON).
    max_ongoing_requests=16,
    max_queued_requests=8,
    backpressure_config={"retry_after_s": 1},
    **REPLICA_LIFECYCLE,
)
@serve.ingress()
class Ingress:
    """The HTTP ingress: `create_app` over the model deployments' handles.

    Args:
        body_part, joint_detection, ratingen_score: Handles of the model deployments (bound deployments in
            `deepxray.app`, which Serve turns into handles).
        chest_findings: Handle of the chest-findings deployment, or None: `/analyze` then refuses chests.
        settings: The application's settings; None reads them here, in the replica (`Settings()`).
    """

    def __init__(
        self, body_part, joint_detection, ratingen_score, chest_findings=None, settings: Settings | None = None
    ):
        keep_patient_data_out_of_logs()
        self.settings = settings if settings is not None else Settings()
        backend = HandleBackend(body_part, joint_detection, ratingen_score, chest_findings)
        self.service = ScoringService(backend, self.settings)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.service, proxy_echoes_request_id=True)
