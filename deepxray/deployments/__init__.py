"""The Ray Serve deployments, one per file; `deepxray.app` composes them.

- `ingress.Ingress`: HTTP (FastAPI): decodes the upload once, runs `deepxray.pipeline.score_radiograph` with
  the three models below as deployment handles, and answers the `/score` contract and its errors.
- `body_part.BodyPart`: `classify(view)` -> probabilities over `deepxray.labels.BODY_PARTS`.
- `joint_detection.JointDetection`: `detect(view)` -> (10, 3) joint x, y (view pixels) and confidence.
- `ratingen_score.RatingenScore`: `score(crop)` -> 6 Ratingen class probabilities, batched with `@serve.batch`.

The decorators' options are the one-machine profile (2 CPUs); `serve_config.yaml` writes the same values out
so an operator changes them in one file.
"""
