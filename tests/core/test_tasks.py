"""TaskOwner.spawn_supervised: a long-running loop that raises is restarted (counted), never lost."""

from __future__ import annotations

import asyncio

import pytest

from agent.core.tasks import TaskOwner, restart_delay_seconds

ROLE = "hybrid/public-consumer"


def restarts(metrics) -> float:
    return metrics.registry.get_sample_value("feedagent_task_restarts_total", {"exchange": "ex", "task": ROLE}) or 0.0


class FlakyLoop:
    """A consumer loop that crashes on its first ``crashes`` runs, then serves until ``finish`` is set."""

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes
        self.runs = 0
        self.serving = asyncio.Event()
        self.finish = asyncio.Event()

    async def run(self) -> str:
        self.runs += 1
        if self.runs <= self.crashes:
            raise ArithmeticError(f"bad value in run {self.runs}")
        self.serving.set()
        await self.finish.wait()
        return "done"


async def test_a_crashing_loop_is_restarted_and_each_restart_counted(metrics):
    owner = TaskOwner("ex/hybrid")
    loop = FlakyLoop(crashes=3)

    task = owner.spawn_supervised("public-consumer", loop.run, initial_delay_seconds=0.001,
                                  on_restart=metrics.task_restarts.labels("ex", ROLE).inc)
    await asyncio.wait_for(loop.serving.wait(), timeout=5)

    assert loop.runs == 4 and restarts(metrics) == 3
    assert owner.running("public-consumer") and task.get_name() == "ex/hybrid/public-consumer"
    loop.finish.set()
    assert await asyncio.wait_for(task, timeout=5) == "done"  # a run that returns ends the task: no restart
    assert restarts(metrics) == 3 and not owner.running("public-consumer")


async def test_cancel_all_stops_a_supervised_task_even_while_it_waits_to_restart(metrics):
    owner = TaskOwner("ex/hybrid")
    loop = FlakyLoop(crashes=1)
    counted = asyncio.Event()

    owner.spawn_supervised("public-consumer", loop.run, initial_delay_seconds=60.0, on_restart=counted.set)
    await asyncio.wait_for(counted.wait(), timeout=5)  # crashed once, now in its 60 s back-off
    await owner.cancel_all(timeout_seconds=5)

    assert owner.names() == [] and loop.runs == 1


async def test_a_broken_restart_callback_does_not_stop_the_restarts():
    owner = TaskOwner("ex/hybrid")
    loop = FlakyLoop(crashes=2)

    def broken() -> None:
        raise RuntimeError("counter is broken")

    owner.spawn_supervised("public-consumer", loop.run, initial_delay_seconds=0.001, on_restart=broken)
    await asyncio.wait_for(loop.serving.wait(), timeout=5)
    assert loop.runs == 3
    await owner.cancel_all(timeout_seconds=5)


@pytest.mark.parametrize("crashes, expected", [(1, 0.1), (2, 0.2), (3, 0.4), (6, 3.2), (7, 5.0), (10_000, 5.0)])
def test_restart_delay_doubles_and_is_capped(crashes, expected):
    assert restart_delay_seconds(crashes, 0.1, 5.0) == pytest.approx(expected)
