"""The load scenarios as plain functions of the time since the start: users wanted now, or None when over.

- steady: `users` users from the first second to the end (the saturation measurement);
- ramp: from one user up to `users` in equal steps over the first 80 % of the time, then held;
- spike: `users` for the first third, `factor` x `users` for the second third, `users` again for the last.

The spike's phases are what `loadtests.summary` splits a spike run's requests by.
"""

from __future__ import annotations

from dataclasses import dataclass

SHAPES = ("steady", "ramp", "spike")
RAMP_SHARE = 0.8  # of the run spent ramping; the rest holds the top


@dataclass(frozen=True)
class Phases:
    """A spike run's phase boundaries, in seconds from the start."""

    spike_start: float
    spike_end: float
    end: float


def spike_phases(duration: float) -> Phases:
    return Phases(duration / 3, 2 * duration / 3, duration)


def users_at(shape: str, t: float, users: int, duration: float, factor: float = 3.0) -> int | None:
    """Users wanted `t` seconds into a run of `duration` seconds; None once the run is over."""
    if t >= duration:
        return None
    if shape == "steady":
        return users
    if shape == "ramp":
        return min(users, 1 + int(t / (RAMP_SHARE * duration) * users))
    if shape == "spike":
        phases = spike_phases(duration)
        return max(users, round(factor * users)) if phases.spike_start <= t < phases.spike_end else users
    raise ValueError(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")
