"""Actors on a shared dispatcher keep actor semantics: one message at a time, private state,
tell/ask/stop, lifecycle hooks, failure and restart, and no deadlock on a full inbox."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pykka
import pytest

from actors.base import SUPERVISOR, VigilActor
from actors.directory import ActorDirectory, ActorUnavailable
from actors.dispatcher import Dispatcher
from domain.clock import ManualClock
from domain.messages import ChildFailed, InjectFault, QuerySnapshot
from tests.helpers import wait_until


class Note:
    """A plain message: appended to the recorder's log."""

    def __init__(self, text: str) -> None:
        self.text = text


class Relay:
    """Tell ``target`` ``count`` notes from inside a handler."""

    def __init__(self, target: str, count: int) -> None:
        self.target = target
        self.count = count


class AskPeer:
    def __init__(self, target: str) -> None:
        self.target = target


class Recorder(VigilActor):
    def __init__(self, *, log: list[tuple[str, str, str]], **base: Any) -> None:
        super().__init__(**base)  # handlers() is read here: bound methods only
        self.log = log
        self.busy = False
        self.relayed: list[bool] = []
        self.ask_error: str | None = None

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {Note: self.on_note, Relay: self.on_relay, AskPeer: self.on_ask_peer}

    def on_start(self) -> None:
        self.log.append((self.name, "start", threading.current_thread().name))

    def on_stop(self) -> None:
        self.log.append((self.name, "stop", threading.current_thread().name))

    def on_note(self, note: Note) -> str:
        assert not self.busy, "two messages at once in one actor"
        self.busy = True
        self.log.append((self.name, note.text, threading.current_thread().name))
        self.busy = False
        return f"{self.name}:{note.text}"

    def on_relay(self, relay: Relay) -> None:
        for index in range(relay.count):
            self.relayed.append(self.directory.tell(relay.target, Note(f"r{index}")))

    def on_ask_peer(self, ask: AskPeer) -> None:
        try:
            self.directory.ask(ask.target, QuerySnapshot(), timeout_s=5)
        except ActorUnavailable as error:
            self.ask_error = str(error)

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "relayed": list(self.relayed), "ask_error": self.ask_error}


class FailureSink(VigilActor):
    """Stands in for the supervisor: keeps the ChildFailed reports."""

    def __init__(self, *, failures: list[ChildFailed], **base: Any) -> None:
        self.failures = failures
        super().__init__(**base)

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {ChildFailed: self.failures.append}


@pytest.fixture
def dispatcher() -> Iterator[Dispatcher]:
    shared = Dispatcher("test")
    shared.start()
    yield shared
    pykka.ActorRegistry.stop_all(block=True, timeout=10)
    assert shared.stop(timeout_s=10)


@pytest.fixture
def directory() -> ActorDirectory:
    return ActorDirectory()


def start(
    directory: ActorDirectory,
    dispatcher: Dispatcher | None,
    name: str,
    log: list[tuple[str, str, str]],
    *,
    capacity: int = 100,
) -> pykka.ActorRef[Any]:
    ref = Recorder.start(
        name=name,
        clock=ManualClock(),
        directory=directory,
        mailbox_capacity=capacity,
        dispatcher=dispatcher,
        log=log,
    )
    directory.register(name, ref)
    return ref


def test_actors_share_one_thread_and_take_messages_in_order(
    dispatcher: Dispatcher, directory: ActorDirectory
) -> None:
    log: list[tuple[str, str, str]] = []
    first = start(directory, dispatcher, "a", log)
    second = start(directory, dispatcher, "b", log)
    for index in range(50):
        first.tell(Note(str(index)))
        second.tell(Note(str(index)))
    # An ask from another thread is answered after everything told before it.
    assert first.ask(Note("last"), timeout=5) == "a:last"
    assert second.ask(Note("last"), timeout=5) == "b:last"
    threads = {thread for _name, _text, thread in log}
    assert threads == {"dispatcher-test"}
    for name in ("a", "b"):
        texts = [text for who, text, _ in log if who == name]
        assert texts == ["start", *map(str, range(50)), "last"]


