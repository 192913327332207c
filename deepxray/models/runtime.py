"""Loaded models ready to predict, in this process: what the deployments wrap and what evaluation calls.

TensorFlow is imported here and only here on the serving path, when a model is loaded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from deepxray.models.artifacts import ModelCard, load_artifact

# The scorer's embedding, for similar-case search: the input of its `logits` layer, i.e. the pooled features of
# the crop (the penultimate layer; dropout before it is inactive at inference).
SCORER_EMBEDDING_OF = "logits"


def configure_threads(threads: int) -> None:
    """TensorFlow's thread pools for this process (a replica's CPU share); must run before TF starts."""
    import tensorflow as tf

    threads = max(1, int(threads))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TensorFlow already started in this process: its first setting stays


class LoadedModel:
    """A model artifact with a compiled predict function over batches of square one-channel images.

    Args:
        directory: The artifact directory.
        embedding_of: The name of a layer whose input is the model's embedding (the penultimate features);
            `predict_with_embedding` then gives it beside the output, from the same forward pass. A model
            without that layer gives no embedding (`has_embedding` is False).
    """

    def __init__(self, directory: Path, embedding_of: str | None = None):
        import keras
        import tensorflow as tf

        self.directory = Path(directory)
        self.model, self.card = load_artifact(self.directory)
        size = self.card.input["shape"][0]
        self.input_size = int(size)
        model = self.model
        signature = [tf.TensorSpec([None, size, size, 1], tf.float32)]
        self._predict = tf.function(lambda x: model(x, training=False), input_signature=signature)
        self._predict_with_embedding = None
        layer_names = {layer.name for layer in model.layers}
        if embedding_of is not None and embedding_of in layer_names:
            both = keras.Model(model.inputs, [model.outputs[0], model.get_layer(embedding_of).input])
            self._predict_with_embedding = tf.function(lambda x: both(x, training=False), input_signature=signature)

    @property
    def has_embedding(self) -> bool:
        return self._predict_with_embedding is not None

    @property
    def card_info(self) -> ModelCard:
        return self.card

    @property
    def tag(self) -> str:
        return self.card.tag

    def predict(self, images: np.ndarray) -> np.ndarray:
        """(n, S, S) float images in [0, 1] -> the model's output for each."""
        return self._predict(self._checked(images)[..., None]).numpy()

    def predict_with_embedding(self, images: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """(n, S, S) float images in [0, 1] -> (output, embedding) for each, from one forward pass; the embedding
        is None for a model without one."""
        if self._predict_with_embedding is None:
            return [(output, None) for output in self.predict(images)]
        batch = self._checked(images)
        outputs, embeddings = self._predict_with_embedding(batch[..., None])
        return list(zip(outputs.numpy(), embeddings.numpy(), strict=True))

    def _checked(self, images: np.ndarray) -> np.ndarray:
        batch = np.asarray(images, dtype=np.float32)
        if batch.shape[1:] != (self.input_size, self.input_size):
            raise ValueError(f"{self.tag} takes ({self.input_size}, {self.input_size}) inputs, got {batch.shape[1:]}")
        return batch

    def warm_up(self) -> None:
        """One prediction, so the first request does not pay for tracing the graph (both graphs, where the
        model gives an embedding)."""
        blank = np.zeros((1, self.input_size, self.input_size), np.float32)
        out = self.predict(blank)
        if not np.all(np.isfinite(out)):
            raise RuntimeError(f"{self.tag} gives non-finite output on a blank input: the model is unusable")
        if self.has_embedding:
            self.predict_with_embedding(blank)


class MicroBatcher:
    """Gathers calls made together (e.g. the crops of the two hands of a film) into one batched call.

    The in-process stand-in for Ray Serve's `@serve.batch`: calls made in the same event-loop turn, each with a
    stack of inputs, are run as one batch in a worker thread, and each gets the outputs of its own inputs.
    """

    def __init__(self, run_batch: Callable[[np.ndarray], Sequence], max_batch: int = 64):
        self.run_batch = run_batch
        self.max_batch = max_batch
        self._pending: list[tuple[np.ndarray, asyncio.Future]] = []

    async def __call__(self, items: np.ndarray) -> list:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((items, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        elif sum(len(stack) for stack, _ in self._pending) >= self.max_batch:
            self._flush()
        return await future

    def _flush(self) -> None:
        calls, self._pending = self._pending, []
        if calls:
            asyncio.ensure_future(self._run(calls))

    async def _run(self, calls) -> None:
        try:
            results = await asyncio.to_thread(self.run_batch, np.concatenate([items for items, _ in calls]))
        except Exception as exc:  # every waiting caller learns of the failure
            for _, future in calls:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for items, future in calls:
            if not future.done():
                future.set_result(list(results[start : start + len(items)]))
            start += len(items)


def local_models(models_dir: Path, threads: int | None = None):
    """The three models loaded in this process, as the pipeline's `Models`."""
    import os

    from deepxray.pipeline import Models

    configure_threads(threads or os.cpu_count() or 1)
    models_dir = Path(models_dir)
    body = LoadedModel(models_dir / "body_part")
    detector = LoadedModel(models_dir / "joint_detection")
    scorer = LoadedModel(models_dir / "ratingen_score", embedding_of=SCORER_EMBEDDING_OF)
    for model in (body, detector, scorer):
        model.warm_up()

    async def classify(views: np.ndarray) -> np.ndarray:
        return await asyncio.to_thread(body.predict, views)

    async def detect(view: np.ndarray) -> np.ndarray:
        return (await asyncio.to_thread(detector.predict, view[None]))[0]

    return Models(
        classify=classify,
        detect=detect,
        score=MicroBatcher(scorer.predict_with_embedding),
        versions={"body_part": body.tag, "joint_detection": detector.tag, "ratingen_score": scorer.tag},
    )
