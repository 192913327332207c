"""What a DICOM header says about a film, held against what the models saw.

The header is evidence, not the truth: archives copy Body Part Examined and laterality from orders, and films
are scanned mirrored. So a disagreement with the models becomes a warning in the answer, and the answer follows
the hand's anatomy. Only a Modality that is certainly no projection radiograph (CT, MR, NM, ...) refuses a film,
before any model runs. Nothing that identifies a person is read (see `deepxray.imaging.dicom`).
"""

from __future__ import annotations

from deepxray.imaging.decoded import DicomFacts, non_radiograph_modality

# Body Part Examined values (DICOM PS3.16 Annex L, and what archives write) under which a hand film is filed.
HAND_BODY_PARTS = frozenset({"HAND", "HANDS", "FINGER", "THUMB", "WRIST", "EXTREMITY", "UPPEREXTREMITY", "ARM"})
_SIDES = {"L": "left", "R": "right"}


def refused_modality(facts: DicomFacts | None) -> str | None:
    """The header's Modality when it is one that is certainly no projection radiograph, else None."""
    return non_radiograph_modality(facts) if facts is not None else None


def header_warnings(facts: DicomFacts | None, lateralities: list[str]) -> list[str]:
    """Sentences for each header fact that disagrees with the hands scored, of `lateralities` ("L", "R")."""
    if facts is None:
        return []
    warnings = []
    seen = " and ".join(f"a {_SIDES[side]} hand" for side in sorted(set(lateralities)))
    if facts.laterality in _SIDES and set(lateralities) != {facts.laterality}:
        warnings.append(
            f"The DICOM header says {_SIDES[facts.laterality].upper()}, the models saw {seen} (from the "
            "anatomy, which the scores follow); the film may be stored mirrored or mislabelled."
        )
    elif facts.laterality == "B" and len(set(lateralities)) < 2:
        warnings.append(f"The DICOM header says BOTH hands, the models scored only {seen} on this film.")
    body_part = (facts.body_part_examined or "").replace(" ", "")
    if body_part and body_part not in HAND_BODY_PARTS:
        warnings.append(f"The DICOM header names the body part {facts.body_part_examined}, the models saw a hand.")
    return warnings
