"""Evaluation of a DeepXRay model set on labelled radiographs: the source study's metric table and more.

Research use only; figures measured on synthetic phantoms are not clinical accuracy.

Typical use::

    images = load_labels("labels.csv")
    results = [...]  # one ImageResult per image, from the service or the models
    write_report(summarise(results), "report/", title="My registry, models v1")
"""

from evaluation.bootstrap import ImageResampler, bootstrap_ci, paired_difference_ci
from evaluation.data import LabelledHand, LabelledImage, load_labels
from evaluation.hands import pair_hands
from evaluation.metrics import (
    ClassMetrics,
    body_part_summary,
    cohen_kappa,
    confusion,
    exact_accuracy,
    localisation_rates,
    per_class,
    soft_accuracy,
)
from evaluation.report import write_heatmap, write_report
from evaluation.results import NOTICE, HandResult, ImageResult, compare_results, summarise

__all__ = [
    "NOTICE",
    "ClassMetrics",
    "HandResult",
    "ImageResampler",
    "ImageResult",
    "LabelledHand",
    "LabelledImage",
    "body_part_summary",
    "bootstrap_ci",
    "cohen_kappa",
    "compare_results",
    "confusion",
    "exact_accuracy",
    "load_labels",
    "localisation_rates",
    "pair_hands",
    "paired_difference_ci",
    "per_class",
    "soft_accuracy",
    "summarise",
    "write_heatmap",
    "write_report",
]
