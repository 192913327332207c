"""What the four deployments share: the ingress settings, the log, the wire format and the model replica.

Nothing here imports TensorFlow or reads configuration at import time: a model is loaded in a replica's
`__init__`, and settings come from the app builder's arguments (`deepxray.app.AppArgs`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deepxray.pipeline import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, PipelineLimits

# Child of Ray Serve's logger: inside a replica each line also goes to the replica's log file with Serve's own
# fields (deployment, replica, and the request id the proxy assigned, which is the one our answers carry).
LOGGER_NAME = "ray.serve.deepxray"

# Arrays cross process boundaries as float16: the views and crops are intensities in [0, 1], where float16 keeps
# 11 significant bits (steps of at most 1/2048), more than the 8 bits of a JPEG and far finer than anything the
# models resolve; it halves the object-store traffic (a 96x96 crop is 18 KiB, the detector view 128 KiB).
WIRE_DTYPE = np.float16

# The model deployments write no per-call access line: one image makes twelve calls (ten of them crops), and
# Serve's line for each, written and flushed to the replica's log file, was measured at about 1 ms a call on
# this machine's two cores (ten concurrent scorer calls: 40 ms with the lines, 31 ms without). The ingress's own
# line per request carries the request id, status and each stage's time; errors are still logged.
MODEL_LOGGING_CONFIG = {"enable_access_log": False}


def get_logger() -> logging.Logger:
    """The service's logger. Lines hold a request id, status, timings and sizes: never an upload or its name."""
    return logging.getLogger(LOGGER_NAME)


def keep_patient_data_out_of_logs() -> None:
    """pydicom warns and logs about odd header values by quoting them (names, dates, identifiers): in a replica
    that decodes uploads, those lines are dropped (decoding itself is unchanged)."""
    import warnings

    logging.getLogger("pydicom").disabled = True
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    try:
        from pydicom import config

        config.settings.reading_validation_mode = config.IGNORE
    except Exception:  # an older or newer pydicom without this setting: the logger is silenced all the same
        pass


def to_wire(array: np.ndarray) -> np.ndarray:
    """A model input as it travels to a model deployment (float16, contiguous)."""
    return np.ascontiguousarray(array, dtype=WIRE_DTYPE)


def from_wire(array: np.ndarray) -> np.ndarray:
    """A model input back to the float32 the models take."""
    return np.asarray(array, dtype=np.float32)


class IngressSettings(BaseModel):
    """The ingress's limits and timeouts (set from `deepxray.app.AppArgs`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    accept_probability: float = Field(0.5, ge=0.0, le=1.0)
    min_joint_confidence: float = Field(0.2, ge=0.0, le=1.0)
    max_upload_bytes: int = Field(DEFAULT_MAX_BYTES, gt=0)
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0)
    stage_timeout_s: float = Field(10.0, gt=0.0)
    retry_after_s: int = Field(1, ge=0)
    max_scoring: int = Field(4, ge=1)
    max_waiting: int = Field(4, ge=0)

    def limits(self) -> PipelineLimits:
        return PipelineLimits(
            accept_probability=self.accept_probability,
            min_joint_confidence=self.min_joint_confidence,
            max_bytes=self.max_upload_bytes,
            max_pixels=self.max_pixels,
        )


def replica_cpus() -> float:
    """The CPUs Ray reserved for this replica (`ray_actor_options.num_cpus`, whatever set it); 1 outside Ray."""
    try:
        import ray

        if ray.is_initialized():
            return float(ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0))
    except Exception:  # no Ray, or not inside a worker: one thread is the safe default
        pass
    return 1.0


def threads_for(cpus: float) -> int:
    """TensorFlow threads for a CPU share: the share rounded, at least one."""
    return max(1, round(cpus))


class ModelServer:
    """One loaded model in a replica: loads and warms up in `__init__`, predicts off the event loop.

    Subclasses name the artifact (`model_name`) and expose a verb (`classify`, `detect`, `score`). Predictions
    run in a worker thread (`asyncio.to_thread`), so the replica's event loop keeps accepting requests and
    health checks while TensorFlow computes. (Ray 2.60 also runs plain `def` methods in a thread pool by
    default, but only while RAY_SERVE_RUN_SYNC_IN_THREADPOOL is on; an explicit thread does not depend on it.)
    """

    model_name: str = ""

    def __init__(self, model_dir: str | None = None, threads: int | None = None):
        from deepxray.models.artifacts import default_models_dir
        from deepxray.models.runtime import LoadedModel, configure_threads

        self.threads = threads or threads_for(replica_cpus())
        configure_threads(self.threads)  # before TensorFlow runs anything in this process
        directory = Path(model_dir) if model_dir else default_models_dir() / self.model_name
        self.model = LoadedModel(directory)
        self.model.warm_up()  # traces the graph and checks the output is finite: healthy only once warm
        self.predictions = 0
        get_logger().info(
            "model loaded name=%s tag=%s threads=%d pid=%d", self.model_name, self.model.tag, self.threads, os.getpid()
        )

    async def predict(self, batch: np.ndarray) -> np.ndarray:
        """(n, S, S) inputs (any float dtype) -> the model's (n, ...) float32 outputs, computed in a thread."""
        self.predictions += 1
        return await asyncio.to_thread(self.model.predict, from_wire(batch))

    async def check_health(self) -> None:
        """Raises when the model no longer gives finite output on a blank input; Ray then replaces the replica."""
        await asyncio.to_thread(self.model.warm_up)

    def card(self) -> dict:
        """The model card, as JSON."""
        return asdict(self.model.card)

    def info(self) -> dict:
        """Loaded and warm (this answers only after `__init__` finished), with what identifies the replica."""
        return {
            "name": self.model_name,
            "tag": self.model.tag,
            "ready": True,
            "threads": self.threads,
            "pid": os.getpid(),
            "predictions": self.predictions,
        }
