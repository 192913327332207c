"""The DeepXRay application: the ingress bound to the model deployments (the three hand models and, where the
model set has it, the chest-findings model behind `/analyze`).

    serve run deepxray.app:graph                      # defaults: the shipped models, the one-machine profile
    serve run deepxray.app:build_app models_dir=/path # the typed builder, settings on the command line
    serve run serve_config.yaml                       # replicas, CPU shares, queues, batching and args from a file

`graph` is bound with nothing read yet: each replica reads `deepxray.settings.Settings` (the environment's
`DEEPXRAY_*` variables, else the defaults) when it starts. `build_app(Settings)` is what a serve config's
`import_path` names; its settings come from the config's `args:` and, for any left out there, the environment.
"""

# No `from __future__ import annotations` here: Ray inspects `build_app`'s parameter annotation at run time to
# turn the config's `args` into `Settings`, and a string annotation would hide it.

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.serve import Application

from deepxray.deployments.body_part import BodyPart
from deepxray.deployments.chest_findings import ChestFindings
from deepxray.deployments.ingress import Ingress
from deepxray.deployments.joint_detection import JointDetection
from deepxray.deployments.ratingen_score import RatingenScore
from deepxray.models.artifacts import MODEL_FILE
from deepxray.models.registry import ALL_MODELS, MODELS
from deepxray.settings import Settings

# Ray Serve's gRPC data plane (proxy -> ingress -> model replicas) in place of Ray actor calls, for a Ray that
# this process starts (`serve run deepxray.app:graph` imports this module before it starts Ray; a cluster started
# with `ray start` needs the variable in its environment, as cluster.yaml and the KubeRay manifest set it).
# Measured on 2 cores (benchmarks/serve_latency.py, one request at a time): about 30 ms less CPU per image over
# all processes and 10-40 ms less latency, most of it in moving the multi-megabyte upload from proxy to ingress.
os.environ.setdefault("RAY_SERVE_USE_GRPC_BY_DEFAULT", "1")

# The model deployments by model name, as the registry names them (the ingress takes them by these names).
_DEPLOYMENTS = {deployment.name: deployment for deployment in (BodyPart, JointDetection, RatingenScore, ChestFindings)}
MODEL_DEPLOYMENTS = {name: _DEPLOYMENTS[spec.deployment] for name, spec in ALL_MODELS.items()}


def bind_graph(settings: Settings, deployment_options: Mapping[str, Mapping[str, Any]] | None = None) -> Application:
    """The bound application for `settings`; `deployment_options` (by deployment name) as a serve config's
    `deployments:` would set them (tests and benchmarks use it to run the profile of `serve_config.yaml`)."""
    options = {
        name: {k: v for k, v in opts.items() if k != "name"} for name, opts in (deployment_options or {}).items()
    }

    def configured(deployment, **defaults):
        return deployment.options(**{**defaults, **options.get(deployment.name, {})})

    models = {}
    for name, deployment in MODEL_DEPLOYMENTS.items():
        path = settings.model_dir(name)
        if name not in MODELS and not has_artifact(path or settings.models_folder() / name):
            continue  # a model set without the chest-findings model: `/analyze` refuses chests as `/score` does
        defaults = {"user_config": settings.batching()} if deployment is RatingenScore else {}
        models[name] = configured(deployment, **defaults).bind(str(path) if path else None)
    return configured(Ingress).bind(**models, settings=settings)


def has_artifact(directory) -> bool:
    return (directory / MODEL_FILE).is_file()


def build_app(args: Settings) -> Application:
    """The typed app builder for a serve config (`import_path: deepxray.app:build_app`, `args: {...}`)."""
    return bind_graph(Settings.with_environment(args if isinstance(args, Settings) else dict(args or {})))


def _default_set_has_chest_findings() -> bool:
    """Whether the model folder `graph`'s replicas will load (DEEPXRAY_MODELS_DIR, else the shipped models) holds
    the chest-findings model; only that variable is read, so importing this module cannot fail on settings."""
    from deepxray.models.artifacts import shipped_models_dir

    folder = os.environ.get("DEEPXRAY_MODELS_DIR")
    return has_artifact((Path(folder).expanduser() if folder else shipped_models_dir()) / "chest_findings")


# `serve run deepxray.app:graph`: the decorators' one-machine profile; each replica reads its settings at start.
graph: Application = Ingress.bind(
    BodyPart.bind(),
    JointDetection.bind(),
    RatingenScore.bind(),
    ChestFindings.bind() if _default_set_has_chest_findings() else None,
)