def test_turns_alternate_between_busy_actors(
    dispatcher: Dispatcher, directory: ActorDirectory
) -> None:
    log: list[tuple[str, str, str]] = []
    first = start(directory, dispatcher, "a", log)
    second = start(directory, dispatcher, "b", log)
    first.ask(Note("ready"), timeout=5)
    second.ask(Note("ready"), timeout=5)
    # Hold the dispatcher thread (in an idle step) while both inboxes fill, so the order of
    # the turns is the dispatcher's choice, not the order of the tells.
    held, release = threading.Event(), threading.Event()

    def hold_thread() -> bool:
        held.set()
        release.wait(5)
        return False

    dispatcher.run_when_idle(hold_thread)
    assert held.wait(5)
    for index in range(3):
        first.tell(Note(str(index)))
    for index in range(3):
        second.tell(Note(str(index)))
    release.set()
    first.ask(Note("end"), timeout=5)
    second.ask(Note("end"), timeout=5)
    order = [f"{who}{text}" for who, text, _ in log if text not in ("start", "ready")]
    assert order[:6] == ["a0", "b0", "a1", "b1", "a2", "b2"]


def test_a_tell_to_a_full_inbox_on_the_same_dispatcher_fails_at_once(
    dispatcher: Dispatcher, directory: ActorDirectory
) -> None:
    """Waiting for room would deadlock: only the waiting thread could make it."""
    log: list[tuple[str, str, str]] = []
    sender = start(directory, dispatcher, "sender", log)
    start(directory, dispatcher, "receiver", log, capacity=5)
    started = time.monotonic()
    sender.tell(Relay("receiver", 8))
    state = wait_until(
        lambda: (s := sender.ask(QuerySnapshot(), timeout=5))["relayed"] and s,
        message="the relay ran",
    )
    # The receiver cannot run while the sender's handler runs: five fit, three are refused.
    assert state["relayed"] == [True] * 5 + [False] * 3
    assert time.monotonic() - started < 2.0, "the refused tells waited for room"
    assert directory.dropped_tells == 3
    wait_until(lambda: len([t for w, t, _ in log if w == "receiver"]) == 6, message="5 notes")
    texts = [text for who, text, _ in log if who == "receiver" and text != "start"]
    assert texts == ["r0", "r1", "r2", "r3", "r4"]


def test_a_tell_from_another_thread_still_waits_for_room(directory: ActorDirectory) -> None:
    """Backpressure for producers off the dispatcher (the feed pump) is unchanged."""
    shared = Dispatcher("held")
    log: list[tuple[str, str, str]] = []
    receiver = start(directory, shared, "receiver", log, capacity=2)
    receiver.tell(Note("1"))
    receiver.tell(Note("2"))
    blocked = threading.Event()
    done = threading.Event()

    def produce() -> None:
        blocked.set()
        receiver.tell(Note("3"))  # waits until the dispatcher runs and makes room
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    assert blocked.wait(5)
    assert not done.wait(0.2), "a full inbox took a third message from another thread"
    shared.start()
    assert done.wait(5)
    producer.join(5)
    assert receiver.ask(Note("end"), timeout=5) == "receiver:end"
    receiver.stop()
    assert shared.stop(timeout_s=10)


def test_an_actor_asking_a_peer_on_its_own_dispatcher_is_refused_not_deadlocked(
    dispatcher: Dispatcher, directory: ActorDirectory
) -> None:
    log: list[tuple[str, str, str]] = []
    asker = start(directory, dispatcher, "asker", log)
    start(directory, dispatcher, "peer", log)
    started = time.monotonic()
    asker.tell(AskPeer("peer"))
    state = wait_until(
        lambda: (s := asker.ask(QuerySnapshot(), timeout=5))["ask_error"] and s,
        message="the ask was refused",
    )
    assert state["ask_error"].startswith("ACTOR_SAME_DISPATCHER: actor=peer")
    assert time.monotonic() - started < 2.0


def test_an_actor_on_its_own_thread_may_ask_one_on_the_dispatcher(
    dispatcher: Dispatcher, directory: ActorDirectory
) -> None:
    log: list[tuple[str, str, str]] = []
    asker = start(directory, None, "asker", log)
    start(directory, dispatcher, "peer", log)
    asker.tell(AskPeer("peer"))
    state = asker.ask(QuerySnapshot(), timeout=5)
    assert state["ask_error"] is None


