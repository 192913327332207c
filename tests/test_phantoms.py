"""What a phantom generator can get wrong: labels that don't match the pixels, or images that don't repeat."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pydicom
import pytest
from PIL import Image

from deepxray.cli import main
from deepxray.imaging import DicomFacts, decode_image, non_radiograph_modality
from deepxray.labels import JOINT_NAMES, RATINGEN_BANDS
from deepxray.phantoms.generate import (
    GenerationSettings,
    generate_dataset,
    parse_body_parts,
    plan_body_parts,
    read_manifest,
)
from deepxray.phantoms.hand import render_hand
from deepxray.phantoms.phantom import render_phantom, streams
from deepxray.phantoms.scores import draw_scores
from deepxray.phantoms.writers import TIFF_PREAMBLE, write_dicom

NON_HANDS = ("chest", "foot", "other_radiograph", "not_radiograph")


def hand(seed: int, scores: dict[str, int], laterality: str = "L"):
    rng = streams(seed, 0)
    return render_hand(rng["geometry"], rng["texture"], rng["erosion"], scores, laterality=laterality)


def test_same_seed_gives_the_same_images_and_labels_bit_for_bit():
    for body_part in ("left_hand", "right_hand", "chest", "not_radiograph"):
        a = render_phantom(5, 3, body_part)
        b = render_phantom(5, 3, body_part)
        assert np.array_equal(a.image, b.image)
        assert (a.scores, a.centers, a.kind) == (b.scores, b.centers, b.kind)
    assert not np.array_equal(render_phantom(5, 3, "left_hand").image, render_phantom(6, 3, "left_hand").image)


def test_generated_files_do_not_depend_on_the_number_of_workers(tmp_path):
    settings = GenerationSettings(seed=11)
    one = generate_dataset(tmp_path / "one", 3, "left_hand,chest", settings, workers=1, progress=False)
    two = generate_dataset(tmp_path / "two", 3, "left_hand,chest", settings, workers=2, progress=False)
    assert one.read_text() == two.read_text()
    for record in read_manifest(one):
        assert (one.parent / record["file"]).read_bytes() == (two.parent / record["file"]).read_bytes()


@pytest.mark.parametrize("laterality", ["L", "R"])
def test_every_joint_centre_lies_between_its_bone_ends_inside_the_image(laterality):
    for seed in range(6):
        h = hand(seed, dict.fromkeys(JOINT_NAMES, 0), laterality)
        rows, cols = h.image.shape
        for name in JOINT_NAMES:
            x, y = h.centers[name]
            assert 0 <= x < cols and 0 <= y < rows, (seed, name)
            proximal, distal = h.joint_bones[name]
            axis = np.array(h.joint_axes[name])
            # Half a joint space plus 0.6 mm from the centre, each way, we must be inside bone.
            reach = h.gaps_px[name] / 2 + 0.6 * h.px_per_mm
            inside_proximal = np.array([x, y]) - reach * axis
            inside_distal = np.array([x, y]) + reach * axis
            contour_p = h.bones_px[proximal].astype(np.float32)
            contour_d = h.bones_px[distal].astype(np.float32)
            assert cv2.pointPolygonTest(contour_p, tuple(map(float, inside_proximal)), False) > 0, (
                seed,
                name,
            )
            assert cv2.pointPolygonTest(contour_d, tuple(map(float, inside_distal)), False) > 0, (seed, name)
            # The centre itself is in the joint space: in neither bone.
            assert cv2.pointPolygonTest(contour_p, (x, y), False) < 0, (seed, name)
            assert cv2.pointPolygonTest(contour_d, (x, y), False) < 0, (seed, name)


@pytest.mark.parametrize("laterality", ["L", "R"])
def test_thumb_is_on_the_right_of_a_left_hand_and_on_the_left_of_a_right_hand(laterality):
    for seed in range(5):
        h = hand(seed, dict.fromkeys(JOINT_NAMES, 0), laterality)
        thumb_right = h.centers["mcp1"][0] > h.centers["mcp5"][0]
        assert thumb_right == (laterality == "L")


def test_bone_visibly_lost_grows_with_the_score_for_every_joint():
    seed = 3
    intact = hand(seed, dict.fromkeys(JOINT_NAMES, 0)).image.astype(np.int32)
    for name in JOINT_NAMES:
        lost_pixels = []
        for score in range(1, 6):
            scores = dict.fromkeys(JOINT_NAMES, 0) | {name: score}
            eroded = hand(seed, scores)
            drop = intact - eroded.image.astype(np.int32)
            # Everything outside the eroded joint is identical: the scores have their own random stream.
            ys, xs = np.nonzero(drop)
            assert np.hypot(xs - eroded.centers[name][0], ys - eroded.centers[name][1]).max() < 12 * eroded.px_per_mm
            lost_pixels.append(int((drop > 60).sum()))
            low, high = RATINGEN_BANDS[score]
            assert low <= eroded.destroyed_share[name] <= high
        assert lost_pixels[0] > 0, name
        assert all(b > a for a, b in zip(lost_pixels, lost_pixels[1:], strict=False)), (name, lost_pixels)


@pytest.mark.parametrize("body_part", NON_HANDS)
def test_other_classes_carry_no_hand_labels(body_part, tmp_path):
    for index in range(3):
        phantom = render_phantom(2, index, body_part)
        assert phantom.scores is None and phantom.centers is None
    manifest = generate_dataset(tmp_path, 2, body_part, GenerationSettings(seed=2), workers=1, progress=False)
    for record in read_manifest(manifest):
        assert record["body_part"] == body_part
        assert record["joints"] is None


def test_not_radiographs_and_radiographs_differ_in_kind():
    kinds = {render_phantom(1, i, "not_radiograph").kind for i in range(24)}
    assert kinds == {"photo", "document", "noise", "blank"}
    assert {render_phantom(1, i, "other_radiograph").kind for i in range(12)} == {"knee", "skull"}


@pytest.mark.parametrize(
    ("photometric", "compression"),
    [("MONOCHROME2", "none"), ("MONOCHROME1", "none"), ("MONOCHROME2", "rle"), ("MONOCHROME1", "jpeg2000")],
)
def test_dicom_reads_back_to_the_same_pixels(tmp_path, photometric, compression):
    phantom = render_phantom(4, 0, "left_hand")
    path = tmp_path / "hand.dcm"
    write_dicom(path, phantom, "4-0", photometric, compression)
    ds = pydicom.dcmread(path)
    stored = ds.pixel_array
    expected = phantom.image if photometric == "MONOCHROME2" else 4095 - phantom.image
    assert ds.PhotometricInterpretation == photometric
    assert np.array_equal(stored, expected)
    assert ds.file_meta.TransferSyntaxUID.is_compressed == (compression != "none")
    assert ds.Modality == "DX" and ds.ImageLaterality == "L"
    assert float(ds.PixelSpacing[0]) == pytest.approx(phantom.pixel_spacing_mm, abs=1e-5)
    # No real person in any tag.
    assert str(ds.PatientName) == "PHANTOM^SYNTHETIC"
    assert ds.PatientBirthDate == "" and ds.PatientSex == ""


SMALL = (320, 256)


def test_dicom_header_options_are_written_for_the_reader_to_check(tmp_path):
    phantom = render_phantom(4, 0, "left_hand", shape=SMALL)
    path = tmp_path / "hand.dcm"
    write_dicom(path, phantom, "4-0")
    assert decode_image(path.read_bytes()).dicom == DicomFacts(modality="DX", body_part_examined="HAND", laterality="L")
    # A hand written as a CT of the right foot: what a reader must catch before any model runs.
    write_dicom(path, phantom, "4-0", modality="CT", body_part_examined="FOOT", image_laterality="R")
    facts = decode_image(path.read_bytes()).dicom
    assert facts == DicomFacts(modality="CT", body_part_examined="FOOT", laterality="R")
    assert non_radiograph_modality(facts) == "CT"
    # "" leaves a tag out, as old files and secondary captures do.
    write_dicom(path, phantom, "4-0", modality="", body_part_examined="", image_laterality="")
    ds = pydicom.dcmread(path)
    assert "Modality" not in ds and "BodyPartExamined" not in ds and "ImageLaterality" not in ds
    assert decode_image(path.read_bytes()).dicom == DicomFacts()
    picture = render_phantom(4, 0, "not_radiograph", shape=SMALL)
    write_dicom(path, picture, "4-0")
    assert decode_image(path.read_bytes()).dicom == DicomFacts(modality="OT")


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("shape", [None, "IDENTITY", "INVERSE"])
def test_every_presentation_lut_shape_decodes_bone_bright(tmp_path, photometric, shape):
    phantom = render_phantom(4, 1, "right_hand", shape=SMALL)
    path = tmp_path / "hand.dcm"
    write_dicom(path, phantom, "4-1", photometric, presentation_lut_shape=shape)
    ds = pydicom.dcmread(path)
    assert ds.get("PresentationLUTShape") == shape and ds.PhotometricInterpretation == photometric
    # Stored inverted (bone low) exactly when the header says the lowest value is displayed white.
    minimum_white = shape == "INVERSE" or (shape is None and photometric == "MONOCHROME1")
    assert np.array_equal(ds.pixel_array, 4095 - phantom.image if minimum_white else phantom.image)
    assert np.array_equal(decode_image(path.read_bytes()).pixels, phantom.image)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("body_part", ["left_hand", "not_radiograph"])
def test_tiff_preamble_makes_a_file_both_dicom_and_tiff(tmp_path, photometric, body_part):
    phantom = render_phantom(6, 0, body_part, shape=SMALL)
    plain, dual = tmp_path / "plain.dcm", tmp_path / "dual.dcm"
    write_dicom(plain, phantom, "6-0", photometric)
    write_dicom(dual, phantom, "6-0", photometric, preamble=TIFF_PREAMBLE)
    assert dual.read_bytes()[:4] == b"II*\0" and dual.read_bytes()[128:] == plain.read_bytes()[128:]
    # A TIFF reader sees the stored image...
    with Image.open(dual) as tiff:
        assert tiff.format == "TIFF"
        assert np.array_equal(np.asarray(tiff), pydicom.dcmread(dual).pixel_array)
    # ... and our reader the DICOM one: same pixels, spacing and header as with a zero preamble.
    from_dual, from_plain = decode_image(dual.read_bytes()), decode_image(plain.read_bytes())
    assert from_dual.format == "dicom"
    assert np.array_equal(from_dual.pixels, from_plain.pixels)
    assert from_dual.pixel_spacing_mm == from_plain.pixel_spacing_mm
    assert from_dual.dicom == from_plain.dicom
    if body_part == "left_hand":
        assert np.array_equal(from_dual.pixels, phantom.image)
        assert from_dual.pixel_spacing_mm == pytest.approx((phantom.pixel_spacing_mm,) * 2, abs=1e-5)


def test_preamble_bytes_are_written_as_given_and_checked(tmp_path):
    phantom = render_phantom(6, 0, "left_hand", shape=SMALL)
    path = tmp_path / "hand.dcm"
    write_dicom(path, phantom, "6-0", preamble=b"MM\0*anything")
    assert path.read_bytes()[:132] == b"MM\0*anything".ljust(128, b"\0") + b"DICM"
    assert np.array_equal(decode_image(path.read_bytes()).pixels, phantom.image)
    with pytest.raises(ValueError, match="uncompressed"):
        write_dicom(path, phantom, "6-0", compression="rle", preamble=TIFF_PREAMBLE)
    with pytest.raises(ValueError, match="128"):
        write_dicom(path, phantom, "6-0", preamble=bytes(129))
    with pytest.raises(ValueError, match="presentation_lut_shape"):
        write_dicom(path, phantom, "6-0", presentation_lut_shape="LIN OD")
    with pytest.raises(ValueError, match="uncompressed"):
        GenerationSettings(file_format="dicom", dicom_compression="rle", dicom_preamble="tiff")


def test_compressed_dicom_phantoms_are_reproducible(tmp_path):
    phantom = render_phantom(6, 0, "left_hand", shape=SMALL)
    write_dicom(tmp_path / "a.dcm", phantom, "6-0", compression="rle")
    write_dicom(tmp_path / "b.dcm", phantom, "6-0", compression="rle")
    assert (tmp_path / "a.dcm").read_bytes() == (tmp_path / "b.dcm").read_bytes()


def test_manifest_matches_the_files(tmp_path):
    manifest = generate_dataset(tmp_path, 6, "all", GenerationSettings(seed=9), workers=2, progress=False)
    records = read_manifest(manifest)
    assert [r["index"] for r in records] == list(range(6))
    for record in records:
        image = cv2.imread(str(tmp_path / record["file"]), cv2.IMREAD_UNCHANGED)
        assert image.shape[:2] == (record["height"], record["width"])
        if record["body_part"] == "not_radiograph":
            assert image.dtype == np.uint8
        else:
            assert image.dtype == np.uint16 and image.max() <= 4095
        if record["joints"]:
            assert set(record["joints"]) == set(JOINT_NAMES)
            assert all(0 <= j["score"] <= 5 for j in record["joints"].values())
    assert json.loads((tmp_path / "generation.json").read_text())["seed"] == 9


def test_body_part_plan_is_exactly_proportional():
    plan = plan_body_parts(100, parse_body_parts("left_hand:3,chest:1"), seed=0)
    assert plan.count("left_hand") == 75 and plan.count("chest") == 25
    with pytest.raises(ValueError, match="unknown body part"):
        parse_body_parts("elbow")


def test_score_distributions():
    rng = np.random.default_rng(0)
    clinical = np.array([list(draw_scores(rng, "clinical").values()) for _ in range(3000)])
    share = np.bincount(clinical.ravel(), minlength=6) / clinical.size
    assert 0.6 < share[0] < 0.72 and 0.22 < share[1] < 0.32 and share[2:].sum() < 0.1
    # Damage clusters within a hand: a hand with one high score has more of them than chance.
    high = clinical >= 2
    assert high[high.any(axis=1)].sum(axis=1).mean() > 1.5
    balanced = np.array([list(draw_scores(rng, "balanced").values()) for _ in range(1200)])
    counts = np.bincount(balanced.ravel(), minlength=6)
    assert counts.min() > 0.85 * counts.mean()


def test_cli_writes_images_and_manifest(tmp_path, capsys):
    code = main(["phantoms", "generate", "--n", "2", "--out", str(tmp_path), "--seed", "1", "--format", "jpeg",
                 "--workers", "1"])  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in tmp_path.glob("*.jpg")) == ["00000.jpg", "00001.jpg"]
    assert len(read_manifest(tmp_path)) == 2
    assert main(["phantoms", "generate", "--n", "1", "--out", str(tmp_path), "--body-parts", "elbow"]) == 2
    assert "unknown body part" in capsys.readouterr().err


def test_cli_writes_dual_personality_dicom_with_presentation_lut_and_records_it(tmp_path, capsys):
    code = main(["phantoms", "generate", "--n", "2", "--out", str(tmp_path), "--seed", "1", "--format", "dicom",
                 "--body-parts", "left_hand,not_radiograph", "--height", "320", "--width", "256",
                 "--photometric", "MONOCHROME1", "--presentation-lut", "inverse", "--dicom-preamble", "tiff",
                 "--workers", "1"])  # fmt: skip
    assert code == 0
    records = {record["body_part"]: record for record in read_manifest(tmp_path)}
    hand_record, picture_record = records["left_hand"], records["not_radiograph"]
    assert hand_record["modality"] == "DX" and picture_record["modality"] == "OT"
    assert hand_record["presentation_lut_shape"] == "INVERSE"
    # The shape describes grayscale polarity: colour pictures carry none.
    colour = picture_record["photometric"] == "RGB"
    assert picture_record["presentation_lut_shape"] == (None if colour else "INVERSE")
    assert hand_record["dicom_preamble"] == picture_record["dicom_preamble"] == "tiff"
    for record in records.values():
        data = (tmp_path / record["file"]).read_bytes()
        assert data[:4] == b"II*\0" and data[128:132] == b"DICM"
        phantom = render_phantom(1, record["index"], record["body_part"], shape=(320, 256))
        decoded = decode_image(data)
        assert decoded.format == "dicom"
        if phantom.image.ndim == 2:  # bone (or ink) bright as rendered, whatever the stored polarity
            assert np.array_equal(decoded.pixels, phantom.image)
    assert main(["phantoms", "generate", "--n", "1", "--out", str(tmp_path / "x"), "--format", "dicom",
                 "--dicom-compression", "rle", "--dicom-preamble", "tiff"]) == 2  # fmt: skip
    assert "uncompressed" in capsys.readouterr().err


@pytest.mark.slow
def test_a_film_of_both_hands_labels_each_hand_in_its_own_half(tmp_path):
    generate_dataset(tmp_path, 2, "both_hands", GenerationSettings(seed=4, file_format="dicom"), workers=1,
                     progress=False)  # fmt: skip
    for record in read_manifest(tmp_path):
        assert record["body_part"] == "both_hands" and record["joints"] is None
        assert [hand["laterality"] for hand in record["hands"]] == ["L", "R"]
        for hand in record["hands"]:
            x0, y0, x1, y1 = hand["box"]
            assert x1 - x0 == record["width"] // 2 and (y0, y1) == (0, record["height"])
            assert all(x0 <= j["center"][0] < x1 and y0 <= j["center"][1] < y1 for j in hand["joints"].values())
        assert pydicom.dcmread(tmp_path / record["file"]).ImageLaterality == "B"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["turned90", "turned180", "turned270", "mirrored"])
def test_a_film_stored_turned_or_mirrored_keeps_its_labels_on_the_joints(how):
    from deepxray.phantoms.stored import store

    upright = render_phantom(5, 0, "both_hands")
    stored = store(upright, how)
    assert stored.extra["stored"] == how
    flipped = {"L": "R", "R": "L"} if how == "mirrored" else {"L": "L", "R": "R"}
    for hand in upright.hands:  # each joint's pixel is the same pixel of the film, wherever the film put it
        moved = next(h for h in stored.hands if h.laterality == flipped[hand.laterality])
        for name in JOINT_NAMES:
            (x, y), (sx, sy) = hand.centers[name], moved.centers[name]
            assert stored.image[round(sy), round(sx)] == upright.image[round(y), round(x)], name
            x0, y0, x1, y1 = moved.box
            assert x0 <= sx < x1 and y0 <= sy < y1
    single = store(render_phantom(5, 1, "left_hand"), how)
    assert single.laterality == single.hands[0].laterality == ("R" if how == "mirrored" else "L")
    assert single.body_part == ("right_hand" if how == "mirrored" else "left_hand")
