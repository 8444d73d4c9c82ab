"""Run a model over many sequences on a Dask cluster (extra ``tinyrnn[dask]``).

    import dask.bag as db, tinyrnn, tinyrnn.dask
    from distributed import Client
    client = Client()                               # a LocalCluster; Client("tcp://host:8786") for a real one
    seqs = db.from_sequence(list_of_arrays, npartitions=16)
    outs = tinyrnn.dask.run(model, seqs, reduce="mean")   # lazy Bag, same order as seqs
    results = outs.compute()

Each partition runs with ``tinyrnn.batching.run_many``: similar lengths batched together,
answers equal to ``model.run(seq)`` bit for bit. The model travels as one graph key holding
its ``.trnn`` bytes (``ModelRef``): the scheduler sends it to each worker once per job,
every task on that worker reads the same copy, and a worker process builds each distinct
model (by sha256 of its bytes) once, so its prepared weights and compiled kernels serve
every later task and job. Importing this module imports no Dask; the functions that need it
raise ``MissingDependencyError`` when it is missing.
"""

from __future__ import annotations

import collections
import hashlib
import threading
from typing import Any

import numpy as np

from .batching import bits_per_character, check_batch_size, check_reduce, run_many
from .errors import ClusterError, InputError, MissingDependencyError

__all__ = ["ModelRef", "run", "run_array", "score", "line_bits", "run_frame", "score_frame", "run_files", "files",
           "connect", "compute", "worker_stats", "WORKER_ENV", "LOCAL_CLUSTER_CONFIG"]

_INSTALL = "pip install 'tinyrnn[dask]'"


def _require(*modules: str):
    """Import ``modules`` or raise ``MissingDependencyError`` saying how to install them."""
    import importlib

    try:
        return [importlib.import_module(m) for m in modules]
    except ImportError as e:
        raise MissingDependencyError(f"tinyrnn.dask needs {' and '.join(modules)}, which could not be imported "
                                     f"({e}); install them with: {_INSTALL}") from None


# --- the model on the workers ------------------------------------------------------------

_CACHE_SIZE = 4  # distinct models a worker process keeps built (LRU); each is its weights' size
_models: collections.OrderedDict[str, Any] = collections.OrderedDict()
_lock = threading.Lock()
_stats = {"models_received": 0, "models_built": 0, "tasks": 0, "tasks_that_compiled": 0}


class ModelRef:
    """A model packed for the trip to workers: its ``.trnn`` bytes and their sha256.

    Pickles as the bytes alone (the scheduler never builds the model); ``.model`` builds it
    on first use, once per process per distinct model, and shares it with every task.
    Dask names the graph key by the digest, so the same model in two jobs is the same key.
    """

    __slots__ = ("data", "digest", "_model")

    def __init__(self, model=None, *, data: bytes | None = None, digest: str | None = None):
        from .format import dumps

        if model is not None:
            data = dumps(model)
        self.data = data
        self.digest = digest or hashlib.sha256(data).hexdigest()
        self._model = model

    def __reduce__(self):
        return (_restore_ref, (self.data, self.digest))

    def __dask_tokenize__(self):
        return ("tinyrnn.Model", self.digest)

    @property
    def model(self):
        """The model, built from the bytes at most once in this process."""
        if self._model is None:
            self._model = _cached_model(self.digest, self.data)
        return self._model

    def __repr__(self):
        return f"<ModelRef sha256:{self.digest[:12]} {len(self.data):,} bytes>"


def _restore_ref(data: bytes, digest: str) -> ModelRef:
    with _lock:
        _stats["models_received"] += 1
    return ModelRef(data=data, digest=digest)


def _cached_model(digest: str, data: bytes):
    from .format import loads

    with _lock:
        model = _models.get(digest)
        if model is not None:
            _models.move_to_end(digest)
            return model
        # the digest names what we were sent; a model is only built from bytes that match it
        if hashlib.sha256(data).hexdigest() != digest:
            raise InputError(f"model bytes do not match their sha256 {digest[:12]}...: damaged in transit")
        model = loads(data)
        _models[digest] = model
        _stats["models_built"] += 1
        while len(_models) > _CACHE_SIZE:
            _models.popitem(last=False)
        return model


