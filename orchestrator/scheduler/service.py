"""The orchestrator service: the scheduler and its jobs.

* The daily sunset check, at start and then every day at ``sunset_check_time``
  in the district's zone.
* Deployments. APScheduler decides *when*: each scheduled or running
  deployment has one job, ``deployment-<id>``, in the SQLAlchemy job store on
  the project's own database, holding nothing but the deployment's id. The
  deployment's rows decide *what*: each firing is one
  :func:`orchestrator.services.rollout_runner.tick`, and the job is moved to
  the time the tick says (the next window, a retry, or at once while clients
  wait for a slot), with an hourly heartbeat besides. A sweep every 15 seconds
  gives a job to deployments created since (by ``deploy create`` in another
  process) or resumed, and drops the jobs of those ended or paused.
* Every 10 minutes, :func:`orchestrator.services.staging.prestage_due` stages
  each live deployment's image to the distribution point of every building
  whose window opens within ``staging_lead_hours``, once per building.
* Every day at ``store_housekeeping_time`` (unless "off"),
  :func:`orchestrator.services.staging.housekeeping`: ``store gc``, then the
  prune of every building's point; put off by half an hour while another
  process has the store open.
* At start, before any job fires, :func:`rollout_runner.reconcile` settles
  what a crash left in flight: nothing stays "running".
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import FrameType

from apscheduler.events import EVENT_JOB_EXECUTED, JobEvent, JobExecutionEvent
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from orchestrator.config import Settings
from orchestrator.domain.policy import SYSTEM_ACTOR
from orchestrator.errors import OrchestratorError
from orchestrator.services import (
    deployments,
    image_store,
    rollout_runner,
    runs,
    staging,
    sunset,
    vault,
)
from orchestrator.services.context import Context
from orchestrator.services.runs import PlaybookRunner

log = logging.getLogger("orchestrator.scheduler")

SUNSET_JOB = "sunset-daily-check"
SWEEP_JOB = "deployments-sweep"
PRESTAGE_JOB = "images-prestage"
HOUSEKEEPING_JOB = "store-housekeeping"
HOUSEKEEPING_RETRY_JOB = "store-housekeeping-retry"
HOUSEKEEPING_RETRY = timedelta(minutes=30)
"""How long housekeeping waits when the store is busy (an import, a staging)."""
PRESTAGE_EVERY = timedelta(minutes=10)
"""How often the scheduler looks for images to stage to buildings' points before windows."""
SWEEP_EVERY = timedelta(seconds=15)
"""How soon a deployment created or resumed in another process gets its job:
one query of the live deployments' ids each time."""
DEPLOYMENTS_STORE = "deployments"
RETRY_AFTER_ERROR = timedelta(minutes=5)
HEARTBEAT = timedelta(hours=1)
"""Each live deployment is looked at least this often, whatever its last tick said."""


@dataclass
class Runtime:
    """What a deployment job needs that cannot travel in the job store (only ids do)."""

    ctx: Context
    settings: Settings
    scheduler: BaseScheduler
    runner: PlaybookRunner | None = None
    """None: the real Ansible runner (tests give a fake)."""


_runtime: Runtime | None = None


def install(runtime: Runtime | None) -> None:
    """Make ``runtime`` the one deployment jobs use (None: none, jobs only log)."""
    global _runtime
    _runtime = runtime


JOB_PREFIX = "deployment-"


def job_id(deployment_id: int) -> str:
    return f"{JOB_PREFIX}{deployment_id}"


def run_deployment(deployment_id: int) -> datetime | None:
    """One deployment job firing: one tick; returns when the job should fire next.

    The job is moved there by :func:`on_job_event` once APScheduler has counted
    this firing as finished: moved from inside the firing, a job due at once
    could be found still running and skipped, to wait for its heartbeat.
    """
    rt = _runtime
    if rt is None:
        log.warning("deployment %d: no runtime installed, nothing done", deployment_id)
        return None
    next_at: datetime | None
    try:
        result = rollout_runner.tick(
            rt.ctx,
            deployment_id,
            credentials=vault.credentials_from_settings(rt.ctx, rt.settings),
            runner=rt.runner,
            distribution=runs.DistributionPoint(
                rt.settings.distribution_address, rt.settings.distribution_port
            ),
        )
        next_at = result.next_at
        log.info(
            "deployment %d: %s, %d started%s",
            deployment_id,
            result.state,
            len(result.started),
            f", next at {next_at:%Y-%m-%d %H:%M} UTC" if next_at else "",
        )
    except OrchestratorError as exc:  # logged, tried again; the rows stay the truth
        next_at = rt.ctx.now() + RETRY_AFTER_ERROR
        log.warning("deployment %d: %s; trying again at %s", deployment_id, exc, next_at)
    return next_at


