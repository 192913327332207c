"""Where the time of one film goes: bare decoding against each step of the in-process scoring pipeline.

For the full-size (2560 x 2048) 16-bit PNG phantom of a left hand and its JPEG, the films of
`benchmarks.serve_latency` (made by its `phantom_files`), in one process, after warm-up:

- bare decode with each decoder installed here: OpenCV (`cv2.imdecode`, IMREAD_UNCHANGED), Pillow, imagecodecs;
- the pipeline's own decoder (`deepxray.imaging.decode_image`) and each step of `deepxray.pipeline` on the film,
  each on its own: decode and checks (`_prepare`), `find_hands`, normalisation (`NormalisedImage.from_pixels`),
  the body-part view and its four turns (on an image that made no view before), both as `_normalised` makes
  them, the detector view (after the body-part view, as the pipeline asks for it), the ten joint crops (at the
  joints the pipeline found);
- the whole in-process `deepxray.pipeline.score_radiograph` on the file's bytes, as `benchmarks.serve_latency`
  times it in-process (`local_models`, TensorFlow's threads set to all cores), and once more with each model's
  calls timed: the models' forward passes as the pipeline makes them (for each model, the span its calls of one
  film cover).

The steps are timed round-robin (each run times every step once, in turn), so load from elsewhere on the machine
spreads over all of them alike. Prints the p50 and p95 of each step, and the ratio of the pipeline's p50 to the
bare decode's p50: against OpenCV, and against the fastest decoder here (the floor no pipeline goes below). The
timings are from this machine's CPU, whatever else runs on it counts too; compare figures of one run only.

    python -m benchmarks.pipeline_steps --runs 30
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.serve_latency import phantom_files
from loadtests.harness import percentile, profile

FILES = ("png16", "jpeg")


def bare_decoders() -> dict[str, Callable[[bytes], np.ndarray]]:
    """A function bytes -> pixels for each decoder installed here, without any of the pipeline's checks."""
    import cv2
    from PIL import Image

    def opencv(data: bytes) -> np.ndarray:
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)

    def pillow(data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image)

    decoders = {"OpenCV": opencv, "Pillow": pillow}
    try:
        import imagecodecs
    except ImportError:
        return decoders

    def codecs(data: bytes) -> np.ndarray:
        return imagecodecs.png_decode(data) if data.startswith(b"\x89PNG") else imagecodecs.jpeg8_decode(data)

    decoders["imagecodecs"] = codecs
    return decoders


class ModelClock:
    """The pipeline's models, each call timed: how long each model kept one film waiting, as the pipeline calls
    it (concurrent calls of one model, such as the scorer's crops, count once: the span they cover together)."""

    def __init__(self, models):
        self.spans: dict[str, list[tuple[float, float]]] = {}
        self.models = dataclasses.replace(
            models,
            classify=self._timed("body part", models.classify),
            detect=self._timed("detector", models.detect),
            score=self._timed("scorer", models.score),
        )

    def _timed(self, name: str, call):
        async def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return await call(*args, **kwargs)
            finally:
                self.spans.setdefault(name, []).append((start, time.perf_counter()))

        return timed

    def seconds(self) -> dict[str, float]:
        """Seconds each model was busy since the last call (the union of its calls' spans); starts anew."""
        busy = {}
        for name, spans in self.spans.items():
            total, reached = 0.0, float("-inf")
            for start, end in sorted(spans):
                total += max(0.0, end - max(start, reached))
                reached = max(reached, end)
            busy[name] = total
        self.spans = {}
        return busy


