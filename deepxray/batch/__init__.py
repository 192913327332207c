"""Scoring a whole registry (`deepxray score`): many files in, one row per hand out, resumable.

- `inputs`: which files (files, folders, lists of paths), and each film's stable id (a content hash);
- `context`: what a DICOM header says about the study, without patient data (pseudonymous ids);
- `rows`: the output's columns, and the rows of one film's answer or refusal;
- `output`: CSV, JSON lines or Parquet, appended film by film, resumed by image id;
- `local`: the default engine, Ray Data actors each running `deepxray.pipeline` with the three models;
- `remote`: the `--url` engine, a running service over HTTP;
- `run`: the command itself: skip what is done, score the rest, progress and summary.
"""
