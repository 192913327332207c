"""The DeepXRay application: the ingress bound to the three model deployments.

    serve run deepxray.app:graph                      # defaults: the shipped models, the one-machine profile
    serve run deepxray.app:build_app models_dir=/path # the typed builder, args on the command line
    serve run serve_config.yaml                       # replicas, CPU shares, queues, batching and args from a file

`graph` is bound with defaults only (nothing is read from the environment or disk at import; each replica finds
the shipped models when it starts). `build_app(AppArgs)` is what a serve config's `import_path` names; its
arguments (model paths, limits, timeouts, batching) come from the config's `args:` and, for any argument not
given there, from an environment variable `DEEPXRAY_<ARGUMENT>` (e.g. `DEEPXRAY_MAX_UPLOAD_BYTES`).
"""

# No `from __future__ import annotations` here: Ray inspects `build_app`'s parameter annotation at run time to
# turn the config's `args` into an `AppArgs`, and a string annotation would hide it.

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray.serve import Application

from deepxray.deployments.body_part import BodyPart
from deepxray.deployments.common import IngressSettings
from deepxray.deployments.ingress import Ingress
from deepxray.deployments.joint_detection import JointDetection
from deepxray.deployments.ratingen_score import (
    DEFAULT_BATCH_WAIT_TIMEOUT_S,
    DEFAULT_MAX_BATCH_SIZE,
    RatingenScore,
)
from deepxray.pipeline import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

ENV_PREFIX = "DEEPXRAY_"

# Ray Serve's gRPC data plane (proxy -> ingress -> model replicas) in place of Ray actor calls, for a Ray that
# this process starts (`serve run deepxray.app:graph` imports this module before it starts Ray; a cluster started
# with `ray start` needs the variable in its environment, as cluster.yaml and the KubeRay manifest set it).
# Measured on 2 cores (benchmarks/serve_latency.py, one request at a time): about 30 ms less CPU per image over
# all processes and 10-40 ms less latency, most of it in moving the multi-megabyte upload from proxy to ingress.
os.environ.setdefault("RAY_SERVE_USE_GRPC_BY_DEFAULT", "1")


class AppArgs(BaseModel):
    """The application's arguments (a serve config's `args:`); unset ones fall back to `DEEPXRAY_<NAME>`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models_dir: str | None = Field(
        None, description="Directory holding body_part/, joint_detection/ and ratingen_score/; None: shipped models"
    )
    body_part_model: str | None = Field(None, description="Artifact directory of the body-part model")
    joint_detection_model: str | None = Field(None, description="Artifact directory of the joint detector")
    ratingen_score_model: str | None = Field(None, description="Artifact directory of the Ratingen scorer")
    accept_probability: float = Field(0.5, ge=0.0, le=1.0, description="Least hand probability to score")
    min_joint_confidence: float = Field(0.2, ge=0.0, le=1.0, description="Least detector confidence per joint")
    max_upload_bytes: int = Field(DEFAULT_MAX_BYTES, gt=0, description="Largest upload (413 above)")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0, description="Largest width x height (413 above)")
    stage_timeout_s: float = Field(10.0, gt=0.0, description="Longest wait for one model call (504 after)")
    retry_after_s: int = Field(1, ge=0, description="Retry-After of a 503 when Serve does not say")
    max_scoring: int = Field(4, ge=1, description="Images one ingress replica scores at once")
    max_waiting: int = Field(4, ge=0, description="Images waiting for a slot per ingress replica (503 beyond)")
    max_batch_size: int = Field(DEFAULT_MAX_BATCH_SIZE, ge=1, description="Most crops in one scorer pass")
    batch_wait_timeout_s: float = Field(DEFAULT_BATCH_WAIT_TIMEOUT_S, ge=0.0, description="Longest wait to fill one")

    @model_validator(mode="before")
    @classmethod
    def _environment(cls, data: Any) -> Any:
        """Arguments not given explicitly come from `DEEPXRAY_<NAME>` when set (read when the app is built)."""
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        for name in cls.model_fields:
            value = os.environ.get(ENV_PREFIX + name.upper())
            if name not in data and value is not None:
                data[name] = value
        return data

    def model_paths(self) -> dict[str, str | None]:
        """Each model's artifact directory (absolute), or None: the replica then loads the shipped model."""
        paths = {}
        for name in ("body_part", "joint_detection", "ratingen_score"):
            explicit = getattr(self, f"{name}_model")
            if explicit:
                paths[name] = str(Path(explicit).expanduser().resolve())
            elif self.models_dir:
                paths[name] = str((Path(self.models_dir).expanduser() / name).resolve())
            else:
                paths[name] = None
        return paths

    def ingress_settings(self) -> IngressSettings:
        return IngressSettings(
            accept_probability=self.accept_probability,
            min_joint_confidence=self.min_joint_confidence,
            max_upload_bytes=self.max_upload_bytes,
            max_pixels=self.max_pixels,
            stage_timeout_s=self.stage_timeout_s,
            retry_after_s=self.retry_after_s,
            max_scoring=self.max_scoring,
            max_waiting=self.max_waiting,
        )

    def batching(self) -> dict:
        """The scorer's `user_config` (a serve config's own `user_config` for RatingenScore wins over it)."""
        return {"max_batch_size": self.max_batch_size, "batch_wait_timeout_s": self.batch_wait_timeout_s}


def bind_graph(args: AppArgs, deployment_options: Mapping[str, Mapping[str, Any]] | None = None) -> Application:
    """The bound application for `args`; `deployment_options` (by deployment name) as a serve config's
    `deployments:` would set them (tests use it to run the profile of `serve_config.yaml`)."""
    options = {
        name: {k: v for k, v in opts.items() if k != "name"} for name, opts in (deployment_options or {}).items()
    }

    def configured(deployment, **defaults):
        return deployment.options(**{**defaults, **options.get(deployment.name, {})})

    paths = args.model_paths()
    return configured(Ingress).bind(
        configured(BodyPart).bind(paths["body_part"]),
        configured(JointDetection).bind(paths["joint_detection"]),
        configured(RatingenScore, user_config=args.batching()).bind(paths["ratingen_score"]),
        args.ingress_settings(),
    )


def build_app(args: AppArgs) -> Application:
    """The typed app builder for a serve config (`import_path: deepxray.app:build_app`, `args: {...}`)."""
    if not isinstance(args, AppArgs):  # called directly with a dict
        args = AppArgs.model_validate(dict(args or {}))
    return bind_graph(args)


# `serve run deepxray.app:graph`: the shipped models, the decorators' one-machine profile, default limits.
graph: Application = Ingress.bind(BodyPart.bind(), JointDetection.bind(), RatingenScore.bind())
