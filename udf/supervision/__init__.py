"""The parts of :class:`udf.Supervisor` (the front is :mod:`udf.supervisor`).

- ``state``: the lifecycle as a table (``SupervisorState``, its events).
- ``replay_log``: the items since the last snapshot, numbered (pure).
- ``restart_policy``: restart intensity and backoff, the clock passed in (pure).
- ``incarnation``: one agent's life: start, init, restore, replay, reap.
- ``core``: the shared state under one lock, and the put path; ``inlet``: ``point_in``/``batch_in``.
- ``outlet``: ``point_out``/``batch_out``, each agent's channels in turn.
- ``commands`` and ``monitor``: the ``udf-supervisor`` thread and what it is asked to do.
- ``closing``: close()'s deadline and its WARNING when nothing moves.
"""

from .state import SupervisorState

__all__ = ["SupervisorState"]
