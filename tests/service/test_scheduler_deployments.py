"""The service's deployment jobs: APScheduler's SQLAlchemy job store on the project's
database says when, holding only the deployment's id; the rows say what.

The scheduler is started paused, so nothing fires on its own: the tests fire
the job function themselves, at clocks of their choosing.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MAX_INSTANCES, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler

from orchestrator.config import Settings
from orchestrator.db.models import SCHEDULER_JOBS
from orchestrator.remote.ansible import FakePlaybookRunner
from orchestrator.scheduler import service
from orchestrator.services import deployments
from orchestrator.services.deployments import DeploymentSpec
from tests.factories import District
from tests.service.test_deployments import TONIGHT, lincoln  # noqa: F401  (fixture)


@pytest.fixture
def scheduler(lincoln: District, tmp_path: Path) -> Iterator[BackgroundScheduler]:  # noqa: F811
    settings = Settings(data_dir=tmp_path, ssh_key_file=None)
    built = service.build_scheduler(lincoln.ctx, settings)
    built.start(paused=True)
    service.install(service.Runtime(lincoln.ctx, settings, built, runner=FakePlaybookRunner()))
    yield built
    service.install(None)
    built.remove_all_jobs()
    built.shutdown(wait=True)


def _fire(scheduler: BackgroundScheduler, deployment_id: int) -> None:
    """The job firing as the scheduler fires it: the function, then the executed event
    handed to the listeners the service registered."""
    jid = service.job_id(deployment_id)
    retval = service.run_deployment(deployment_id)
    scheduler._dispatch_event(  # the event an executor dispatches after a firing
        JobExecutionEvent(
            EVENT_JOB_EXECUTED, jid, service.DEPLOYMENTS_STORE, TONIGHT, retval=retval
        )
    )


def _stored(d: District) -> list[tuple[str, tuple[object, ...]]]:
    with d.ctx.engine.connect() as conn:
        rows = conn.execute(sa.select(SCHEDULER_JOBS.c.id, SCHEDULER_JOBS.c.job_state)).all()
    return [(job_id, tuple(pickle.loads(state)["args"])) for job_id, state in rows]


def test_a_new_deployment_gets_one_stored_job_that_holds_only_its_id(
    lincoln: District,  # noqa: F811
    scheduler: BackgroundScheduler,
) -> None:
    dep = deployments.create(
        lincoln.ctx,
        lincoln["btc.lincoln"],
        DeploymentSpec(package="scratch@3.29", buildings=("101",)),
    )

    assert service.sweep() == [dep.id]
    assert service.sweep() == []  # it has one now
    assert _stored(lincoln) == [(f"deployment-{dep.id}", (dep.id,))]


def test_the_job_waits_for_the_window_then_carries_the_deployment_out(
    lincoln: District,  # noqa: F811
    scheduler: BackgroundScheduler,
) -> None:
    dep = deployments.create(
        lincoln.ctx,
        lincoln["btc.lincoln"],
        DeploymentSpec(package="scratch@3.29", buildings=("101",), per_building_limit=2),
    )
    service.sweep()

    _fire(scheduler, dep.id)  # 10:00, school hours

    job = scheduler.get_job(service.job_id(dep.id), jobstore=service.DEPLOYMENTS_STORE)
    assert job is not None and job.next_run_time == TONIGHT
    assert deployments.show(lincoln.ctx, lincoln["it.ana"], dep.id).counts["pending"] == 3

    later = TONIGHT + timedelta(minutes=1)
    lincoln.ctx.clock = lambda: later
    _fire(scheduler, dep.id)  # the window is open: two start (the limit), one waits
    job = scheduler.get_job(service.job_id(dep.id), jobstore=service.DEPLOYMENTS_STORE)
    assert job is not None and job.next_run_time == later  # at once again
    for _ in range(3):
        _fire(scheduler, dep.id)

    done = deployments.show(lincoln.ctx, lincoln["it.ana"], dep.id)
    assert done.state == "completed"
    assert done.counts == {"succeeded": 3, "skipped": 1}
    service.sweep()
    assert _stored(lincoln) == []  # an ended deployment keeps no job


def test_a_running_scheduler_fires_batch_after_batch_without_waiting_for_the_heartbeat(
    lincoln: District,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Each tick asks to fire again at once; the job is moved after its firing is
    counted finished, so the next batch is not skipped as 'still running'."""
    settings = Settings(data_dir=tmp_path, ssh_key_file=None)
    running = service.build_scheduler(lincoln.ctx, settings)
    service.install(service.Runtime(lincoln.ctx, settings, running, runner=FakePlaybookRunner()))
    skipped: list[str] = []
    running.add_listener(lambda e: skipped.append(e.job_id), EVENT_JOB_MAX_INSTANCES)
    dep = deployments.create(
        lincoln.ctx,
        lincoln["btc.lincoln"],
        DeploymentSpec(package="scratch@3.29", buildings=("101",), per_building_limit=1),
    )
    later = TONIGHT + timedelta(minutes=1)
    lincoln.ctx.clock = lambda: later  # inside the window: one client per batch
    running.start()
    try:
        service.sweep()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if deployments.show(lincoln.ctx, lincoln["it.ana"], dep.id).state == "completed":
                break
            time.sleep(0.05)
    finally:
        service.install(None)
        running.remove_all_jobs()
        running.shutdown(wait=True)

    done = deployments.show(lincoln.ctx, lincoln["it.ana"], dep.id)
    assert done.state == "completed" and done.counts == {"succeeded": 3, "skipped": 1}
    assert skipped == []