def _kernel_signatures() -> int:
    """Compiled (or cache-loaded) kernel signatures in this process: grows only when Numba
    compiles or loads machine code."""
    from .backends import cpu_kernels

    return sum(len(getattr(f, "overloads", ())) for f in vars(cpu_kernels).values()
               if hasattr(f, "overloads") and hasattr(f, "py_func"))


def _task(fn, *args):
    """Run one task's work, counting tasks and those that had to compile kernels."""
    before = _kernel_signatures()
    out = fn(*args)
    with _lock:
        _stats["tasks"] += 1
        _stats["tasks_that_compiled"] += _kernel_signatures() > before
    return out


def worker_stats() -> dict:
    """This process's counters: ``models_received`` (model copies unpickled), ``models_built``
    (models built from bytes; at most one per distinct model), ``tasks`` run and
    ``tasks_that_compiled`` (tasks during which Numba compiled or loaded a kernel). Call it on
    workers with ``client.run(tinyrnn.dask.worker_stats)``."""
    with _lock:
        return dict(_stats, models_cached=len(_models))


def _model_key(model):
    """One Delayed graph key holding ``model``: a dependency of every task, so the
    scheduler ships it to each worker once per job instead of inside every task."""
    from .model import Model

    if not isinstance(model, Model):
        raise InputError(f"expected a tinyrnn.Model, found {type(model).__name__}")
    (dask,) = _require("dask")
    return dask.delayed(ModelRef(model), pure=True, traverse=False)


# --- bags ---------------------------------------------------------------------------------


def _run_partition(seqs, ref: ModelRef, reduce, batch_size: int) -> list:
    return _task(run_many, ref.model, list(seqs), reduce, batch_size)


def _check_bag(seqs, what: str):
    (bag,) = _require("dask.bag")
    if not isinstance(seqs, bag.Bag):
        raise InputError(f"expected a dask.bag.Bag of {what}, found {type(seqs).__name__} "
                         f"(make one with dask.bag.from_sequence)")


def run(model, seqs, reduce=None, batch_size: int = 64):
    """Outputs of ``model`` for every sequence of a Dask Bag, as a lazy Bag in the same order.

    ``seqs``: ``dask.bag.Bag`` of sequences of any lengths, each ``(T,)`` token ids or
    ``(T, *features)`` floats. ``reduce``: ``None`` gives each sequence's ``(T, *out)``
    float32 outputs, ``"last"`` its last step ``(*out)``, ``"mean"`` the mean over steps.
    ``batch_size``: sequences batched per compiled call inside a partition. Each result
    equals ``model.run(seq)`` exactly. Raises ``InputError`` for bad arguments now, and
    for a bad sequence when the Bag is computed; ``MissingDependencyError`` without Dask.
    """
    _check_bag(seqs, "sequences")
    check_reduce(reduce)
    batch_size = check_batch_size(batch_size)
    return seqs.map_partitions(_run_partition, _model_key(model), reduce, batch_size)


def _stacked_partition(seqs, ref: ModelRef, reduce, batch_size: int) -> np.ndarray:
    model = ref.model
    outs = _task(run_many, model, list(seqs), reduce, batch_size)
    return np.stack(outs) if outs else np.zeros((0, *model.output_shape), np.float32)


