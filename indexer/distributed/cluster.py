"""Ray itself: joining a cluster (or starting Ray on this machine), and its errors in a user's words."""

from __future__ import annotations

import logging
import re
import socket
from typing import Any

CONNECT_TIMEOUT_S = 5.0  # to find out that nothing listens at a cluster address


class DistributedError(Exception):
    """What a user must change: no Ray, no cluster at that address, a job that failed on the cluster."""


class ClusterUnreachable(DistributedError):
    """Nothing answers at a cluster address, or Ray would not join it."""

    def __init__(self, address: str, problem: str) -> None:
        self.address, self.problem = address, problem
        super().__init__(f"cannot join the Ray cluster at {address}: {problem}")

    def __reduce__(self):
        return type(self), (self.address, self.problem)


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise DistributedError(
            f"Ray is not installed ({exc}); install it with: pip install 'vlsearch[distributed]' "
            "(the same version on every node of the cluster)"
        ) from None
    return ray


def connect(address: str = "auto", cpus: int | None = None) -> tuple[Any, bool, str]:
    """(ray, started_here, description): join the cluster at `address`, or start a local Ray instance. `auto`:
    the running cluster (RAY_ADDRESS, or one started here by `ray start`), else a new local instance; `local`: a
    new local instance of `cpus` CPUs; else a cluster address (ray://HOST:10001, HOST:6379)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False, describe_cluster(ray)
    kwargs = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    if address == "local":
        ray.init(num_cpus=cpus, **kwargs)
        return ray, True, describe_cluster(ray)
    if address == "auto":
        try:
            ray.init(address="auto", **kwargs)
        except (ConnectionError, RuntimeError, ValueError):
            ray.init(num_cpus=cpus, **kwargs)
        return ray, True, describe_cluster(ray)
    problem = unreachable(address)
    if problem:  # ray.init would retry for many minutes before saying so
        raise ClusterUnreachable(address, problem)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterUnreachable(address, str(exc)) from None
    return ray, True, describe_cluster(ray)


def unreachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why nothing can answer at a cluster address (HOST:PORT, or ray://HOST:PORT for Ray Client), or None when
    something accepts a connection there."""
    hostport = address.removeprefix("ray://").rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        return "not an address: give HOST:PORT (the head's GCS, 6379 by default) or ray://HOST:10001"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return None
    except OSError as exc:
        return f"nothing answers at {host}:{port} ({exc.strerror or exc})"


def describe_cluster(ray: Any) -> str:
    res = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return f"{nodes} node(s), {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs"


def cause(exc: Exception) -> str:
    """The user-facing line of a Ray error: the worker's own exception ("ValueError: ..."), not Ray's wrapping."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    ours = [line for line in lines if re.match(r"^(?:[a-z_]\w*\.)*[A-Z]\w*: ", line)  # module.path.ErrorClass: ...
            and not line.startswith(("ray.", "UserCodeException"))]
    return (ours or lines or [type(exc).__name__])[0]