def on_job_event(event: JobEvent) -> None:
    """After a deployment job's firing has finished: move it to the time it returned."""
    rt = _runtime
    if (
        rt is None
        or not isinstance(event, JobExecutionEvent)
        or event.jobstore != DEPLOYMENTS_STORE
        or event.exception is not None
        or not event.job_id.startswith(JOB_PREFIX)
    ):
        return
    deployment_id = int(event.job_id.removeprefix(JOB_PREFIX))
    with contextlib.suppress(JobLookupError):  # removed by the sweep meanwhile: it decides
        schedule(rt.scheduler, deployment_id, event.retval)


def schedule(scheduler: BaseScheduler, deployment_id: int, at: datetime | None) -> None:
    """Move the deployment's job to ``at``; None leaves it to its heartbeat and the sweep.

    A job never removes itself: APScheduler updates a job's row right after
    firing it, and a row gone by then stops the scheduler's thread. Jobs of
    ended or paused deployments are removed by :func:`sweep`, outside their
    own firing.
    """
    if at is None:
        return
    jid = job_id(deployment_id)
    if scheduler.get_job(jid, jobstore=DEPLOYMENTS_STORE) is None:
        scheduler.add_job(
            run_deployment,
            IntervalTrigger(seconds=int(HEARTBEAT.total_seconds())),
            next_run_time=at,
            args=[deployment_id],
            id=jid,
            jobstore=DEPLOYMENTS_STORE,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,  # late is fine: the tick itself checks the window
        )
    else:
        scheduler.modify_job(jid, jobstore=DEPLOYMENTS_STORE, next_run_time=at)


def sweep() -> list[int]:
    """Give a job (due at once) to each live deployment without one, and drop the
    jobs of deployments that ended or were paused. Returns the ids given a job."""
    rt = _runtime
    if rt is None:
        return []
    live = set(deployments.active_ids(rt.ctx))
    for job in rt.scheduler.get_jobs(jobstore=DEPLOYMENTS_STORE):
        if job.args and job.args[0] not in live:
            with contextlib.suppress(JobLookupError):  # removed meanwhile
                rt.scheduler.remove_job(job.id, jobstore=DEPLOYMENTS_STORE)
    added = []
    for deployment_id in sorted(live):
        if rt.scheduler.get_job(job_id(deployment_id), jobstore=DEPLOYMENTS_STORE) is None:
            schedule(rt.scheduler, deployment_id, rt.ctx.now())
            added.append(deployment_id)
    return added


def prestage(ctx: Context, settings: Settings) -> list[staging.StagingView]:
    """Stage live deployments' images to their buildings' points before the windows."""
    try:
        credentials = vault.credentials_from_settings(ctx, settings)
        made = staging.prestage_due(
            ctx, credentials=credentials, lead=timedelta(hours=settings.staging_lead_hours)
        )
    except OrchestratorError as exc:
        log.warning("pre-staging skipped: %s", exc)
        return []
    for s in made:
        log.info(
            "staged %s to building %s: %d chunks, %d bytes (%s)",
            s.ref,
            s.building,
            s.chunks_sent,
            s.bytes_sent,
            s.state,
        )
    return made


