"""The serve profiles (`serve_config.yaml` for one machine, `serve_config.cluster.yaml` for a cluster), checked
against the application they configure.

    python -m deepxray.profiles serve_config.yaml serve_config.cluster.yaml
    python -m deepxray.profiles serve_config.yaml --tls build/server.key build/server.crt --out build/serve_config.tls.yaml

A profile is first read the way `serve deploy` reads it (Ray's own `ServeDeploySchema`), then held against
`deepxray.app`: its `args` must be valid `deepxray.settings.Settings`, its `deployments:` must name exactly the deployments that
`bind_graph` builds and set options Ray accepts for them, the scorer's `user_config` must be batching settings the
scorer reads, and the ingress must take more requests than its own admission gate lets in. Profiles given
together must describe the same application (name, route, import path, deployments and argument names); their
values (replicas, CPUs, limits) are theirs to differ. So editing one profile, or the application, cannot leave
the other silently out of step.

With `--tls KEY CERT --out FILE`, one profile, once checked, is written again to FILE with HTTPS switched on: Ray
Serve's proxy terminates TLS itself with `http_options.ssl_keyfile` and `ssl_certfile`, set there to the files'
absolute paths after checking that the key belongs to the certificate (`serve run` has no flag for them).
"""

from __future__ import annotations

import argparse
import copy
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

IMPORT_PATH = "deepxray.app:build_app"
SCORER = "RatingenScore"
INGRESS = "Ingress"
ROOT = Path(__file__).resolve().parents[1]
ONE_MACHINE_PROFILE = ROOT / "serve_config.yaml"
CLUSTER_PROFILE = ROOT / "serve_config.cluster.yaml"


class ProfileError(ValueError):
    """A profile that does not fit the application; the message lists every problem found."""


def read_profile(path: str | Path):
    """The profile as `serve deploy` reads it: YAML, then Ray Serve's `ServeDeploySchema` (raises on errors)."""
    from ray.serve.schema import ServeDeploySchema

    return ServeDeploySchema.model_validate(yaml.safe_load(Path(path).read_text(encoding="utf-8")))


def profile_parts(path: str | Path = ONE_MACHINE_PROFILE) -> tuple[dict, dict[str, dict]]:
    """A profile's application `args` and its deployments' options by name, as written in the file (what
    benchmarks, load tests and test fixtures start the application with)."""
    application = read_profile(path).applications[0]
    return dict(application.args or {}), _deployment_options(application)


def _deployment_options(application) -> dict[str, dict]:
    return {d.name: d.model_dump(exclude_unset=True) for d in application.deployments}


def built_deployments(args) -> dict:
    """The deployments, by name, that the application's graph holds for `args` (as Serve expands it)."""
    from ray.serve._private.build_app import build_app

    from deepxray.app import bind_graph

    return {deployment.name: deployment for deployment in build_app(bind_graph(args), name="check").deployments}


def profile_problems(config) -> list[str]:
    """What in a parsed profile (`read_profile`) does not fit the application; empty when it fits."""
    from pydantic import ValidationError

    from deepxray.app import bind_graph
    from deepxray.settings import Settings

    if len(config.applications) != 1:
        return [f"one application expected, found {len(config.applications)}"]
    application = config.applications[0]
    problems = []
    if application.import_path != IMPORT_PATH:
        problems.append(f"import_path is {application.import_path!r}, not {IMPORT_PATH!r}")
    try:
        args = Settings.model_validate(application.args or {})
    except ValidationError as error:
        return [*problems, f"args are not valid Settings: {error}"]

    options = _deployment_options(application)
    expected = set(built_deployments(args))
    if set(options) != expected:
        problems.append(f"deployments {sorted(options)} are not the application's {sorted(expected)}")
        return problems
    try:  # Ray's own checks of the options against each deployment; a copy, as Ray fills in its defaults
        bind_graph(args, copy.deepcopy(options))
    except Exception as error:  # Ray raises ValueError, TypeError or its own exceptions here
        problems.append(f"deployment options rejected: {error}")

    scorer = options[SCORER]
    batching = {**args.batching(), **(scorer.get("user_config") or {})}
    if set(batching) != set(args.batching()):
        problems.append(f"{SCORER} user_config keys {sorted(batching)} are not {sorted(args.batching())}")
    elif scorer.get("max_ongoing_requests", 0) < batching["max_batch_size"]:
        problems.append(f"{SCORER} max_ongoing_requests is below max_batch_size: a batch could never fill")
    admitted = args.max_scoring + args.max_waiting  # the ingress's own gate answers a JSON 503 beyond these
    if options[INGRESS].get("max_ongoing_requests", 0) <= admitted:
        problems.append(
            f"{INGRESS} max_ongoing_requests is not above max_scoring + max_waiting ({admitted}): Serve's plain-text "
            "503 would come before the ingress's own, and health checks would queue behind images"
        )
    for name, opts in options.items():
        if "num_replicas" not in opts and "autoscaling_config" not in opts:
            problems.append(f"{name} sets neither num_replicas nor autoscaling_config")
        if "num_cpus" not in opts.get("ray_actor_options", {}):
            problems.append(f"{name} sets no ray_actor_options.num_cpus (Ray would reserve one CPU silently)")
    return problems


