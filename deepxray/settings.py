"""The application's settings: one pydantic-settings model, every default written once.

Where a value comes from, first match wins:

1. a serve config's `args:` (or keyword arguments, in tests and scripts);
2. the environment variable `DEEPXRAY_<NAME>` (e.g. `DEEPXRAY_MODELS_DIR`, `DEEPXRAY_MAX_UPLOAD_BYTES`);
3. the default below.

Nothing is read at import time: `Settings()` reads the environment when it is called (in a replica's
`__init__`, in the app builder, in a CLI command), so tests can set variables first. Replicas, CPU shares and
queue limits are not settings: they belong to the serve config's `deployments:`; the scorer's batching reaches
running replicas as its `user_config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from deepxray.imaging.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

ENV_PREFIX = "DEEPXRAY_"


class Settings(BaseSettings):
    """Model paths, limits and timeouts of the application (the typed app builder's argument)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    models_dir: Path | None = Field(
        None,
        description="Directory holding body_part/, joint_detection/, ratingen_score/ (and chest_findings/, for "
        "/analyze); unset: the shipped models",
    )
    body_part_model: Path | None = Field(None, description="Artifact directory of the body-part model")
    joint_detection_model: Path | None = Field(None, description="Artifact directory of the joint detector")
    ratingen_score_model: Path | None = Field(None, description="Artifact directory of the Ratingen scorer")
    chest_findings_model: Path | None = Field(None, description="Artifact directory of the chest-findings model")
    accept_probability: float = Field(0.5, ge=0.0, le=1.0, description="Least hand probability to score (422 below)")
    turned_accept_probability: float = Field(
        0.95,
        ge=0.0,
        le=1.0,
        description="Least left + right hand probability to score a film stored turned (90/180/270)",
    )
    min_joint_confidence: float = Field(0.2, ge=0.0, le=1.0, description="Least detector confidence per joint")
    max_upload_bytes: int = Field(DEFAULT_MAX_BYTES, gt=0, description="Largest upload in bytes (413 above)")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0, description="Largest width x height (413 above)")
    stage_timeout_s: float = Field(10.0, gt=0.0, description="Longest wait for one model call (504 after)")
    retry_after_s: int = Field(1, ge=0, description="Retry-After of a 503 when Serve does not say")
    max_scoring: int = Field(4, ge=1, description="Images one ingress replica scores at once")
    max_waiting: int = Field(4, ge=0, description="Images waiting for a slot per ingress replica (503 beyond)")
    # One hand's ten joints fill a batch, so a lone request never waits for the batch timeout; crops of requests
    # arriving together share passes of ten.
    max_batch_size: int = Field(10, ge=1, description="Most joint crops in one scorer forward pass")
    # Crops come in tens, so a batch waits only for the rest of a hand's crops, which may straggle in over tens of
    # milliseconds on a busy CPU (at 20 ms, one image's crops were measured splitting 9 + 1 here while a training
    # job held both cores); it costs a lone request nothing.
    batch_wait_timeout_s: float = Field(0.1, ge=0.0, description="Longest wait for a scorer batch to fill")
    # One call per hand costs less on a small machine (README "Fan-out": measured both ways); one call per joint
    # spreads a film's crops over many scorer replicas of a cluster.
    crops_per_call: int = Field(
        10, ge=1, le=10, description="Joint crops per call to the scorer: 10 = one call per hand, 1 = one per joint"
    )
    # Access control (deepxray/api/auth.py). `none` suits a laptop, where the proxy listens on 127.0.0.1 only.
    auth_mode: Literal["none", "api_key", "jwt"] = Field(
        "none", description="none: every request is accepted; api_key: keys in api_keys_file; jwt: OAuth 2.0 tokens"
    )
    api_keys_file: Path | None = Field(
        None, description="API keys, one key_id:sha256:scopes per line (auth_mode api_key); re-read when it changes"
    )
    jwks: str | None = Field(None, description="The token issuer's JSON Web Key Set: a file or an https:// URL")
    jwt_issuer: str | None = Field(None, description="The `iss` every token must carry (auth_mode jwt)")
    jwt_audience: str | None = Field(None, description="The `aud` every token must carry (auth_mode jwt)")
    jwt_leeway_s: float = Field(30.0, ge=0.0, le=300.0, description="Clock skew allowed on exp, nbf and iat")
    scope_prefix: str = Field("", description="Prefix of this service's scopes in tokens, e.g. 'deepxray:'")
    jwks_cache_s: float = Field(300.0, gt=0.0, description="Longest a fetched JWKS is used before fetching it again")
    # A token naming an unknown key id makes the service fetch the JWKS again (key rotation), but not more often
    # than this: a stream of made-up key ids must not turn into a stream of requests to the identity provider.
    jwks_refetch_s: float = Field(10.0, ge=0.0, description="Least seconds between fetches for an unknown key id")

    # Batch scoring (deepxray/batch): the research team's secret for pseudonymous study and series ids.
    pseudonym_salt: str | None = Field(
        None, description="Salt of the pseudonymous study/series ids `deepxray score` writes (none: no ids written)"
    )

    # The case store (deepxray/cases): scored films kept for review, similar-case search and retraining.
    store_cases: bool = Field(False, description="Keep every scored film as a case (answer, embeddings, image)")
    store_images: Literal["none", "preview", "original"] = Field(
        "preview",
        description="What of the film a case keeps: nothing, a downscaled 8-bit preview, or the pixels at full size "
        "(a PNG of the decoded pixels; never the uploaded file, whose header may name the patient)",
    )
    preview_max_side: int = Field(1024, ge=64, le=8192, description="Longest side of a stored preview, pixels")
    data_dir: Path | None = Field(
        None, description="Where the embedded case store keeps its SQLite file; unset: ~/.local/share/deepxray"
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the case store (e.g. postgresql+psycopg://...); unset: SQLite in data_dir"
    )

    @model_validator(mode="after")
    def _auth_is_complete(self) -> Settings:
        missing = {
            "none": [],
            "api_key": ["api_keys_file"] if self.api_keys_file is None else [],
            "jwt": [name for name in ("jwks", "jwt_issuer", "jwt_audience") if not getattr(self, name)],
        }[self.auth_mode]
        if missing:
            names = ", ".join(f"{name} ({ENV_PREFIX}{name.upper()})" for name in missing)
            raise ValueError(f"auth_mode {self.auth_mode} needs {names}")
        return self

    @model_validator(mode="after")
    def _calls_fit_a_batch(self) -> Settings:
        if self.crops_per_call > self.max_batch_size:  # Serve would refuse every such call
            raise ValueError(
                f"crops_per_call ({self.crops_per_call}) must not exceed max_batch_size ({self.max_batch_size})"
            )
        return self

    @classmethod
    def with_environment(cls, given: Settings | dict[str, Any] | None = None) -> Settings:
        """`given` (a serve config's args, as Ray's typed builder validated them, or a dict) with the environment
        filling what it leaves out. Ray validates `args:` with `model_validate`, which reads no environment."""
        if isinstance(given, Settings):
            given = given.model_dump(exclude_unset=True)
        return cls(**(given or {}))

    def model_dir(self, name: str) -> Path | None:
        """The artifact directory of model `name` (absolute), or None: the shipped demo model."""
        explicit = getattr(self, f"{name}_model")
        if explicit:
            return explicit.expanduser().resolve()
        if self.models_dir:
            return (self.models_dir.expanduser() / name).resolve()
        return None

    def models_folder(self) -> Path:
        """The model folder in use: `models_dir` (resolved) when set, else the shipped demo models."""
        from deepxray.models.artifacts import shipped_models_dir

        return self.models_dir.expanduser().resolve() if self.models_dir else shipped_models_dir()

    def case_store_url(self) -> str:
        """The case store's SQLAlchemy URL: `database_url`, else a SQLite file `cases.sqlite` in `data_dir`."""
        if self.database_url:
            return self.database_url
        folder = self.data_dir.expanduser() if self.data_dir else Path.home() / ".local" / "share" / "deepxray"
        return f"sqlite:///{(folder / 'cases.sqlite').resolve()}"

    def batching(self) -> dict[str, Any]:
        """The scorer's `user_config` (a serve config's own `user_config` for RatingenScore wins over it)."""
        return {"max_batch_size": self.max_batch_size, "batch_wait_timeout_s": self.batch_wait_timeout_s}


def default(name: str) -> Any:
    """The default of setting `name`, for code that needs it before any settings are read (decorators)."""
    return Settings.model_fields[name].default
