"""A small fixed set of phantoms and what the shipped models answer for them: a regression check.

`python -m deepxray.training.golden --models models --out tests/golden/expected.json` records the answers after
the models are retrained; `tests/test_models.py` checks the models still give them, within `PROBABILITY_ATOL`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import cv2

GOLDEN_SEED = 4242
# (index, body part, score distribution): hands with every grade, a right hand, a film of both hands, and two
# images to refuse.
GOLDEN_IMAGES = (
    (0, "left_hand", "balanced"),
    (1, "left_hand", "balanced"),
    (2, "left_hand", "clinical"),
    (3, "right_hand", "balanced"),
    (4, "chest", "clinical"),
    (5, "not_radiograph", "clinical"),
    (6, "both_hands", "balanced"),
)
PROBABILITY_ATOL = 0.02


def golden_png(index: int, body_part: str, distribution: str) -> tuple[bytes, list[dict] | None]:
    """The image as 16-bit PNG bytes (8-bit for pictures), and the true scores of each hand on it."""
    from deepxray.phantoms.phantom import render_phantom

    phantom = render_phantom(GOLDEN_SEED, index, body_part, distribution)
    image = cv2.cvtColor(phantom.image, cv2.COLOR_RGB2BGR) if phantom.image.ndim == 3 else phantom.image
    truth = [hand.scores for hand in phantom.hands] if phantom.hands else None
    return cv2.imencode(".png", image)[1].tobytes(), truth


async def golden_answers(models) -> list[dict]:
    """What `models` answer for each golden image: the scores and probabilities, or the refusal."""
    from deepxray.pipeline import ScoringError, score_radiograph

    answers = []
    for index, body_part, distribution in GOLDEN_IMAGES:
        data, truth = golden_png(index, body_part, distribution)
        entry = {"index": index, "body_part": body_part, "distribution": distribution, "true_scores": truth}
        try:
            answer = await score_radiograph(data, models)
            entry |= {
                "status": 200,
                "body_part_probability": answer["body_part"]["probability"],
                "hands": [
                    {
                        "laterality": hand["laterality"],
                        "scores": hand["scores"],
                        "probabilities": {name: joint["probabilities"] for name, joint in hand["joints"].items()},
                    }
                    for hand in answer["hands"]
                ],
            }
        except ScoringError as error:
            entry |= {"status": error.status, "error": error.code}
        answers.append(entry)
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description="record the golden answers of a model set")
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--out", type=Path, default=Path("tests/golden/expected.json"))
    args = parser.parse_args()
    from deepxray.models.runtime import local_models

    models = local_models(args.models)
    answers = asyncio.run(golden_answers(models))
    document = {"seed": GOLDEN_SEED, "models": models.versions, "probability_atol": PROBABILITY_ATOL, "images": answers}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
