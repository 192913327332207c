"""What a DICOM header says about the study, for the registry's table, without patient data.

Only these tags are read (pydicom's `specific_tags`): Study Date, Modality, Body Part Examined, Image Laterality
(or Laterality), Study and Series Instance UID. Patient's name, id and birth date are never parsed. The UIDs are
written only as pseudonyms: HMAC-SHA256 of the UID with a salt of the research team's (`pseudonym_salt`), so the
same study gets the same id at every run with that salt, and no one without the salt can link it back to the
archive. Without a salt, no study or series id is written.
"""

from __future__ import annotations

import hashlib
import hmac
import io

CONTEXT_COLUMNS = ("study_date", "modality", "body_part_examined", "dicom_laterality", "study_id", "series_id")
_TAGS = ["StudyDate", "Modality", "BodyPartExamined", "ImageLaterality", "Laterality", "StudyInstanceUID",
         "SeriesInstanceUID"]  # fmt: skip
PSEUDONYM_HEX = 24


def pseudonym(uid: str | None, salt: str | None) -> str | None:
    if not uid or not salt:
        return None
    return hmac.new(salt.encode("utf-8"), uid.strip().encode("ascii", "replace"), hashlib.sha256).hexdigest()[
        :PSEUDONYM_HEX
    ]


def study_context(data: bytes, salt: str | None) -> dict[str, str | None]:
    """The context columns of a DICOM file (all None for other formats or a header that cannot be read)."""
    context = dict.fromkeys(CONTEXT_COLUMNS)
    if data[128:132] != b"DICM":
        return context
    try:
        import pydicom

        dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=_TAGS)
    except Exception:  # the scoring row says what is wrong with the file; the context is just absent
        return context

    def text(keyword: str) -> str | None:
        value = dataset.get(keyword)
        return str(value).strip() or None if value is not None else None

    laterality = text("ImageLaterality") or text("Laterality")
    context.update(
        study_date=_iso_date(text("StudyDate")),
        modality=text("Modality"),
        body_part_examined=text("BodyPartExamined"),
        dicom_laterality=laterality,
        study_id=pseudonym(text("StudyInstanceUID"), salt),
        series_id=pseudonym(text("SeriesInstanceUID"), salt),
    )
    return context


def _iso_date(value: str | None) -> str | None:
    """A DICOM DA (YYYYMMDD) as YYYY-MM-DD; anything else as written."""
    if value and len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value
