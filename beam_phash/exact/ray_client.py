"""The client of the Ray backend: the one place that creates bucket actors (``ray_actor``) and
calls ``.remote()`` on them (:func:`get_or_create_actor`, :class:`RayDedupBackend`).

Buckets and actors. ``num_buckets`` is the routing (a hash goes to the bucket its own bits
choose) and the on-disk layout (one directory per bucket); ``num_actors`` processes host them,
actor ``a`` every bucket ``b`` with ``b % num_actors == a``. The default, one actor per CPU of the
cluster and at most one per bucket, keeps a small job on a laptop from starting 16 processes on
two cores. A state directory is read by any number of actors, so it carries over when the
number changes.

Actor faults. With a ``state_dir`` each bucket logs what it stores before answering and
snapshots to Parquet (``store``); Ray restarts a dead actor, which reloads its buckets from
disk, and retries the calls that were in flight, so the pipeline's output is as if nothing
happened. Without one, the state of a dead actor is gone: the calls fail with a
:class:`BackendError` naming its buckets, and they are never silently recreated empty (the
backend records in Ray's KV store which actors it created).
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import re
from typing import Dict, List, Optional, Sequence

import numpy as np
import ray

from beam_phash.exact import ray_cluster, ray_private
from beam_phash.exact.ray_actor import BucketActor, bucket_label
from beam_phash.records import keeper_label
from beam_phash.routing import bucket_of


def owner_digests(owners: Sequence[str]) -> np.ndarray:
    """64-bit owner ids: the first 8 bytes of BLAKE2b of each owner string (a surrogate with its
    prefix, so that no id is digested as an id-less record is). Two different owners collide with
    probability 2^-64 per pair, and only matter when they also share a hash."""
    return np.array([int.from_bytes(hashlib.blake2b(o.encode(), digest_size=8).digest(),
                                    "little") for o in owners], dtype="<u8")


_COLOURS = re.compile(r"\x1b\[[0-9;]*m")
_RAISED = re.compile(r"^(?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*(?:Error|Exception)): (.+)$")


def failure(e: BaseException) -> str:
    """Why a call to a bucket actor failed, in one line: the error raised in the actor (which
    Ray's error carries, for a failed creation only inside its text, after the traceback),
    else Ray's own, without the terminal colours Ray puts in it."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException) and not isinstance(cause, ray.exceptions.RayError):
        return f"{type(cause).__name__}: {' '.join(str(cause).split())}"
    text = _COLOURS.sub("", str(e))
    raised = [m for m in map(_RAISED.match, text.splitlines()) if m]
    if raised:
        return f"{raised[-1].group(1)}: {raised[-1].group(2).strip()}"
    return f"{type(e).__name__}: {' '.join(text.split())}"


class PendingClaims:
    """Claims of one batch that were sent to the bucket actors and not collected yet."""

    def __init__(self, count: int):
        self.calls: Dict[object, tuple] = {}
        self.result: List[Optional[str]] = [None] * count
        #: Per claim: whether its keeper was kept by an earlier run (in the committed state).
        self.earlier = np.zeros(count, dtype=bool)


class BackendError(RuntimeError):
    """A bucket actor is unreachable or died; the message names its buckets."""


def buckets_label(backend_name: str, buckets: Sequence[int]) -> str:
    """How messages name the buckets of one actor call: "bucket 3 of dedup backend 'x'" or
    "buckets 1, 3 of dedup backend 'x'"."""
    if len(buckets) == 1:
        return bucket_label(backend_name, buckets[0])
    return f"buckets {', '.join(map(str, buckets))} of dedup backend {backend_name!r}"


def hosted_buckets(actor: int, num_actors: int, num_buckets: int) -> List[int]:
    """The buckets actor ``actor`` of ``num_actors`` hosts: every bucket b with b % num_actors == actor."""
    return list(range(actor, num_buckets, num_actors))


def default_num_actors(num_buckets: int) -> int:
    """One actor per CPU of the cluster, at most one per bucket: the actors' processes then never
    outnumber the cores that run them (actors reserve no CPU: ``num_cpus=0``)."""
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(1, min(num_buckets, cpus))


def actor_name(backend_name: str, actor: int, num_actors: int, state_dir: Optional[str] = None) -> str:
    """The actor's name; with a state directory it also names the directory (by digest), so a
    live backend of the same name without it, or with another, is never mistaken for it."""
    return f"{backend_name}.actor-{actor:05d}-of-{num_actors:05d}{_state_tag(state_dir)}"


def _state_tag(state_dir: Optional[str]) -> str:
    """What tells backends of one name apart: their state directory, by digest."""
    return ".state-" + hashlib.blake2b(state_dir.encode(), digest_size=6).hexdigest() if state_dir else ""


MAX_RESTARTS = 10


def _created_key(backend_name: str, actor: int) -> bytes:
    """Marks the actors of a backend without a state directory once created (see
    :func:`get_or_create_actor`)."""
    return f"{backend_name}/actor-{actor:05d}".encode()


def _layout_key(backend_name: str, state_dir: Optional[str]) -> bytes:
    return f"{backend_name}{_state_tag(state_dir)}/layout".encode()


def _width_key(backend_name: str, state_dir: Optional[str]) -> bytes:
    return f"{backend_name}{_state_tag(state_dir)}/width".encode()


def pin_width(backend_name: str, width: int, state_dir: Optional[str] = None,
              namespace: str = ray_cluster.NAMESPACE) -> None:
    """Record the backend's hash width (bytes) with its first claim; ValueError for a claim of
    another width (another algorithm or hash size: its hashes would never match the backend's,
    and a bucket it reached first would hold both)."""
    key = _width_key(backend_name, state_dir)
    existed = ray_private.kv_put(key, str(width).encode(), namespace, overwrite=False)
    have = int((ray_private.kv_get(key, namespace) or str(width).encode()).decode()) if existed else width
    if have != width:
        raise ValueError(f"dedup backend {backend_name!r} holds {have}-byte hashes, this pipeline claims "
                         f"{width}-byte ones: reuse a backend with its algorithm and hash size")


def backend_layout(backend_name: str, num_buckets: int, num_actors: Optional[int],
                   state_dir: Optional[str] = None, namespace: str = ray_cluster.NAMESPACE) -> int:
    """The number of actors of a backend: fixed by whichever client comes first (``num_actors``,
    or :func:`default_num_actors`), recorded in Ray's KV store, and read there by every other
    client, so that every worker, and every later pipeline on a named backend, routes a bucket to
    the same actor. A client with another ``num_buckets``, or asking for another ``num_actors``,
    is refused: it would miss the hashes the backend holds."""
    key = _layout_key(backend_name, state_dir)
    proposed = f"{num_buckets}:{num_actors or default_num_actors(num_buckets)}".encode()
    existed = ray_private.kv_put(key, proposed, namespace, overwrite=False)
    recorded = (ray_private.kv_get(key, namespace) or proposed) if existed else proposed
    have_buckets, have_actors = (int(v) for v in recorded.decode().split(":"))
    if have_buckets != num_buckets:
        raise ValueError(f"dedup backend {backend_name!r} has num_buckets={have_buckets}, this "
                         f"pipeline asks for {num_buckets}: reuse a backend with its num_buckets")
    if num_actors is not None and have_actors != num_actors:
        raise ValueError(f"dedup backend {backend_name!r} runs {have_actors} actors, this pipeline "
                         f"asks for num_actors={num_actors}: reuse a backend with its num_actors")
    return have_actors


def _named_actor(name: str, namespace: str):
    """The actor of that name, or None when no live actor has it."""
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None


def get_or_create_actor(backend_name: str, actor: int, num_actors: int, num_buckets: int,
                        state_dir: Optional[str] = None, namespace: str = ray_cluster.NAMESPACE,
                        run: Optional[str] = None):
    """The one way to obtain a bucket actor: by name, in a namespace, created if missing.

    Detached, so the actor outlives the Beam worker that happened to create it; the pipeline
    releases it at the end (unless the backend was named by the user, see ImagePhashDedup).
    With a ``state_dir`` Ray restarts a dead actor (which reloads its buckets from disk) and
    retries its calls. Without one, an actor that existed and died is lost, and asking for it
    again raises :class:`BackendError` instead of handing out empty buckets. ``run``: the run
    whose claims the actor logs to the state directory, committed by
    :meth:`RayDedupBackend.commit` (None: committed as they are logged).
    """
    name = actor_name(backend_name, actor, num_actors, state_dir)
    buckets = hosted_buckets(actor, num_actors, num_buckets)
    if state_dir is None:
        found = _named_actor(name, namespace)
        if found is None and ray_private.kv_get(_created_key(backend_name, actor), namespace):
            # The mark is set only once the actor's name resolves (below). Another client may
            # have created the actor and set it between the look-up above and this read, so
            # look once more: only an actor that is still missing has died.
            found = _named_actor(name, namespace)
            if found is None:
                raise BackendError(
                    f"{buckets_label(backend_name, buckets)} {'was' if len(buckets) == 1 else 'were'} "
                    "lost: their actor died and "
                    "the hashes it held died with it. Rerun the pipeline; give it a state_dir "
                    "(--state) to survive actor faults")
        if found is not None:
            return found
    handle = BucketActor.options(
        name=name,
        namespace=namespace,
        get_if_exists=True,
        lifetime="detached",
        num_cpus=0,
        # Restarts are bounded: an actor that dies again and again (say, OOM while reloading)
        # ends in a BackendError instead of a pipeline waiting for ever.
        max_restarts=MAX_RESTARTS if state_dir else 0,
        max_task_retries=-1 if state_dir else 0,
    ).remote(backend_name, buckets, state_dir, run=run)
    if state_dir is None:
        # A named actor is registered before .remote() returns; check that its name resolves
        # before marking it created, so that a client finding the mark can tell "died" from
        # "being created".
        ray.get_actor(name, namespace=namespace)
        ray_private.kv_put(_created_key(backend_name, actor), b"1", namespace)
    return handle


class RayDedupBackend:
    """Client of one backend (``backend_name``) of ``num_buckets`` buckets hosted by
    ``num_actors`` actors (None: fixed by the first client, see :func:`backend_layout`).

    Picklable configuration; :meth:`connect` (called from ``DoFn.setup``) joins the cluster.
    ``run``: with a ``state_dir``, the claims are this run's, and a later load replays them only
    once :meth:`commit` was called (None: every answered claim is committed).
    """

    def __init__(self, address: str, backend_name: str, num_buckets: int, max_in_flight: int = 16,
                 state_dir: Optional[str] = None, num_actors: Optional[int] = None,
                 run: Optional[str] = None):
        self.address = address
        self.backend_name = backend_name
        self.num_buckets = num_buckets
        self.max_in_flight = max_in_flight
        self.state_dir = state_dir
        self.num_actors = num_actors
        self.run = run
        # The embedded Ray that the launcher is still starting: wait for it instead of failing fast.
        self.starting = ray_cluster.is_starting(address)
        self._layout: Optional[int] = None  # the backend's number of actors, once connected
        self._actors: Dict[int, object] = {}
        self._width: Optional[int] = None  # the hash width this client checked, once it claims

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_actors"] = {}
        state["_layout"] = None
        state["_width"] = None
        return state

    def connect(self, timeout: float = 30.0) -> "RayDedupBackend":
        """Join the cluster (waiting up to ``timeout`` s for an address nobody answers at)."""
        ray_cluster.connect(self.address, timeout=timeout, starting=self.starting)
        if self._layout is None:
            self._layout = backend_layout(self.backend_name, self.num_buckets, self.num_actors, self.state_dir)
        return self

    def connect_soon(self) -> "concurrent.futures.Future":
        """:meth:`connect` and :meth:`start_actors` in a background thread: the caller hashes
        meanwhile, and waits on the future before its first claim (which raises what connecting
        raised)."""
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="beam-phash-ray-connect")
        future = pool.submit(lambda: self.connect().start_actors())
        pool.shutdown(wait=False)
        return future

    @property
    def actors(self) -> int:
        """The backend's number of actors (after :meth:`connect`)."""
        if self._layout is None:
            raise RuntimeError("RayDedupBackend.connect() first")
        return self._layout

    def _actor(self, actor: int):
        handle = self._actors.get(actor)
        if handle is None:
            handle = self._actors[actor] = get_or_create_actor(
                self.backend_name, actor, self.actors, self.num_buckets, self.state_dir, run=self.run)
        return handle

    def claim(self, hashes: Sequence[bytes], owners: Sequence[str]) -> List[Optional[str]]:
        """For each hash: None where this owner is its keeper (its first claimant, or a retry of
        it), else the keeper's id ("" where the keeper had no id)."""
        return self.collect(self.submit(hashes, owners))

    def submit(self, hashes: Sequence[bytes], owners: Sequence[str]) -> "PendingClaims":
        """Send a batch's claims and return without waiting for them (unless more than
        ``max_in_flight`` calls are out): one call per actor the batch touches."""
        pending = PendingClaims(len(owners))
        if not hashes:
            return pending
        width = len(hashes[0])
        if self._width != width:
            pin_width(self.backend_name, width, self.state_dir)
            self._width = width
        digests = owner_digests(owners)
        buckets = bucket_of(hashes, self.num_buckets)
        actors = buckets % self.actors
        order = np.argsort(actors, kind="stable")
        bounds = np.flatnonzero(np.diff(actors[order])) + 1
        for idxs in np.split(order, bounds):
            if len(pending.calls) >= self.max_in_flight:
                self._collect(pending, num_returns=1)
            actor = int(actors[idxs[0]])
            ref = self._actor(actor).claim.remote(
                b"".join(hashes[i] for i in idxs), width, digests[idxs].tobytes(),
                [keeper_label(owners[i]) for i in idxs], buckets[idxs].astype("<u4").tobytes())
            pending.calls[ref] = (actor, idxs)
        return pending

    def collect(self, pending: "PendingClaims") -> List[Optional[str]]:
        """Wait for a submitted batch; the answers of :meth:`claim`, in input order (and, in
        ``pending.earlier``, which keepers an earlier run kept)."""
        self._collect(pending, num_returns=len(pending.calls))
        return pending.result

    def _collect(self, pending: "PendingClaims", num_returns: int) -> None:
        if not pending.calls:
            return
        done, _ = ray.wait(list(pending.calls), num_returns=num_returns)
        for ref in done:
            actor, idxs = pending.calls.pop(ref)
            try:
                answer = ray.get(ref)
            except ray.exceptions.RayError as e:
                buckets = hosted_buckets(actor, self.actors, self.num_buckets)
                raise BackendError(f"{buckets_label(self.backend_name, buckets)} failed: {failure(e)}") from e
            if not (isinstance(answer, tuple) and len(answer) == 2 and isinstance(answer[1], bytes)):
                # (Actors started by the code from 6f21ad6 to before 9485bda answer with the keepers alone.)
                buckets = hosted_buckets(actor, self.actors, self.num_buckets)
                state = "" if self.state_dir is None else f", state_dir={self.state_dir!r}"
                raise BackendError(
                    f"{buckets_label(self.backend_name, buckets)} answered as another version of beam-phash "
                    "does: its actors were started by that version. Release the backend "
                    f"(RayDedupBackend(address, {self.backend_name!r}, {self.num_buckets}{state}).connect()"
                    ".release(), from beam_phash.exact.ray_client) and rerun: with a state_dir, it reloads "
                    "what it held; without one, what it held is gone")
            keepers, earlier = answer
            for i, keeper in zip(idxs, keepers):
                pending.result[i] = keeper
            pending.earlier[idxs] = np.frombuffer(earlier, dtype=np.uint8).astype(bool)

    def stats(self) -> List[Dict[str, int]]:
        """Per bucket, in bucket order: hashes held, seen-set bytes, and the resident memory and
        pid of the actor process hosting it."""
        per_actor = ray.get([self._actor(a).stats.remote() for a in range(self.actors)])
        return sorted((s for stats in per_actor for s in stats), key=lambda s: s["bucket"])

    def start_actors(self) -> "RayDedupBackend":
        """Create every actor now, without waiting for them: their processes then start while
        Beam starts the pipeline, instead of when the first hashes arrive."""
        for actor in range(self.actors):
            self._actor(actor)
        return self

    def _existing(self) -> Dict[int, object]:
        """The actors that exist now (without creating any)."""
        handles = {actor: _named_actor(actor_name(self.backend_name, actor, self.actors, self.state_dir),
                                       ray_cluster.NAMESPACE) for actor in range(self.actors)}
        return {actor: h for actor, h in handles.items() if h is not None}  # None: never created, or lost

    def snapshot(self) -> List[str]:
        """Snapshot every bucket to the state directory (no-op without one); the paths written."""
        if not self.state_dir:
            return []
        refs = {actor: handle.snapshot.remote() for actor, handle in self._existing().items()}
        paths = []
        for actor, ref in refs.items():
            try:
                paths.extend(ray.get(ref))
            except ray.exceptions.RayError as e:
                buckets = hosted_buckets(actor, self.actors, self.num_buckets)
                raise BackendError(f"{buckets_label(self.backend_name, buckets)} could not snapshot: "
                                   f"{type(e).__name__}: {e}") from e
        return paths

    def commit(self) -> None:
        """Commit this run's claims to the state directory (after :meth:`snapshot`): later loads
        replay them. A no-op without a state directory or a run. Idempotent."""
        if self.state_dir and self.run:
            from beam_phash.exact.store import commit_run  # pyarrow: only for a state_dir

            commit_run(self.state_dir, self.run)

    def committed(self) -> bool:
        """Whether this run's claims were committed (:meth:`commit`). False without a state
        directory or a run."""
        if not (self.state_dir and self.run):
            return False
        from beam_phash.exact.store import committed_runs  # pyarrow: only for a state_dir

        return self.run in committed_runs(self.state_dir)

    def release(self) -> None:
        """Kill this backend's actors (their state is gone, except what was snapshotted) and
        forget its layout."""
        for handle in self._existing().values():
            ray.kill(handle, no_restart=True)
        if not self.state_dir:  # (a backend of this name without a state directory has the marks)
            for actor in range(self.actors):
                ray_private.kv_del(_created_key(self.backend_name, actor), ray_cluster.NAMESPACE)
        ray_private.kv_del(_layout_key(self.backend_name, self.state_dir), ray_cluster.NAMESPACE)
        ray_private.kv_del(_width_key(self.backend_name, self.state_dir), ray_cluster.NAMESPACE)
        self._actors.clear()