def same_application_problems(first, second) -> list[str]:
    """Where two parsed profiles describe different applications (their values may differ, not their shape)."""
    a, b = first.applications[0], second.applications[0]
    problems = []
    for field in ("name", "route_prefix", "import_path"):
        if getattr(a, field) != getattr(b, field):
            problems.append(f"{field}: {getattr(a, field)!r} against {getattr(b, field)!r}")
    if set(a.args or {}) != set(b.args or {}):
        problems.append(f"args {sorted(a.args or {})} against {sorted(b.args or {})}")
    if [d.name for d in a.deployments] != [d.name for d in b.deployments]:
        problems.append(f"deployments {[d.name for d in a.deployments]} against {[d.name for d in b.deployments]}")
    return problems


def check_profiles(paths: Sequence[str | Path]) -> None:
    """Raises `ProfileError` naming every problem in the profiles at `paths` (each alone, then side by side)."""
    configs = {str(path): read_profile(path) for path in paths}
    problems = [f"{path}: {problem}" for path, config in configs.items() for problem in profile_problems(config)]
    if not problems:
        (first, a), *others = configs.items()
        for path, b in others:
            problems += [f"{first} / {path}: {problem}" for problem in same_application_problems(a, b)]
    if problems:
        raise ProfileError("\n".join(problems))


def check_tls_pair(keyfile: Path, certfile: Path) -> None:
    """ProfileError (one line) unless both files exist and hold a certificate chain and the private key for it."""
    for path in (keyfile, certfile):
        if not path.is_file():
            raise ProfileError(f"{path}: no such file")

    def no_password():
        raise ProfileError(f"{keyfile}: the key is encrypted; give a key without a passphrase")

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(certfile, keyfile, password=no_password)
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise ProfileError(f"{keyfile} is not the private key of the certificate {certfile}") from None
        raise ProfileError(
            f"{certfile} and {keyfile} are not a PEM certificate and its private key ({error})"
        ) from None


def write_tls_profile(source: str | Path, keyfile: str | Path, certfile: str | Path, out: str | Path) -> Path:
    """Checks the profile at `source` and the key and certificate, then writes the profile to `out` with
    `http_options.ssl_keyfile` and `ssl_certfile` set to their absolute paths (the source's comments are not
    kept: YAML loses them). Raises ProfileError naming what is wrong."""
    check_profiles([source])
    keyfile, certfile, out = Path(keyfile).resolve(), Path(certfile).resolve(), Path(out)
    check_tls_pair(keyfile, certfile)
    config = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
    tls = {"ssl_keyfile": str(keyfile), "ssl_certfile": str(certfile)}
    config["http_options"] = {**(config.get("http_options") or {}), **tls}
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(config)  # still what `serve deploy` and `serve run` read
    header = (
        f"# Generated from {source} with HTTPS on (http_options.ssl_keyfile, ssl_certfile): do not edit; edit the\n"
        f"# source and write it again:\n#   python -m deepxray.profiles {source} --tls {keyfile} {certfile} --out {out}\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepxray.profiles", description=__doc__.split("\n\n")[0])
    parser.add_argument("profiles", nargs="+", type=Path, metavar="PROFILE.yaml", help="serve profiles to check")
    parser.add_argument(
        "--tls",
        nargs=2,
        type=Path,
        metavar=("KEY", "CERT"),
        help="write the profile with HTTPS on: PEM key, certificate",
    )
    parser.add_argument("--out", type=Path, help="where --tls writes the profile")
    args = parser.parse_args(argv)
    if args.tls and (len(args.profiles) != 1 or args.out is None):
        parser.error("--tls takes one profile and --out FILE")
    if args.out and not args.tls:
        parser.error("--out goes with --tls KEY CERT")
    paths = [str(path) for path in args.profiles]
    try:
        if args.tls:
            out = write_tls_profile(args.profiles[0], *args.tls, args.out)
        else:
            check_profiles(paths)
    except (ProfileError, ValueError, OSError) as error:
        print(error, file=sys.stderr)
        return 1
    if args.tls:
        print(f"ok: {paths[0]} fits deepxray.app; wrote {out} with HTTPS on ({args.tls[0]}, {args.tls[1]})")
    else:
        print(f"ok: {', '.join(paths)} fit deepxray.app ({IMPORT_PATH})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
