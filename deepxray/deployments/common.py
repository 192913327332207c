"""What the deployments share: the wire format, the model replica, and its CPU share.

Nothing here imports TensorFlow or reads configuration at import time: a model is loaded in a replica's
`__init__`, where its settings (`deepxray.settings.Settings`) are read too.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from deepxray.logs import get_logger
from deepxray.settings import Settings

# Arrays cross process boundaries as float16: the views and crops are intensities in [0, 1], where float16 keeps
# 11 significant bits (steps of at most 1/2048), more than the 8 bits of a JPEG and far finer than anything the
# models resolve; it halves the object-store traffic (a 96x96 crop is 18 KiB, the detector view 128 KiB).
WIRE_DTYPE = np.float16

# The model deployments write no per-call access line: one image makes twelve calls (ten of them crops), and
# Serve's line for each, written and flushed to the replica's log file, was measured at about 1 ms a call on
# this machine's two cores (ten concurrent scorer calls: 40 ms with the lines, 31 ms without). The ingress's own
# line per request carries the request id, status and each stage's time; errors are still logged.
MODEL_LOGGING_CONFIG = {"enable_access_log": False}
# Serve asks every replica's `check_health` this often, and replaces one that fails or does not answer in time.
# A replica being stopped (`serve shutdown`, a redeploy, scaling down) takes no new requests and gets up to
# graceful_shutdown_timeout_s for those in flight: at least one film's longest path (three stages of
# stage_timeout_s each would be 30 s; a film takes well under a second here). docs/reliability.md: measured.
REPLICA_LIFECYCLE = {
    "health_check_period_s": 10,
    "health_check_timeout_s": 30,
    "graceful_shutdown_wait_loop_s": 1,
    "graceful_shutdown_timeout_s": 30,
}
# Fault injection (`ModelServer.debug_hang`, used by `python -m loadtests.faults replica-hang`) is refused unless
# this variable is "1" in the replica's environment (a profile's `ray_actor_options.runtime_env.env_vars`).
DEBUG_HOOKS_VARIABLE = "DEEPXRAY_DEBUG_HOOKS"


def model_deployment(name: str, num_cpus: float, max_ongoing_requests: int, max_queued_requests: int):
    """Serve's deployment decorator for a model: the one-machine profile's replica, CPU share and queue limits
    (`serve_config.yaml` writes the same values out), health checks, and no per-call access log."""
    from ray import serve

    return serve.deployment(
        name=name,
        num_replicas=1,
        ray_actor_options={"num_cpus": num_cpus},
        max_ongoing_requests=max_ongoing_requests,
        max_queued_requests=max_queued_requests,
        logging_config=MODEL_LOGGING_CONFIG,
        **REPLICA_LIFECYCLE,
    )


def to_wire(array: np.ndarray) -> np.ndarray:
    """A model input as it travels to a model deployment (float16, contiguous)."""
    return np.ascontiguousarray(array, dtype=WIRE_DTYPE)


def from_wire(array: np.ndarray) -> np.ndarray:
    """A model input back to the float32 the models take."""
    return np.asarray(array, dtype=np.float32)


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

    Subclasses name the model (`model_name`, as in `deepxray.models.registry`) and expose a verb (`classify`,
    `detect`, `score`). Predictions run in a worker thread (`asyncio.to_thread`), so the replica's event loop keeps
    accepting requests and health checks while TensorFlow computes. (Ray 2.60 also runs plain `def` methods in a
    thread pool by default, but only while RAY_SERVE_RUN_SYNC_IN_THREADPOOL is on; an explicit thread does not
    depend on it.)

    Args:
        model_dir: The artifact directory; None: the settings' (`DEEPXRAY_MODELS_DIR`), else the shipped model.
        threads: TensorFlow threads; None for the replica's CPU share, rounded, at least one.
    """

    model_name: str = ""
    # A layer whose input is the model's embedding (see `deepxray.models.runtime.LoadedModel`), or None.
    embedding_of: str | None = None
    # Until when (time.monotonic()) predictions and health checks hang: `debug_hang`, a fault-injection hook.
    hang_until: float = 0.0

    def __init__(self, model_dir: str | None = None, threads: int | None = None):
        from deepxray.models.runtime import LoadedModel, configure_threads

        self.threads = threads or threads_for(replica_cpus())
        configure_threads(self.threads)  # before TensorFlow runs anything in this process
        # No directory given (`serve run deepxray.app:graph`): the settings' (DEEPXRAY_MODELS_DIR), else shipped.
        settings = Settings()
        directory = Path(model_dir or settings.model_dir(self.model_name) or settings.models_folder() / self.model_name)
        self.model = LoadedModel(directory, embedding_of=self.embedding_of)
        self.model.warm_up()  # traces the graph and checks the output is finite: healthy only once warm
        self.predictions = 0
        get_logger().info(
            "model loaded name=%s tag=%s threads=%d pid=%d", self.model_name, self.model.tag, self.threads, os.getpid()
        )

    async def predict_one(self, model_input: np.ndarray) -> np.ndarray:
        """One input (S, S) -> the model's output for it."""
        return (await self.predict(model_input[None]))[0]

    async def predict(self, batch: np.ndarray) -> np.ndarray:
        """(n, S, S) inputs (any float dtype) -> the model's (n, ...) float32 outputs, computed in a thread."""
        self.predictions += 1
        await self._debug_pause()
        return await asyncio.to_thread(self.model.predict, from_wire(batch))

    async def predict_with_embedding(self, batch: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """(n, S, S) inputs -> (output, embedding) for each, from one forward pass computed in a thread."""
        self.predictions += 1
        await self._debug_pause()
        return await asyncio.to_thread(self.model.predict_with_embedding, from_wire(batch))

    async def check_health(self) -> None:
        """Raises when the model no longer gives finite output on a blank input; Ray then replaces the replica."""
        await self._debug_pause()
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

    async def debug_hang(self, seconds: float) -> dict:
        """Fault injection: this replica's predictions and health checks wait `seconds` before they run, as a
        replica that stopped answering would (`python -m loadtests.faults replica-hang`). Refused (PermissionError)
        unless DEEPXRAY_DEBUG_HOOKS=1 is in the replica's environment; 0 ends a hang. Returns the replica's pid."""
        if os.environ.get(DEBUG_HOOKS_VARIABLE) != "1":
            raise PermissionError(f"debug hooks are off in this replica: {DEBUG_HOOKS_VARIABLE}=1 is not set")
        self.hang_until = time.monotonic() + max(0.0, float(seconds))
        get_logger().warning("debug hook: predictions and health checks hang for %g s pid=%d", seconds, os.getpid())
        return {"name": self.model_name, "pid": os.getpid(), "hang_s": float(seconds)}

    async def _debug_pause(self) -> None:
        """Waits out a hang set by `debug_hang` (nothing otherwise)."""
        remaining = self.hang_until - time.monotonic()
        if remaining > 0:
            await asyncio.sleep(remaining)
