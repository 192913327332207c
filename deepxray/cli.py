"""The `deepxray` command: phantoms, training, evaluation, registry scoring, API keys, the case store and model
export."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _phantoms_generate(args: argparse.Namespace) -> int:
    from deepxray.phantoms.generate import GenerationSettings, generate_dataset

    settings = GenerationSettings(
        seed=args.seed,
        distribution=args.distribution,
        file_format=args.format,
        shape=(args.height, args.width),
        photometric=args.photometric,
        dicom_compression=args.dicom_compression,
        presentation_lut=args.presentation_lut.upper() if args.presentation_lut else None,
        dicom_preamble=args.dicom_preamble if args.dicom_preamble != "none" else None,
        stored=args.stored,
        chest_findings=args.chest_findings,
    )
    manifest = generate_dataset(args.out, args.n, args.body_parts, settings, workers=args.workers)
    print(f"wrote {args.n} images and {manifest}")
    return 0


def _phantoms_sheet(args: argparse.Namespace) -> int:
    from deepxray.phantoms.contact_sheet import make_contact_sheet

    make_contact_sheet(args.out, seed=args.seed)
    print(f"wrote {args.out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from deepxray.models.registry import MODEL_NAMES
    from deepxray.training.chest_data import ChestSource
    from deepxray.training.data import ManifestSource, SyntheticSource
    from deepxray.training.run import TrainingPlan, train

    targets = MODEL_NAMES if args.target == "all" else (args.target,)
    if (args.data is None) == (args.synthetic is None):
        raise ValueError("give exactly one of --data DIR (a manifest of labelled files) or --synthetic N")
    if args.target == "chest_findings":  # chest films with findings, rendered in memory
        if args.synthetic is None:
            raise ValueError("chest_findings trains on chest phantoms rendered in memory: give --synthetic N")
        source = ChestSource(seed=args.seed, n=args.synthetic)
    elif args.data is not None:
        source = ManifestSource.open(args.data)
    else:
        source = SyntheticSource(seed=args.seed, n=args.synthetic)
    epochs = {target: args.epochs for target in targets} if args.epochs else None
    plan = TrainingPlan(targets=targets, out_dir=args.out, seed=args.seed, epochs=epochs)
    train(plan, source, cache=args.cache)
    print(f"wrote {', '.join(targets)} to {args.out}")
    return 0


def _checkpoint(args: argparse.Namespace) -> int:
    from deepxray.training.checkpoints import export_checkpoint

    print(f"wrote {export_checkpoint(args.models, args.epoch, args.out)}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from evaluation.run import run_evaluation

    if args.models and args.url:
        raise ValueError("give --models or --url, not both")
    if args.token is not None and not args.url:
        raise ValueError("--token is for a running service: give it with --url")
    # The credential is sent to the service only: never printed, never in the report.
    token = (args.token if args.token is not None else os.environ.get("DEEPXRAY_TOKEN", "")).strip() or None
    files = run_evaluation(
        args.data, args.out, models=args.models, url=args.url, compare=args.compare, resamples=args.resamples,
        seed=args.seed, limit=args.limit, token=token if args.url else None,
    )  # fmt: skip
    print(f"wrote {files['markdown']} (research use only; figures on phantoms are not clinical accuracy)")
    return 0


def _score(args: argparse.Namespace) -> int:
    from deepxray.batch.run import ScoreRun, score_registry

    if args.url and (args.address or args.workers or args.batch_size):
        raise ValueError("--address, --workers and --batch-size are for Ray Data; --url scores with a service")
    if args.token is not None and not args.url:
        raise ValueError("--token is for a running service: give it with --url")
    token = (args.token if args.token is not None else os.environ.get("DEEPXRAY_TOKEN", "")).strip() or None
    run = ScoreRun(
        inputs=args.inputs, out=args.out, url=args.url, token=token, address=args.address, models_dir=args.models,
        workers=args.workers, batch_size=args.batch_size, concurrency=args.concurrency, overwrite=args.overwrite,
        patient_key=args.patient_key, progress=not args.quiet,
    )  # fmt: skip
    summary = score_registry(run)
    print(summary.text(args.out))
    return 130 if summary.interrupted else 0


def _keys_new(args: argparse.Namespace) -> int:
    from deepxray.api.keys import add_key, check_key_id, key_line, new_key, parse_scopes

    scopes = parse_scopes(args.scopes)
    if not scopes:
        raise ValueError("give at least one scope, e.g. --scopes score,read")
    key = add_key(args.keys_file, check_key_id(args.id), scopes) if args.keys_file else new_key()
    print(key_line(args.id, key, scopes))  # the line for the keys file: the key's digest, never the key
    if args.key_out:
        descriptor = os.open(args.key_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as key_file:
            key_file.write(key + "\n")
        where = f"written to {args.key_out} (readable by you only)"
    else:
        where = f"{key}\n(shown once: give it to the client; neither the service nor the keys file keeps it)"
    added = f"added to {args.keys_file}; " if args.keys_file else "add the line above to the keys file; "
    print(f"key {args.id} with scopes {','.join(sorted(scopes))}: {added}the key is {where}", file=sys.stderr)
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    from deepxray.api.keys import revoke_key

    revoke_key(args.keys_file, args.id)
    print(f"revoked {args.id}: removed from {args.keys_file} (a running service re-reads the file at its next request)")
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    from deepxray.api.keys import read_keys

    for key in read_keys(args.keys_file):
        print(f"{key.key_id}\t{','.join(sorted(key.scopes))}")
    return 0


def _open_case_store(url: str | None):
    """The case store at `url` (default: the settings' `case_store_url()`), migrated; a store that cannot be
    opened is the user's error (a wrong URL, a database that does not answer)."""
    import sqlalchemy
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from deepxray.cases.store import CaseStore
    from deepxray.settings import Settings

    url = url or Settings().case_store_url()
    try:
        return CaseStore.open(url)
    except (SQLAlchemyError, CommandError) as exc:  # CommandError: a store migrated by a newer deepxray
        shown = sqlalchemy.make_url(url).render_as_string(hide_password=True) if "://" in url else url
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise ValueError(f"cannot open the case store {shown}: {reason}") from None


def _cases_export(args: argparse.Namespace) -> int:
    from deepxray.cases.export import export_cases

    with _open_case_store(args.database_url) as store:
        summary = export_cases(store, args.out, reviewed_only=args.reviewed_only)
    print(summary.text())
    return 0


def _cases_delete(args: argparse.Namespace) -> int:
    if args.all == bool(args.case_ids):
        raise ValueError("give the case ids to delete, or --all (with --yes) for every case")
    if args.all and not args.yes:
        raise ValueError("--all deletes every case of the store: add --yes to confirm")
    with _open_case_store(args.database_url) as store:
        if args.all:
            print(f"deleted {store.delete_all()} cases (every case of the store)")
            return 0
        missing = [case_id for case_id in args.case_ids if not store.exists(case_id)]
        if missing:  # nothing deleted: a typo in one id should not leave the rest half done
            raise ValueError(f"no case {', '.join(missing)} in the store; nothing deleted")
        for case_id in dict.fromkeys(args.case_ids):
            store.delete(case_id)
    print(f"deleted {len(dict.fromkeys(args.case_ids))} cases")
    return 0


def _export(args: argparse.Namespace) -> int:
    from deepxray.models.export import export_model_set

    export_model_set(args.models, args.out, format=args.format)
    return 0


def _training_target(value: str) -> str:
    """A model name; the older spellings (body-part, joints, scorer) name the same models."""
    from deepxray.models.registry import ALIASES

    return ALIASES.get(value, value)


def build_parser() -> argparse.ArgumentParser:
    from deepxray.batch.local import DEFAULT_BATCH_SIZE
    from deepxray.batch.remote import DEFAULT_CONCURRENCY
    from deepxray.models.registry import ALL_MODEL_NAMES, MODEL_NAMES
    from deepxray.phantoms.phantom import DEFAULT_SHAPE
    from deepxray.phantoms.scores import DISTRIBUTIONS
    from deepxray.phantoms.stored import STORED
    from deepxray.phantoms.writers import DICOM_COMPRESSIONS, FORMATS, PHOTOMETRICS

    parser = argparse.ArgumentParser(prog="deepxray", description="DeepXRay: erosion scoring of hand radiographs "
                                     "(research use only).")  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)

    phantoms = commands.add_parser("phantoms", help="synthetic labelled radiographs")
    phantom_commands = phantoms.add_subparsers(dest="phantoms_command", required=True)
    gen = phantom_commands.add_parser("generate", help="write N phantom images and their manifest.jsonl")
    gen.add_argument("--n", type=int, required=True, help="number of images")
    gen.add_argument("--out", type=Path, required=True, help="output directory")
    gen.add_argument("--seed", type=int, default=0, help="same seed, same images and labels (default 0)")
    gen.add_argument("--distribution", choices=DISTRIBUTIONS, default="clinical", help="score distribution")
    gen.add_argument("--format", choices=FORMATS, default="png", help="png (16-bit), jpeg (8-bit) or dicom")
    gen.add_argument(
        "--body-parts",
        default="left_hand",
        help="'all', or a comma list with optional weights, e.g. left_hand:3,right_hand,chest (default left_hand); "
        "both_hands: films of both hands side by side (1.75 times --width)",
    )
    gen.add_argument("--width", type=int, default=DEFAULT_SHAPE[1], help="radiograph width in pixels")
    gen.add_argument("--height", type=int, default=DEFAULT_SHAPE[0], help="radiograph height in pixels")
    gen.add_argument("--photometric", choices=PHOTOMETRICS, default="MONOCHROME2", help="DICOM only")
    gen.add_argument("--dicom-compression", choices=DICOM_COMPRESSIONS, default="none", help="DICOM only")
    gen.add_argument("--presentation-lut", choices=("identity", "inverse"), default=None,
                     help="DICOM only: write Presentation LUT Shape (default: none written)")  # fmt: skip
    gen.add_argument("--dicom-preamble", choices=("none", "tiff"), default="none",
                     help="DICOM only: 'tiff' writes dual-personality DICOM/TIFF files (uncompressed)")  # fmt: skip
    gen.add_argument("--stored", choices=(*STORED, "any"),
                     default="upright", help="films stored turned (counter-clockwise) or mirrored; labels follow; "
                     "any: one of them per image")  # fmt: skip
    gen.add_argument("--chest-findings", action="store_true",
                     help="chest films with labelled findings (CheXpert's 14 labels; prevalence by --distribution)")  # fmt: skip
    gen.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    gen.set_defaults(func=_phantoms_generate)

    sheet = phantom_commands.add_parser("contact-sheet", help="a PNG of phantoms of every class and score")
    sheet.add_argument("--out", type=Path, default=Path("docs/phantoms.png"))
    sheet.add_argument("--seed", type=int, default=7)
    sheet.set_defaults(func=_phantoms_sheet)
    trainer = commands.add_parser("train", help="train models and export them as versioned artifacts")
    trainer.add_argument(
        "target",
        type=_training_target,
        choices=[*ALL_MODEL_NAMES, "all"],
        help=f"the model to train ({', '.join(ALL_MODEL_NAMES)}), or all: the {len(MODEL_NAMES)} hand models (body-part, "
        "joints and scorer still work)",
    )
    trainer.add_argument("--data", type=Path, help="directory with labelled images and manifest.jsonl")
    trainer.add_argument("--synthetic", type=int, metavar="N", help="render N phantoms in memory instead")
    trainer.add_argument("--out", type=Path, required=True, help="directory for the model artifacts")
    trainer.add_argument("--seed", type=int, default=0, help="seed of the data split, weights and phantoms")
    trainer.add_argument("--epochs", type=int, default=None, help="at most this many epochs (early stopping)")
    trainer.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="an .npz of the prepared arrays: read when made from these settings by this code, else written",
    )
    trainer.set_defaults(func=_train)

    checkpoint = commands.add_parser("checkpoint", help="export an early epoch of a training run as a model set")
    checkpoint.add_argument("--models", type=Path, required=True, help="the trained model folder")
    checkpoint.add_argument("--epoch", type=int, required=True, help="which epoch's weights (1 = after the first)")
    checkpoint.add_argument("--out", type=Path, required=True, help="folder for the exported model set")
    checkpoint.set_defaults(func=_checkpoint)

    evaluate = commands.add_parser("evaluate", help="the original study's metric tables for a model set")
    evaluate.add_argument("--data", type=Path, required=True, help="a phantom folder / manifest.jsonl, or a CSV")
    evaluate.add_argument("--out", type=Path, required=True, help="report directory (Markdown, JSON, PNG)")
    evaluate.add_argument("--models", type=Path, default=None, help="model folder (default: the shipped models)")
    evaluate.add_argument("--url", default=None, help="evaluate a running service instead, e.g. http://127.0.0.1:8000")
    evaluate.add_argument(
        "--token",
        default=None,
        help="bearer token or API key for --url (default: the environment variable DEEPXRAY_TOKEN)",
    )
    evaluate.add_argument("--compare", type=Path, default=None, help="a second model folder to compare with")
    evaluate.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for the intervals")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    evaluate.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    evaluate.set_defaults(func=_evaluate)

    score = commands.add_parser("score", help="score a registry: files, folders, lists -> one row per hand")
    score.add_argument("inputs", nargs="+", metavar="INPUT",
                       help="files, folders (recursive) or lists of paths (.txt, or .csv with a path column)")  # fmt: skip
    score.add_argument("--out", type=Path, required=True, help="the table: .csv (default), .jsonl or .parquet")
    score.add_argument("--overwrite", action="store_true", help="start afresh (default: resume, skipping done films)")
    score.add_argument("--models", type=Path, default=None, help="model folder (default: DEEPXRAY_MODELS_DIR, shipped)")
    score.add_argument("--address", default=None, help="a Ray cluster for Ray Data: auto, or ray://HEAD:10001")
    score.add_argument("--workers", type=int, default=None, help="Ray Data actors (default: one per CPU)")
    score.add_argument(
        "--batch-size", type=int, default=None, help=f"films per actor call (default {DEFAULT_BATCH_SIZE})"
    )
    score.add_argument("--url", default=None, help="score with a running service instead of Ray Data")
    score.add_argument("--token", default=None, help="bearer token or API key for --url (default: DEEPXRAY_TOKEN)")
    score.add_argument("--concurrency", type=int, default=None,
                       help=f"films in flight to the service (--url; default {DEFAULT_CONCURRENCY})")  # fmt: skip
    score.add_argument("--patient-key", default=None, metavar="COLUMN",
                       help="the input CSV's column with a pseudonymous patient key, written with each row")  # fmt: skip
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    score.set_defaults(func=_score)

    keys = commands.add_parser("keys", help="API keys for auth_mode api_key (the service keeps their digests only)")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    new = key_commands.add_parser("new", help="make a key; print its line for the keys file (key_id:sha256:scopes)")
    new.add_argument("--id", required=True, help="the key's name, e.g. lab-a (the subject in the audit log)")
    new.add_argument("--scopes", required=True, help="comma list of score, read, review")
    new.add_argument("--keys-file", type=Path, default=None, help="append the line to this keys file (made if new)")
    new.add_argument("--key-out", type=Path, default=None, help="write the key to this file instead of the terminal")
    new.set_defaults(func=_keys_new)
    revoke = key_commands.add_parser("revoke", help="remove a key from the keys file")
    revoke.add_argument("--id", required=True)
    revoke.add_argument("--keys-file", type=Path, required=True)
    revoke.set_defaults(func=_keys_revoke)
    listing = key_commands.add_parser("list", help="the key ids and scopes of a keys file")
    listing.add_argument("--keys-file", type=Path, required=True)
    listing.set_defaults(func=_keys_list)

    cases = commands.add_parser("cases", help="the case store: export reviewed cases for training, delete cases")
    case_commands = cases.add_subparsers(dest="cases_command", required=True)
    store_help = "the store's SQLAlchemy URL (default: DEEPXRAY_DATABASE_URL, else cases.sqlite in the data dir)"
    export = case_commands.add_parser("export", help="write the cases as a training manifest (one record per hand)")
    export.add_argument("--out", type=Path, required=True, help="folder for manifest.jsonl and the images")
    export.add_argument("--reviewed-only", action="store_true", help="only cases a clinician reviewed")
    export.add_argument("--database-url", default=None, help=store_help)
    export.set_defaults(func=_cases_export)
    delete = case_commands.add_parser("delete", help="delete cases (answer, picture, joints, reviews)")
    delete.add_argument("case_ids", nargs="*", metavar="CASE_ID", help="the cases to delete")
    delete.add_argument("--all", action="store_true", help="delete every case of the store (needs --yes)")
    delete.add_argument("--yes", action="store_true", help="confirm --all")
    delete.add_argument("--database-url", default=None, help=store_help)
    delete.set_defaults(func=_cases_delete)

    exporter = commands.add_parser("export", help="write a model set for other runtimes (TensorFlow SavedModel)")
    exporter.add_argument("--models", type=Path, required=True, help="the model folder to export")
    exporter.add_argument(
        "--format", default="savedmodel", help="savedmodel (default): OUT/<model>/1/ with a serving_default signature"
    )
    exporter.add_argument("--out", type=Path, required=True, help="a new or empty folder for the exported models")
    exporter.set_defaults(func=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"deepxray: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
