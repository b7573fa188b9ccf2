"""Ray for the distributed runs: imported lazily (``import reason2rank`` never needs it), started locally or
joined, and errors raised inside actors handed back as the user's own exception.

A local start (no ``address``) asks Ray for at least ``concurrency * num_cpus + 2`` logical CPUs (and at least
4): Ray Data runs its own small tasks (splitting blocks, collecting results) beside the actors, and with
exactly as many logical CPUs as actors a run waits for a CPU that never frees up. Logical CPUs are a
scheduling budget, not cores: the actors' torch threads are set from ``num_cpus`` per actor.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["RAY_INSTALL_HINT", "actor_pool", "import_ray", "local_cpus", "ray_session", "user_error"]

RAY_INSTALL_HINT = "pip install 'reason2rank[ray]'  (Ray Data: ray[data]>=2.9,<3)"


def import_ray() -> Any:
    """The ``ray`` module with ``ray.data`` loaded, or an ``ImportError`` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data is a separate import)
    except ImportError as e:
        raise ImportError(
            f"reason2rank.distributed runs on Ray Data, which is not installed ({e}); {RAY_INSTALL_HINT}"
        ) from None
    return ray


def actor_pool(ray: Any, size: int, num_cpus: float, num_gpus: float) -> dict[str, Any]:
    """``map_batches`` arguments for a fixed pool of ``size`` actors holding ``num_cpus`` / ``num_gpus`` each
    (``compute=ActorPoolStrategy(size=...)``: ``concurrency=`` is deprecated since Ray 2.51)."""
    args: dict[str, Any] = {"compute": ray.data.ActorPoolStrategy(size=size), "num_cpus": num_cpus}
    if num_gpus:
        args["num_gpus"] = num_gpus
    return args


def local_cpus(concurrency: int, num_cpus: float) -> int:
    """Logical CPUs for a local Ray start that leaves room for Ray Data's own tasks beside the actors."""
    need = int(concurrency * max(num_cpus, 0.0) + 0.999) + 2
    return max(4, os.cpu_count() or 1, need)


@contextlib.contextmanager
def ray_session(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    init_options: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> Iterator[Any]:
    """Use the running Ray (``ray.is_initialized()``), else join ``address`` (``"auto"``, ``ray://host:10001``,
    a GCS address) or start a local one with ``num_cpus`` logical CPUs; a Ray started here is shut down at the
    end. ``progress`` switches Ray Data's progress bars on. Yields the ``ray`` module."""
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, **dict(init_options or {})}
        if address:
            options["address"] = address
        elif num_cpus is not None:
            options.setdefault("num_cpus", num_cpus)
        try:
            ray.init(**options)
        except ConnectionError as e:
            raise ConnectionError(
                f"cannot join the Ray cluster at {address!r} ({e}); start one with `ray start --head` or leave "
                "--address out to start a local one"
            ) from None
        started = True
    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars
    context.enable_progress_bars = bool(progress)
    try:
        yield ray
    finally:
        context.enable_progress_bars = saved
        if started:
            ray.shutdown()


def user_error(e: BaseException) -> BaseException:
    """The exception a UDF raised inside an actor, when ``e`` is Ray's wrapper of one; else ``e``.

    Ray Data re-raises a failing UDF as ``RayTaskError(UserCodeException)`` whose cause chain holds the original
    (a ``ValueError`` naming a bad column, say): that one is what the user should see."""
    seen: set[int] = set()
    current: BaseException | None = e
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        cls = type(current)
        if not (cls.__module__.startswith("ray.") or cls.__name__ in ("RayTaskError", "UserCodeException")):
            return current if current is not e else e
        cause = getattr(current, "cause", None)
        current = cause if isinstance(cause, BaseException) else (current.__cause__ or current.__context__)
    return e