def pipeline_steps(data: bytes, models, settings, loop, model_times: dict[str, list[float]]) -> dict[str, Step]:
    """Each step of the in-process pipeline on `data` as a call of its own, with inputs made beforehand (untimed)
    by the steps before it; the whole pipeline; and the pipeline again with its models' calls timed (into
    `model_times`, by model)."""
    from deepxray.hand_finder import find_hands
    from deepxray.imaging import decode_image
    from deepxray.imaging.model_inputs import NormalisedImage, body_part_view, detector_view, joint_crops, turn_view
    from deepxray.labels import JOINT_NAMES
    from deepxray.pipeline import _normalised, _prepare, score_radiograph

    answer = loop.run_until_complete(score_radiograph(data, models, settings))
    centers = {name: tuple(joint["center"]) for name, joint in answer["joints"].items()}
    mirrored = answer["laterality"] == "R"
    turns = answer["orientation"]["rotated_deg"] // 90
    pixels, _ = _prepare(data, settings)
    image = NormalisedImage.from_pixels(pixels)
    clock = ModelClock(models)

    def fresh() -> NormalisedImage:
        """The same normalised image anew, without what an image may keep of views made from it before."""
        return dataclasses.replace(image)

    def after_body_part_view() -> NormalisedImage:
        """A fresh image whose body-part view was made, as the pipeline's is when it asks for the detector's."""
        again = fresh()
        body_part_view(again)
        return again

    def timed_models() -> None:
        loop.run_until_complete(score_radiograph(data, clock.models, settings))
        for name, seconds in clock.seconds().items():
            model_times.setdefault(name, []).append(seconds)

    return {
        "decode_image (pipeline's decoder)": Step(lambda _: decode_image(data)),
        "decode + checks (_prepare)": Step(lambda _: _prepare(data, settings)),
        "find_hands": Step(lambda _: find_hands(pixels)),
        "normalisation (from_pixels)": Step(lambda _: NormalisedImage.from_pixels(pixels)),
        "body-part view + 4 turns": Step(
            lambda fresh_image: [turn_view(body_part_view(fresh_image), quarter) for quarter in range(4)], fresh
        ),
        "  _normalised (the two above)": Step(lambda _: _normalised(pixels, None)),
        "detector view": Step(lambda viewed: detector_view(viewed, mirrored, turns), after_body_part_view),
        "10 joint crops": Step(lambda _: joint_crops(image, centers, JOINT_NAMES, mirrored)),
        "score_radiograph (whole)": Step(lambda _: loop.run_until_complete(score_radiograph(data, models, settings))),
        "(score_radiograph, models timed)": Step(lambda _: timed_models()),
    }


@dataclasses.dataclass(frozen=True)
class Step:
    """A call to time, `run(setup())`, of which `setup` (untimed) makes the input."""

    run: Callable[[object], object]
    setup: Callable[[], object] = lambda: None


def time_round_robin(steps: dict[str, Step], runs: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of each step, `runs` times after `warmup`; each run times every one once, in turn."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + runs):
        for name, step in steps.items():
            given = step.setup()
            start = time.perf_counter()
            step.run(given)
            elapsed = time.perf_counter() - start
            if i >= warmup:
                times[name].append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        type=Path,
        default=None,
        help="model artifacts (default: DEEPXRAY_MODELS_DIR, else the shipped ones)",
    )
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=11, help="the phantom's seed (serve_latency's default)")
    args = parser.parse_args()
    settings, _ = profile(overrides={"models_dir": str(args.models.resolve())} if args.models else {})

    from deepxray.models.runtime import local_models

    models = local_models(settings.models_folder())
    films = {name: data for name, data in phantom_files(args.seed).items() if name in FILES}
    decoders = bare_decoders()
    loop = asyncio.new_event_loop()
    model_times: dict[str, dict[str, list[float]]] = {name: {} for name in films}
    try:
        calls = {}
        for name, data in films.items():
            calls.update({f"{name}|bare decode: {decoder}": Step(lambda _, d=data, f=decode: f(d))
                          for decoder, decode in decoders.items()})  # fmt: skip
            steps = pipeline_steps(data, models, settings, loop, model_times[name])
            calls.update({f"{name}|{step}": call for step, call in steps.items()})
        times = time_round_robin(calls, args.runs, args.warmup)
    finally:
        loop.close()

    print(
        f"{os.cpu_count()} cores; models {settings.models_folder()}; {args.runs} runs after {args.warmup} warm-up; ms"
    )
    for name, data in films.items():
        print(f"\n{name} ({len(data) / 2**20:.1f} MiB)")
        print(f"  {'step':36s} {'p50':>8s} {'p95':>8s}")
        steps = {key.split("|", 1)[1]: values for key, values in times.items() if key.startswith(f"{name}|")}
        for model, values in model_times[name].items():  # the warm-up's calls left out
            steps[f"model: {model} (in the pipeline)"] = values[-args.runs :]
        for step, values in steps.items():
            print(f"  {step:36s} {1000 * percentile(values, 50):8.1f} {1000 * percentile(values, 95):8.1f}")
        whole = percentile(steps["score_radiograph (whole)"], 50)
        bare = {decoder: percentile(steps[f"bare decode: {decoder}"], 50) for decoder in decoders}
        fastest = min(bare, key=bare.get)
        print(
            f"  pipeline p50 / bare decode p50: {whole / bare['OpenCV']:.2f} against OpenCV, "
            f"{whole / bare[fastest]:.2f} against the fastest ({fastest}); "
            f"{1000 * (whole - bare[fastest]):.1f} ms more than that decode"
        )


if __name__ == "__main__":
    main()
