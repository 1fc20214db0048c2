"""Waiting for the first of several tasks without leaving the others' errors unread.

``asyncio.wait(..., return_when=FIRST_COMPLETED)`` hands back every task that finished,
and more than one often has: the reader and the writer of a WebSocket both fail when it
closes with 1009 or 1007. An exception nobody reads is logged by asyncio as "Task
exception was never retrieved" with a traceback, at some garbage collection later. So
every such wait goes through :func:`first_completed`, which reads the outcome of *every*
finished task, cancels the rest and waits for them (reading theirs too), and
:func:`settle`, which does the last two for a set of tasks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

__all__ = ["errors_of", "first_completed", "settle"]


def errors_of(tasks: Iterable[asyncio.Future[Any]]) -> list[BaseException]:
    """The exceptions of the finished, not cancelled ``tasks``, each marked as read."""
    found: list[BaseException] = []
    for task in tasks:
        if task.done() and not task.cancelled():
            exc = task.exception()  # reading it is what marks it retrieved
            if exc is not None:
                found.append(exc)
    return found


async def settle(tasks: Iterable[asyncio.Future[Any]]) -> list[BaseException]:
    """Cancel ``tasks`` that are still running, wait for all of them and return their
    exceptions (read). A cancellation of the caller meanwhile still propagates, after the
    tasks were cancelled."""
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    return errors_of(tasks)


async def first_completed(
    tasks: Iterable[asyncio.Future[Any]], *, timeout: float | None = None,
    cancel_pending: bool = True,
) -> tuple[set[asyncio.Future[Any]], list[BaseException]]:
    """Wait until one of ``tasks`` finished (or ``timeout``); then read the outcome of
    every finished one and (``cancel_pending``) cancel and wait for the others.

    Returns the finished set and every exception read, in no particular order. If the
    caller is cancelled while waiting, the tasks are cancelled and waited for as well.
    """
    waiting = set(tasks)
    try:
        done, pending = await asyncio.wait(waiting, timeout=timeout,
                                           return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        if cancel_pending:
            await asyncio.shield(settle(waiting))
        raise
    errors = errors_of(done)
    if cancel_pending and pending:
        errors += await settle(pending)
    return done, errors
