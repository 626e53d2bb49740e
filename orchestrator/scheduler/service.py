"""The orchestrator service: the scheduler and its jobs.

At this stage it runs the daily sunset check (at start, then every day at
``sunset_check_time`` in the district's zone). Deployment and web issues add
their jobs and servers to the same process.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from datetime import datetime
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from orchestrator.config import Settings
from orchestrator.services import sunset
from orchestrator.services.context import Context

log = logging.getLogger("orchestrator.scheduler")

SUNSET_JOB = "sunset-daily-check"


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
    scheduler = BackgroundScheduler(timezone=settings.zone)
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
    return scheduler


def serve(
    ctx: Context,
    settings: Settings,
    *,
    on_ready: Callable[[datetime | None], None] = lambda _next: None,
    stop: threading.Event | None = None,
) -> None:
    """Run until SIGINT/SIGTERM (or ``stop`` is set)."""
    stop = stop or threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    daily_sunset_check(ctx)
    scheduler = build_scheduler(ctx, settings)
    scheduler.start()
    try:
        job = scheduler.get_job(SUNSET_JOB)
        on_ready(job.next_run_time if job else None)
        stop.wait()
    finally:
        scheduler.shutdown(wait=True)