def run_array(model, seqs, reduce="last", batch_size: int = 64):
    """One output per sequence of a Dask Bag, as a lazy ``dask.array.Array`` ``(N, *out)``
    float32, rows in the order of ``seqs``, one chunk per partition.

    What ``run(model, seqs, reduce)`` answers, stacked on the workers: a partition's
    results travel (to another worker, or back to the client) as one array instead of one
    small array per sequence, whose per-object cost in Dask's serialisation otherwise
    rivals the scoring itself for small models. ``reduce``: ``"last"`` or ``"mean"`` (a
    fixed shape per sequence). The chunk lengths are unknown until computed (``nan``), as
    Dask cannot count a Bag's partitions without reading them. Raises ``InputError`` for bad
    arguments now and for a bad sequence when computed; ``MissingDependencyError`` without
    Dask.
    """
    _check_bag(seqs, "sequences")
    check_reduce(reduce)
    if reduce not in ("last", "mean"):
        raise InputError(f"run_array stacks one fixed-shape output per sequence: reduce must be 'last' or 'mean', "
                         f"found {reduce!r} (use run for ragged outputs)")
    batch_size = check_batch_size(batch_size)
    key = _model_key(model)
    base, da, hlg = _require("dask.base", "dask.array", "dask.highlevelgraph")
    out = tuple(model.output_shape)
    name = "tinyrnn-run-array-" + base.tokenize(seqs, key, reduce, batch_size)
    # one task per partition, straight from the Bag's partition key to the array's chunk
    # key: from_delayed + concatenate would add two alias tasks per partition
    tail = (0,) * len(out)
    layer = {(name, i, *tail): (_stacked_partition, (seqs.name, i), key.key, reduce, batch_size)
             for i in range(seqs.npartitions)}
    graph = hlg.HighLevelGraph.from_collections(name, layer, dependencies=[seqs, key])
    return da.Array(graph, name, chunks=((np.nan,) * seqs.npartitions, *((d,) for d in out)), dtype=np.float32)


def _bits_partition(lines, ref: ModelRef, batch_size: int) -> list:
    return _task(bits_per_character, ref.model, list(lines), batch_size, None)


def line_bits(model, lines, batch_size: int = 64):
    """Lazy Bag of ``(bits, characters)`` per line of a Bag of text (see
    ``tinyrnn.batching.bits_per_character``); sum both to get a corpus' bits per character."""
    _check_bag(lines, "text lines")
    from .batching import line_bits as check_text_model

    check_text_model(model)
    batch_size = check_batch_size(batch_size)
    return lines.map_partitions(_bits_partition, _model_key(model), batch_size)


def _ratio(pair) -> float:
    bits, chars = pair
    return bits / chars if chars else float("nan")


def score(model, lines, batch_size: int = 64):
    """Bits per character of each line of a Bag of text, as a lazy Bag of floats (NaN for
    a line with nothing to predict). A text model's cross-entropy on each character given
    the ones before it; see ``tinyrnn.batching.bits_per_character``. Raises ``InputError``
    for a model without vocabulary and outputs over it, or (when computed) a line it
    cannot spell."""
    return line_bits(model, lines, batch_size).map(_ratio)


# --- dataframes ---------------------------------------------------------------------------


def _cell_input(model, cell, row):
    """A DataFrame cell as one sequence: text is encoded, Parquet's lists of rows stacked."""
    if isinstance(cell, str):
        if model.vocab is None:
            raise InputError(f"row {row!r}: a text cell needs a model with a vocabulary; this one reads "
                             f"{model.input!r}")
        return model.encode(cell)
    if isinstance(cell, np.ndarray) and cell.dtype == object or isinstance(cell, (list, tuple)):
        try:  # list<list<float>> from Parquet arrives as an object array of row arrays
            return np.stack([np.asarray(r) for r in cell]) if len(cell) and np.ndim(cell[0]) else np.asarray(cell)
        except ValueError as e:
            raise InputError(f"row {row!r}: the cell's rows do not form one array: {e}") from None
    return cell


def _cell_output(y):
    # Arrow stores 1-D arrays as lists but refuses 2-D ones: keep those as a list of rows
    return list(y) if y.ndim >= 2 else y


def _frame_partition(df, ref: ModelRef, column: str, output: str, reduce, batch_size: int, bits: bool):
    model = ref.model
    df = df.copy()
    if bits:
        pairs = _task(bits_per_character, model, df[column].tolist(), batch_size, None)
        df[output] = np.array([_ratio(p) for p in pairs], np.float64)
    else:
        seqs = [_cell_input(model, c, r) for r, c in zip(df.index, df[column])]
        outs = _task(run_many, model, seqs, reduce, batch_size)
        col = np.empty(len(outs), object)
        col[:] = [_cell_output(y) for y in outs]
        df[output] = col
    return df