def store_housekeeping(
    ctx: Context, settings: Settings, scheduler: BaseScheduler | None = None
) -> staging.Housekeeping | None:
    """Let go of what gc may, then prune every building's point; with the store busy,
    try again in :data:`HOUSEKEEPING_RETRY` (when a scheduler is given)."""
    try:
        credentials = vault.credentials_from_settings(ctx, settings)
        done = staging.housekeeping(ctx, SYSTEM_ACTOR, credentials=credentials)
    except image_store.StoreBusy as exc:
        minutes = int(HOUSEKEEPING_RETRY.total_seconds() // 60)
        log.warning("store housekeeping put off %d minutes: %s", minutes, exc)
        if scheduler is not None:
            scheduler.add_job(
                store_housekeeping,
                DateTrigger(run_date=ctx.now() + HOUSEKEEPING_RETRY),
                args=[ctx, settings, scheduler],
                id=HOUSEKEEPING_RETRY_JOB,
                replace_existing=True,
            )
        return None
    except OrchestratorError as exc:
        log.warning("store housekeeping skipped: %s", exc)
        return None
    gc = done.gc
    log.info(
        "store housekeeping: %s; %d chunks (%d bytes) removed; %d of %d points pruned",
        f"let go of {', '.join(gc.reclaimed)}" if gc.reclaimed else "no retired entry to let go of",
        gc.removed_chunks,
        gc.removed_bytes,
        len(done.pruned),
        len(done.pruned) + len(done.failed),
    )
    for p in done.pruned:
        if p.removed_images or p.strays or p.temporaries:
            log.info(
                "pruned building %s's point: %d images with %d chunks; %d chunks no index "
                "named and %d temporary files",
                p.building,
                len(p.removed_images),
                p.removed_chunks,
                p.strays,
                p.temporaries,
            )
    for building, reason in done.failed.items():
        log.warning("could not prune building %s's point: %s", building, reason)
    return done


def daily_sunset_check(ctx: Context) -> sunset.DailyCheck:
    result = sunset.run_daily_check(ctx)
    log.info(
        "sunset check: %d reached sunset (%s), %d warned (%s)",
        len(result.sunset),
        ", ".join(result.sunset) or "-",
        len(result.warned),
        ", ".join(result.warned) or "-",
    )
    return result


def build_scheduler(ctx: Context, settings: Settings) -> BackgroundScheduler:
    hour, minute = (int(p) for p in settings.sunset_check_time.split(":"))
    scheduler = BackgroundScheduler(
        timezone=settings.zone,
        jobstores={
            "default": MemoryJobStore(),
            DEPLOYMENTS_STORE: SQLAlchemyJobStore(engine=ctx.engine),
        },
    )
    scheduler.add_listener(on_job_event, EVENT_JOB_EXECUTED)
    scheduler.add_job(
        sweep,
        IntervalTrigger(seconds=int(SWEEP_EVERY.total_seconds())),
        id=SWEEP_JOB,
        replace_existing=True,
        coalesce=True,
        max_instances=1,
    )
    scheduler.add_job(
        prestage,
        IntervalTrigger(seconds=int(PRESTAGE_EVERY.total_seconds())),
        args=[ctx, settings],
        id=PRESTAGE_JOB,
        replace_existing=True,
        coalesce=True,
        max_instances=1,
    )
    scheduler.add_job(
        daily_sunset_check,
        CronTrigger(hour=hour, minute=minute, timezone=settings.zone),
        args=[ctx],
        id=SUNSET_JOB,
        replace_existing=True,
        coalesce=True,
        max_instances=1,
        # A check missed while the service was down runs when it comes back.
        misfire_grace_time=6 * 3600,
    )
    if settings.store_housekeeping_time != "off":
        hour, minute = (int(p) for p in settings.store_housekeeping_time.split(":"))
        scheduler.add_job(
            store_housekeeping,
            CronTrigger(hour=hour, minute=minute, timezone=settings.zone),
            args=[ctx, settings, scheduler],
            id=HOUSEKEEPING_JOB,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=6 * 3600,
        )
    return scheduler


def serve(
    ctx: Context,
    settings: Settings,
    *,
    on_ready: Callable[[datetime | None, datetime | None], None] = lambda _sunset, _store: None,
    stop: threading.Event | None = None,
) -> None:
    """Run until SIGINT/SIGTERM (or ``stop`` is set). ``on_ready`` is told the
    next sunset check and the next store housekeeping (None: not scheduled)."""
    stop = stop or threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    daily_sunset_check(ctx)
    for folder in runs.remove_abandoned_workdirs():
        log.info("removed the working folder of a run stopped with its process: %s", folder)
    for settled in rollout_runner.reconcile(ctx):
        log.warning(
            "after a stop: %s %s %s: %s",
            settled.kind,
            settled.name,
            settled.outcome,
            settled.reason,
        )
    scheduler = build_scheduler(ctx, settings)
    install(Runtime(ctx, settings, scheduler))
    scheduler.start()
    sweep()
    try:
        sunset, housekeeping = (scheduler.get_job(j) for j in (SUNSET_JOB, HOUSEKEEPING_JOB))
        on_ready(
            sunset.next_run_time if sunset else None,
            housekeeping.next_run_time if housekeeping else None,
        )
        stop.wait()
    finally:
        scheduler.shutdown(wait=True)
        install(None)
