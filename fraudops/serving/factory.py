"""The scorer as every deployable runs it: the HTTP service's workers and the stream
consumers build it here, the same way.

    scorer = open_scorer(settings, "predictions")   # loads @champion, or raises NotReady
    scorer.core.score([...])
    scorer.close()                                   # drains the logs, frees the spools
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fraudops.core.settings import Settings
from fraudops.serving.prediction_log import (
    SHADOW_SPOOL_STEM,
    ClaimedSpool,
    PredictionLog,
    claim_spool,
    open_shadow_log,
)
from fraudops.serving.scoring import ScoringCore


@dataclass
class Scorer:
    core: ScoringCore
    spools: list[ClaimedSpool] = field(default_factory=list)

    def close(self) -> None:
        """Stop following the aliases, drain the logs (to the database or the spools),
        then free the spools for the next process."""
        try:
            self.core.close()
        finally:
            for spool in self.spools:
                spool.release()


def open_scorer(settings: Settings, spool_stem: str) -> Scorer:
    """The scoring core with its prediction log, and the shadow log with
    ``FRAUDOPS_SHADOW``. Each log has a spool file of this process's own under
    ``<data_dir>/spool`` (``<spool_stem>.jsonl``, or the first free ``<spool_stem>-<n>``):
    workers, replicas and consumers may share the data directory, and a restarted process
    replays the records its predecessor spooled. Raises ``NotReady`` without a usable
    champion, with everything it opened closed."""
    spool_dir = settings.data_dir / "spool"
    spools = [claim_spool(spool_dir, spool_stem)]
    prediction_log = PredictionLog(
        settings.resolved_database_url, spools[0].path, flush_interval=settings.log_flush_seconds
    ).start()
    shadow_log = None
    if settings.shadow:  # the challenger's results, beside the champion's
        stem = SHADOW_SPOOL_STEM if spool_stem == "predictions" else f"{spool_stem}-shadow"
        spools.append(claim_spool(spool_dir, stem))
        shadow_log = open_shadow_log(
            settings.resolved_database_url,
            spools[1].path,
            flush_interval=settings.log_flush_seconds,
        )
    try:
        return Scorer(ScoringCore(settings, prediction_log, shadow_log), spools)
    except BaseException:
        prediction_log.close()
        if shadow_log is not None:
            shadow_log.close()
        for spool in spools:
            spool.release()
        raise