def _frame(model, df, column, output, reduce, batch_size, bits: bool):
    dd, pd = _require("dask.dataframe", "pandas")
    if not isinstance(df, dd.DataFrame):
        raise InputError(f"expected a dask.dataframe.DataFrame, found {type(df).__name__}")
    if column not in df.columns:
        raise InputError(f"the DataFrame has no column {column!r}; it has {list(df.columns)}")
    key = _model_key(model)
    batch_size = check_batch_size(batch_size)
    meta = df._meta.copy()
    meta[output] = pd.Series([], dtype=np.float64 if bits else object)
    return df.map_partitions(_frame_partition, key, column, output, reduce, batch_size, bits, meta=meta)


def run_frame(model, df, column: str, output: str = "output", reduce=None, batch_size: int = 64):
    """A lazy Dask DataFrame: ``df`` plus column ``output`` holding the model's outputs for
    the sequence in each row's ``column``.

    Cells of ``column``: text (``str``, for a model with a vocabulary; encoded with
    ``Model.encode``), 1-D token ids, or float sequences (a 2-D array, or a list of per-step
    rows as Parquet returns a ``list<list<float>>`` column). Output cells (an object
    column): the ``(*out)`` float32 array with ``reduce="last"``/``"mean"``; with
    ``reduce=None`` the ``(T, *out)`` outputs as a list of ``T`` per-step arrays, because
    Arrow has no 2-D cells (``np.stack(cell)`` gives ``Model.run``'s array back). Write it
    with ``to_parquet(path, schema=None)``: Dask cannot guess an object column's Arrow type
    from its metadata, pyarrow infers it from the data. Raises ``InputError`` for a missing
    column or bad arguments (bad cells when computed).
    """
    check_reduce(reduce)
    return _frame(model, df, column, output, reduce, batch_size, bits=False)


def score_frame(model, df, column: str, output: str = "bits_per_char", batch_size: int = 64):
    """A lazy Dask DataFrame: ``df`` plus float64 column ``output`` holding the bits per
    character of the text in each row's ``column`` (as ``score``; NaN where there is
    nothing to predict)."""
    from .batching import line_bits as check_text_model

    check_text_model(model)
    return _frame(model, df, column, output, None, batch_size, bits=True)


# --- files (what `tinyrnn run --input 'dir/*.npy' --output DIR` does) -------------------


