"""The service's log: what goes into it, and what never does (uploads, file names, DICOM header values)."""

from __future__ import annotations

import logging

# Child of Ray Serve's logger: inside a replica each line also goes to the replica's log file with Serve's own
# fields (deployment, replica, and the request id the proxy assigned, which is the one our answers carry).
LOGGER_NAME = "ray.serve.deepxray"


def get_logger() -> logging.Logger:
    """The service's logger. Lines hold a request id, status, timings and sizes: never an upload or its name."""
    return logging.getLogger(LOGGER_NAME)


def keep_patient_data_out_of_logs() -> None:
    """pydicom warns and logs about odd header values by quoting them (names, dates, identifiers): in a process
    that decodes uploads, those lines are dropped (decoding itself is unchanged)."""
    import warnings

    logging.getLogger("pydicom").disabled = True
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    try:
        from pydicom import config

        config.settings.reading_validation_mode = config.IGNORE
    except Exception:  # an older or newer pydicom without this setting: the logger is silenced all the same
        pass