def test_a_failing_tell_stops_only_that_actor_and_reports_it(
    dispatcher: Dispatcher, directory: ActorDirectory
) -> None:
    log: list[tuple[str, str, str]] = []
    failures: list[ChildFailed] = []
    supervisor = FailureSink.start(
        name=SUPERVISOR, clock=ManualClock(), directory=directory, failures=failures
    )
    directory.register(SUPERVISOR, supervisor)
    doomed = start(directory, dispatcher, "doomed", log)
    survivor = start(directory, dispatcher, "survivor", log)
    doomed.tell(InjectFault(detail="drill"))
    doomed.tell(Note("after"))
    wait_until(lambda: failures, message="ChildFailed reported")
    assert failures[0].name == "doomed" and "drill" in failures[0].error
    assert failures[0].incarnation == doomed.actor_urn
    wait_until(lambda: not doomed.is_alive(), message="the failed actor is dead")
    with pytest.raises(pykka.ActorDeadError):
        doomed.ask(Note("x"), timeout=5)
    assert survivor.ask(Note("alive"), timeout=5) == "survivor:alive"
    # A new incarnation under the same name (what the supervisor does) runs on the same thread.
    reborn = start(directory, dispatcher, "doomed", log)
    assert reborn.ask(Note("again"), timeout=5) == "doomed:again"
    assert ("doomed", "after", "dispatcher-test") not in log


def test_an_ask_that_raises_goes_back_to_the_asker_and_the_actor_lives(
    dispatcher: Dispatcher, directory: ActorDirectory
) -> None:
    log: list[tuple[str, str, str]] = []
    actor = start(directory, dispatcher, "a", log)
    with pytest.raises(Exception, match="asked"):
        actor.ask(InjectFault(detail="asked"), timeout=5)
    assert actor.ask(Note("still"), timeout=5) == "a:still"


def test_stop_runs_on_stop_on_the_dispatcher_and_fails_later_asks(
    dispatcher: Dispatcher, directory: ActorDirectory
) -> None:
    log: list[tuple[str, str, str]] = []
    actor = start(directory, dispatcher, "a", log)
    actor.tell(Note("1"))
    assert actor.stop(block=True, timeout=5)
    assert log[-1] == ("a", "stop", "dispatcher-test")
    assert [text for _, text, _ in log] == ["start", "1", "stop"]
    with pytest.raises(pykka.ActorDeadError):
        actor.ask(Note("late"), timeout=5)
    assert directory.tell("a", Note("late")) is False


def test_a_failing_on_start_is_reported_and_stops_the_actor(
    dispatcher: Dispatcher, directory: ActorDirectory
) -> None:
    failures: list[ChildFailed] = []
    supervisor = FailureSink.start(
        name=SUPERVISOR, clock=ManualClock(), directory=directory, failures=failures
    )
    directory.register(SUPERVISOR, supervisor)

    class BadStart(Recorder):
        def on_start(self) -> None:
            raise RuntimeError("cannot come up")

    ref = BadStart.start(
        name="bad", clock=ManualClock(), directory=directory, dispatcher=dispatcher, log=[]
    )
    wait_until(lambda: failures, message="ChildFailed for the failed start")
    assert "cannot come up" in failures[0].error
    wait_until(lambda: not ref.is_alive(), message="the actor is dead")


def test_the_idle_step_runs_only_when_no_actor_has_work(
    dispatcher: Dispatcher, directory: ActorDirectory
) -> None:
    log: list[tuple[str, str, str]] = []
    actor = start(directory, dispatcher, "a", log)
    steps: list[int] = []
    finished = threading.Event()

    def step() -> bool:
        # Each step sends two notes; they must both be handled before the next step.
        handled = len([text for who, text, _ in log if who == "a" and text != "start"])
        steps.append(handled)
        if len(steps) == 5:
            finished.set()
            return False
        actor.tell(Note("x"))
        actor.tell(Note("y"))
        return True

    dispatcher.run_when_idle(step)
    assert finished.wait(5)
    assert steps == [0, 2, 4, 6, 8]
    assert not dispatcher.is_idle_step_installed