def run_files(model, pairs, reduce, batch_size: int) -> list:
    """Read each ``(input.npy, output.npy)`` pair, run every sequence, write the outputs.

    An input file holds one sequence (``(T, *features)`` / ``(T,)``) or a batch of equal
    lengths (``(B, T, *features)`` / ``(B, T)``); its output file holds what ``Model.run``
    answers for it, each sequence reduced by ``reduce``. All sequences of all files in
    ``pairs`` are batched together by length. Returns ``(input, output, in_shape,
    out_shape)`` per pair. Raises ``InputError`` naming a file that cannot be read or does
    not fit the model.
    """
    from .stream import check_input

    seqs, owners = [], []  # every sequence, and (pair index, batched) per file
    for k, (src, _) in enumerate(pairs):
        try:
            x = np.load(src, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read input {src!r} as a .npy array: {e}") from None
        try:
            xb, batched = check_input(model, x, block=True)
        except InputError as e:
            raise type(e)(f"{src}: {e}") from None
        owners.append((len(seqs), xb.shape[0], batched, tuple(x.shape)))
        seqs.extend(xb)
    outs = run_many(model, seqs, reduce, batch_size)
    done = []
    for (src, dst), (start, n, batched, shape) in zip(pairs, owners):
        y = np.stack(outs[start:start + n]) if batched else outs[start]
        np.save(dst, y)
        done.append((src, dst, shape, tuple(y.shape)))
    return done


def _files_partition(pairs, ref: ModelRef, reduce, batch_size: int) -> list:
    return _task(run_files, ref.model, list(pairs), reduce, batch_size)


def files(model, pairs, reduce=None, batch_size: int = 64, npartitions: int | None = None):
    """A lazy Bag running ``run_files`` over ``(input, output)`` path pairs, the pairs split
    into ``npartitions`` tasks. Workers read and write the files themselves: on a real
    cluster every path must be on a filesystem all workers see."""
    (bag,) = _require("dask.bag")
    check_reduce(reduce)
    batch_size = check_batch_size(batch_size)
    pairs = list(pairs)
    b = bag.from_sequence(pairs, npartitions=max(1, min(len(pairs), npartitions or len(pairs))))
    return b.map_partitions(_files_partition, _model_key(model), reduce, batch_size)


# --- clusters -----------------------------------------------------------------------------


WORKER_ENV = {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

# Dask's monitors, at their default rates, keep an idle 2-worker LocalCluster busy for about
# 18% of one core (measured, docs/dask.md): the event-loop tick (every 20 ms in the
# scheduler and each worker), the workers' statistical profiler (10 ms), the system monitor
# (500 ms) and the nannies' memory monitor (100 ms). They feed the dashboard and its
# warnings; on a small machine every core they take is taken from the workers.
LOCAL_CLUSTER_CONFIG = {
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.worker.memory.monitor-interval": "1s",
}


class connect:
    """A ``distributed.Client`` for the command line: ``connect(scheduler="tcp://host:8786")``
    joins a running cluster, ``connect(workers=N)`` starts a ``LocalCluster`` of N worker
    processes (one thread each; Numba kernels are single-threaded, so processes scale; the
    workers' environment gets ``WORKER_ENV``, which caps OpenMP/BLAS/Numba pools at one thread),
    with Dask's monitors slowed down (``LOCAL_CLUSTER_CONFIG``) so they leave the cores to the
    workers. A running cluster keeps its own configuration.
    Use as a context manager; leaving it closes what it started.

    Raises ``ClusterError`` naming the address when the scheduler cannot be reached within
    ``timeout`` seconds, ``InputError`` for a bad worker count, ``MissingDependencyError``
    without ``distributed``.
    """

    def __init__(self, workers: int | None = None, scheduler: str | None = None, timeout: float = 10.0):
        if scheduler is None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise InputError(f"workers must be an integer >= 1, found {workers!r}")
        self.workers, self.scheduler, self.timeout = workers, scheduler, timeout
        self.cluster = self.client = None

    def __enter__(self):
        (distributed,) = _require("distributed")
        if self.scheduler is not None:
            try:
                self.client = distributed.Client(self.scheduler, timeout=self.timeout)
            except (OSError, TimeoutError, ValueError) as e:
                raise ClusterError(f"cannot reach the Dask scheduler at {self.scheduler!r} within "
                                   f"{self.timeout:g} s ({type(e).__name__}: {e}); is it running, and is the "
                                   f"address tcp://HOST:PORT?") from None
            return self.client
        try:
            import dask

            # one thread per worker, and no thread pools inside it either (numpy's BLAS, OpenMP):
            # N workers on N cores must not start N x cores threads. The scheduler, the nannies
            # and (through them) the workers read the configuration when they start.
            with dask.config.set(LOCAL_CLUSTER_CONFIG):
                self.cluster = distributed.LocalCluster(n_workers=self.workers, threads_per_worker=1,
                                                        processes=True, dashboard_address=":0",
                                                        env=dict(WORKER_ENV))
                self.client = distributed.Client(self.cluster)
        except (OSError, TimeoutError) as e:
            self.__exit__()
            raise ClusterError(f"cannot start a local Dask cluster of {self.workers} workers: {e}") from None
        return self.client

    def __exit__(self, *exc):
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        self.client = self.cluster = None
        return False


def compute(client, collection, progress: bool = False):
    """Compute a Dask collection on ``client``, drawing Dask's progress bar on stderr."""
    (distributed,) = _require("distributed")
    if not progress:
        return client.compute(collection).result()
    import contextlib
    import sys

    persisted = client.persist(collection)
    # the bar writes to stdout, which is for results; and it must watch this client's
    # scheduler, not whichever client this process made most recently
    with contextlib.redirect_stdout(sys.stderr):
        distributed.progress(persisted, scheduler=client.scheduler.address)
    return client.compute(persisted).result()
