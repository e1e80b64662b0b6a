"""Every Redis key heapbot writes, built in one place so Redis Cluster keeps working.

A Redis Cluster refuses a command, MULTI/EXEC or Lua script whose keys hash to
different slots (CROSSSLOT). Keys used together therefore share a hash tag, the
part in ``{…}`` that alone decides the slot:

- ``{<service>}``: a service's snapshots, their staging hashes, index, deploy markers and
  capture lock (one MULTI/EXEC renames a staged snapshot into place, trims retention and
  adds deploy markers);
- ``{jobs}``: the job stream, its dead letters, dedupe keys and per-job progress
  (the enqueue script sets a dedupe key and XADDs; ack XACKs and deletes progress);
- ``{watches}``: the watch list and each watch's cursor, state, recovery streak, turn and
  tick log (one script unwatches: it deletes the watch and every key of it, ``watch_keys``;
  one script hands out slots, one decides a tick's verdict, streak and turn, another logs a
  tick once per slot, each checking that the watch still exists);
- ``{sampling}``: the --sample scheduler's due and active sets, per-user and
  per-service reservations and run records (one script reserves them all);
- incidents, their locks, thread memory and the Slack replay/seen sets are used one
  key per command, so they carry no tag and spread over the cluster.

``MULTI_KEY_GROUPS`` lists the builders used together; tests/store/test_keys.py checks
that each group lands in one slot for arbitrary names, and that no module outside
this one spells a ``heapbot:`` key itself.
"""

from __future__ import annotations

from collections.abc import Callable

PREFIX = "heapbot:"


def _service(service: str) -> str:
    return f"{PREFIX}{{{service}}}"


# -- one service's history -------------------------------------------------------------

def snapshot(service: str, snapshot_id: str) -> str:
    """Hash: ``meta``, ``summary`` and ``raw:<instance>:<kind>`` of one capture."""
    return f"{_service(service)}:snap:{snapshot_id}"


def snapshot_staging(service: str, snapshot_id: str) -> str:
    """Hash of a snapshot's profiles while they are sent, one per command, with a short TTL;
    the save's MULTI/EXEC RENAMEs it to ``snapshot`` (a crash leaves it to expire unseen)."""
    return f"{_service(service)}:staging:{snapshot_id}"


def snapshot_index(service: str) -> str:
    """Sorted set of snapshot ids scored by capture time."""
    return f"{_service(service)}:index"


def deploys(service: str) -> str:
    """Sorted set of deploy markers (JSON) scored by time."""
    return f"{_service(service)}:deploys"


def capture_lock(service: str) -> str:
    """Single-flight lock of a service's capture across replicas."""
    return f"{_service(service)}:capture-lock"


# -- the job queue ---------------------------------------------------------------------

JOBS_TAG = "{jobs}"
JOB_STREAM = f"{PREFIX}{JOBS_TAG}"
JOB_DEAD_LETTER = f"{PREFIX}{JOBS_TAG}:dead"


def job_dedupe(key: str) -> str:
    """SET NX marker of one webhook delivery (dropped as duplicate while it lives)."""
    return f"{PREFIX}{JOBS_TAG}:dedupe:{key}"


def job_progress(job_id: str) -> str:
    """Hash of the steps a multi-step job has done (removed on ack)."""
    return f"{PREFIX}{JOBS_TAG}:progress:{job_id}"


# -- watches ---------------------------------------------------------------------------

WATCHES_TAG = "{watches}"
WATCHES = f"{PREFIX}{WATCHES_TAG}"


def watch_cursor(service: str) -> str:
    """The start (ms since the epoch) of the newest slot whose tick was scheduled."""
    return f"{PREFIX}{WATCHES_TAG}:cursor:{service}"


def watch_state(service: str) -> str:
    return f"{PREFIX}{WATCHES_TAG}:state:{service}"


def watch_ok_streak(service: str) -> str:
    """Set of the slots whose ticks judged "ok" since the verdict went bad (a retried tick
    counts once); RECOVERY_TICKS of them call the watch back to normal."""
    return f"{PREFIX}{WATCHES_TAG}:ok-slots:{service}"


def watch_turn(service: str) -> str:
    """The id of the tick job that made the watch's current verdict (it, and only it,
    opens or closes that turn's thread), with `` done`` appended once it has."""
    return f"{PREFIX}{WATCHES_TAG}:turn:{service}"


def watch_ticks(service: str) -> str:
    """List of ``<slot>:<snapshot id>`` of the ticks run."""
    return f"{PREFIX}{WATCHES_TAG}:ticks:{service}"


def watch_legacy_ok_streak(service: str) -> str:
    """The recovery streak's key before it became a set of slots (3818022): no TTL, so
    unwatch and every tick delete it, or a deployment upgraded from then keeps it forever."""
    return f"{PREFIX}{WATCHES_TAG}:ok-streak:{service}"


def watch_keys(service: str) -> list[str]:
    """Every key one watch owns besides its entry in ``WATCHES`` and its tick log: unwatch
    deletes them all in the script that removes the watch, and gives the tick log a TTL
    (tests/store/test_keys.py checks no builder is missed)."""
    return [watch_cursor(service), watch_state(service), watch_ok_streak(service),
            watch_turn(service), watch_legacy_ok_streak(service)]


# -- --sample runs (bot/sampling.py) --------------------------------------------------------

SAMPLING_TAG = "{sampling}"
SAMPLING_PREFIX = f"{PREFIX}{SAMPLING_TAG}:"  # due, active, user:<id>, service:<svc>, run:<id>


def sampling(*parts: str) -> str:
    """A key of the --sample scheduler (its reserve/release scripts touch several)."""
    return SAMPLING_PREFIX + ":".join(parts)


# -- single-key records ----------------------------------------------------------------

def incident(key: str) -> str:
    """Hash of one paged thread (bot.records.to_hash of an Incident)."""
    return f"{PREFIX}incident:{key}"


def incident_lock(key: str) -> str:
    return f"{PREFIX}incident:{key}:lock"


def incident_latest(service: str) -> str:
    """String: the key of the service's newest alert thread (where folded alerts go)."""
    return f"{PREFIX}incident-latest:{service}"


def incidents_opened(service: str) -> str:
    """Counter of alert threads opened for the service in the current window (with a TTL)."""
    return f"{PREFIX}incident-opened:{service}"


def thread(channel: str, ts: str) -> str:
    """Which service a Slack thread is about."""
    return f"{PREFIX}thread:{channel}:{ts}"


SLACK_EVENT_SEEN = f"{PREFIX}slack:event:"
SLACK_SIGNATURE_SEEN = f"{PREFIX}slack:sig:"


# Builders whose keys appear together in one MULTI/EXEC, pipeline transaction or script.
MULTI_KEY_GROUPS: dict[str, list[Callable[..., str]]] = {
    "snapshot save (MULTI/EXEC, retention, deploy markers)": [
        snapshot, snapshot_staging, snapshot_index, deploys, capture_lock],
    "job queue (enqueue script, ack, dead letter)": [
        lambda _x: JOB_STREAM, lambda _x: JOB_DEAD_LETTER, job_dedupe, job_progress],
    "sampling (reserve and release scripts)": [
        lambda _x: sampling("due"), lambda _x: sampling("active"),
        lambda user: sampling("user", user), lambda svc: sampling("service", svc),
        lambda run: sampling("run", run)],
    "watches (unwatch, cursor, decision, tick log)": [
        lambda _x: WATCHES, watch_cursor, watch_state, watch_ok_streak, watch_turn,
        watch_ticks, watch_legacy_ok_streak],
}
