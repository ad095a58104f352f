"""FAISS indexes (flat, IVF, IVF-PQ, HNSW) whose search breadth is tuned at build time to a target recall.

See index.py's docstring for how the tuning works; `build_index` is the usual way in.

Example:
    >>> idx = FaissIndex(np.eye(4, dtype=np.float32), list("abcd"))   # doctest: +SKIP
    >>> idx.search(np.eye(4, dtype=np.float32)[:1], k=1)[1]           # doctest: +SKIP
    [['a']]
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import Sequence

import numpy as np

from fclip_workbench.errors import InvalidArgumentError, MissingExtraError
from fclip_workbench.embedding.space import EmbeddingSpace
from fclip_workbench.search.base import (ADD_CHUNK, FAISS_METHODS, _check_new_ids, _check_queries, _check_space,
                                         _check_vectors, _ids_bytes, _SpaceMixin, check_k, check_weight, normalize)

log = logging.getLogger(__name__)

TARGET_RECALL = 0.95  # Recall@10 against exact search that approximate indexes are tuned to reach
TUNE_QUERIES = 500  # held-out queries of each kind used to tune nprobe / efSearch
CHECK_QUERIES = 1000  # a second, disjoint held-out sample of each kind measures the recall that is stated
TUNE_K = 10  # the k of the tuned Recall@k
HNSW_M = 32  # neighbours per node
HNSW_EF_CONSTRUCTION = 200  # build-time beam (FAISS default 40 gives a poorer graph)
HNSW_EF_SEARCH = 128  # least query-time beam; FAISS's default 16 gives recall@10 well under 0.9 on 2k random vectors
IVF_LISTS_PER_SQRT_N = 2  # nlist = 2 sqrt(n): 4 sqrt(n) doubles k-means and assignment time (> 5 min for 1M x 512 here)
IVF_TRAIN_PER_LIST = 40  # k-means sample: 40 points per list (FAISS warns below 39)
IVF_NITER = 10  # k-means iterations (FAISS's 25 buys little recall for 2.5x the training time)
PQ_BITS = 4  # bits per PQ code: FAISS fast-scan (16 centroids per sub-quantiser: trains in seconds, 8-bit took minutes)
PQ_DIMS_PER_CODE = 4  # ivfpq: one 4-bit code per 4 dimensions (512-d -> 128 codes = 64 bytes per vector)
REFINE_K_FACTORS = (4, 8, 16, 32, 64, 128)  # ivfpq re-ranking: candidates per result tried while tuning (title
# queries, farther from the images than images are from each other, needed 64 on KAGL)


def _faiss():
    try:
        import faiss
    except ImportError as e:
        raise MissingExtraError("FAISS search needs faiss-cpu: pip install 'fclip-workbench[faiss]'") from e
    return faiss


@contextlib.contextmanager
def _single_thread():
    """FAISS on one OpenMP thread for a while: PQ training's many tiny k-means ran 15x slower on 2 threads
    of a busy 2-core machine (threads spin-waiting on each other) than on one."""
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _faiss_bytes(index) -> int:
    """Bytes a FAISS index holds (codes + ids of inverted lists, quantisers, graph links)."""
    faiss = _faiss()
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexRefine):
        return _faiss_bytes(index.base_index) + _faiss_bytes(index.refine_index)
    if isinstance(index, faiss.IndexIVF):
        n = index.invlists.compute_ntotal()
        extra = 0
        if hasattr(index, "pq"):
            extra = index.pq.centroids.size() * 4  # PQ codebooks
        return n * (index.code_size + 8) + _faiss_bytes(index.quantizer) + extra
    if isinstance(index, faiss.IndexHNSW):
        links = index.hnsw.neighbors.size() * 4 + index.hnsw.offsets.size() * 8 + index.hnsw.levels.size() * 4
        return _faiss_bytes(index.storage) + links
    return index.ntotal * index.sa_code_size()  # flat and scalar-quantised storage


class FaissIndex(_SpaceMixin):
    """FAISS inner-product index; `method` picks the structure:

    - "flat": exact search (every vector scanned);
    - "ivf": inverted lists over k-means cells (nlist = 2 sqrt(n)); `nprobe` cells searched per query;
    - "ivfpq": IVF over 4-bit product-quantised codes (fast-scan, dim / 8 bytes per vector) re-ranked on
      8-bit scalar-quantised vectors (`refine=False`: codes only), ~1/3.5 the memory of "ivf" at 512-d;
    - "hnsw": a navigable small-world graph (slow to build: fine up to a few 10^5 items on 2 cores).

    Approximate methods tune `nprobe` (IVF) or `efSearch` (HNSW, never below 128) at build time until
    Recall@10 against exact search reaches `target_recall` for each kind of query: `tune_queries`
    held-out rows as image queries (each query's own row left out of both result lists) and, when
    `text_queries` (m, d) are given, as many of those (text -> image search). The margin: for every
    kind, the one-sided 95% lower confidence bound of the sample's mean must reach the target. Each
    kind's recall is then measured on a second, disjoint held-out sample: `build_info` records
    `recall_at_10_image`, `recall_at_10_text` (None without text queries) and `recall_at_10`, the
    lower of the two; when a kind's check sample falls short of the target, the search is widened
    a step at a time until both samples clear it. Pass `nprobe` or `ef_search` to fix the breadth instead (then only measured).
    A target that cannot be reached is logged as a warning.
    """

    kind = "faiss"

    def __init__(self, vectors: np.ndarray, ids: Sequence[str], method: str = "flat",
                 ef_search: int | None = None, nlist: int | None = None, nprobe: int | None = None,
                 target_recall: float = TARGET_RECALL, tune_queries: int = TUNE_QUERIES,
                 refine: bool = True, seed: int = 0, space: EmbeddingSpace | None = None,
                 image_weight: float = 1.0, text_queries: np.ndarray | None = None) -> None:
        faiss = _faiss()
        if method not in FAISS_METHODS:
            raise InvalidArgumentError(f"Unknown FAISS method {method!r}; choose one of {', '.join(FAISS_METHODS)}")
        try:
            target_ok = 0.0 < float(target_recall) <= 1.0
        except (TypeError, ValueError):
            target_ok = False
        if not target_ok:
            raise InvalidArgumentError(f"target_recall must be in (0, 1], got {target_recall!r}")
        ids = _check_new_ids(ids, set())
        vectors = _check_vectors(vectors, ids)  # (n, d)
        n, d = vectors.shape
        self.space = _check_space(space, d)
        self.image_weight = check_weight(image_weight)
        if text_queries is not None:
            text_queries = _check_queries(text_queries, d, "text_queries")  # (m, d)
            if not len(text_queries):
                text_queries = None
        t0 = time.perf_counter()
        self.ids, self.method = ids, method
        self._row: dict[str, int] | None = None  # id -> row, built on the first add()
        self.nprobe, self.k_factor = 1, 1
        self.ef_search = check_k(ef_search) if ef_search is not None else HNSW_EF_SEARCH
        self.build_info: dict = {"method": method, "n": n, "dim": d}
        if method == "flat":
            self.index = faiss.IndexFlatIP(d)
        elif method == "hnsw":
            self.index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        else:
            self.index = self._train_ivf(vectors, method, nlist, refine, seed)
        self._add_normalised(vectors)
        self.build_info["train_add_s"] = round(time.perf_counter() - t0, 2)
        if method != "flat" and n:  # (an empty HNSW graph has nothing to tune)
            fixed = nprobe if method != "hnsw" else ef_search
            if fixed is not None:
                self._set_breadth(check_k(fixed), self.k_factor)
            self._tune(vectors, float(target_recall), tune_queries, seed, fixed is not None, text_queries)
        self.build_info["build_s"] = round(time.perf_counter() - t0, 2)

    # ---- building ---------------------------------------------------------
    def _train_ivf(self, vectors: np.ndarray, method: str, nlist: int | None, refine: bool, seed: int):
        """A trained, empty IVF (or IVF-PQ + SQ8 re-ranking) index: k-means on a sample of `vectors`."""
        faiss = _faiss()
        n, d = vectors.shape
        min_n = 2 ** PQ_BITS * IVF_TRAIN_PER_LIST if method == "ivfpq" else 1
        if n < min_n:
            raise InvalidArgumentError(f"a {method!r} index needs at least {min_n} vectors to train, got {n}; "
                                       "use kind='exact' (or 'auto') for small catalogs")
        if nlist is None:
            nlist = round(IVF_LISTS_PER_SQRT_N * math.sqrt(n))
        nlist = max(1, min(check_k(nlist), n // IVF_TRAIN_PER_LIST or 1))
        rng = np.random.default_rng(seed)
        n_train = min(n, max(nlist * IVF_TRAIN_PER_LIST, min_n))
        sample = normalize(vectors[np.sort(rng.choice(n, n_train, replace=False))])  # (n_train, d)
        quantizer = faiss.IndexFlatIP(d)
        if method == "ivf":
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            m = max((x for x in range(2, max(2, d // PQ_DIMS_PER_CODE) + 1, 2) if d % x == 0), default=None)
            if m is None:
                raise InvalidArgumentError(f"an 'ivfpq' index needs an even dimension, got {d}; use kind='ivf'")
            index = faiss.IndexIVFPQFastScan(quantizer, d, nlist, m, PQ_BITS, faiss.METRIC_INNER_PRODUCT)
            self.build_info["pq_bytes"] = m * PQ_BITS // 8
        index.cp.niter, index.cp.seed, index.cp.spherical = IVF_NITER, seed, True
        index.cp.min_points_per_centroid = 1  # the sample is sized on purpose: no warning about it
        self._quantizer = quantizer  # keep the Python object alive with the index
        if method == "ivfpq" and refine:
            self._base = index
            index = faiss.IndexRefine(index, faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit,
                                                                          faiss.METRIC_INNER_PRODUCT))
            self.k_factor = REFINE_K_FACTORS[0]
        t = time.perf_counter()
        with _single_thread() if method == "ivfpq" else contextlib.nullcontext():
            index.train(sample)
        self.build_info.update(nlist=nlist, train_points=n_train, refine=bool(method == "ivfpq" and refine),
                               train_s=round(time.perf_counter() - t, 2))
        return index

    def _add_normalised(self, vectors: np.ndarray) -> None:
        for start in range(0, len(vectors), ADD_CHUNK):  # (chunk, d) normalised copies only
            self.index.add(normalize(vectors[start:start + ADD_CHUNK]))

    def _set_breadth(self, breadth: int, k_factor: int) -> None:
        if self.method == "hnsw":
            self.ef_search = breadth
        elif self.method in ("ivf", "ivfpq"):
            self.nprobe, self.k_factor = breadth, k_factor

    def _tune(self, vectors: np.ndarray, target: float, tune_queries: int, seed: int, fixed: bool,
              text_queries: np.ndarray | None = None) -> None:
        """Widen the search until Recall@10 reaches `target` for every kind of query (image rows held out
        of the index's results; text queries when given), then measure each kind on a disjoint sample.
        With `fixed`, only measure."""
        faiss = _faiss()
        n = len(vectors)
        k = min(TUNE_K + 1, n)  # +1: an image query's own row is dropped from both lists
        t = time.perf_counter()
        rng = np.random.default_rng(seed + 1)
        rows = rng.permutation(n)
        n_q = min(check_k(tune_queries), max(1, n // 2))
        n_c = min(CHECK_QUERIES, max(1, n - n_q))
        tune_rows, check_rows = np.sort(rows[:n_q]), np.sort(rows[n_q:n_q + n_c] if n > 1 else rows[:1])
        unit = vectors.dtype == np.float32 and vectors.flags.c_contiguous and bool(np.allclose(
            np.linalg.norm(vectors[tune_rows], axis=1), 1, atol=1e-4))
        base = vectors if unit else normalize(vectors)  # (n, d); already unit rows: no copy

        def query_set(queries: np.ndarray, own: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
            """(queries (q, d), own row of each query or -1, exact top-10 rows without the own row)."""
            _, truth = faiss.knn(queries, base, k, faiss.METRIC_INNER_PRODUCT)  # (q, k) exact neighbours
            return queries, own, [[j for j in row if j != r][:TUNE_K] for r, row in zip(own, truth)]

        sets: dict[str, tuple] = {}  # kind -> (tuning set, check set)
        sets["image"] = (query_set(normalize(vectors[tune_rows]), tune_rows),
                         query_set(normalize(vectors[check_rows]), check_rows))
        if text_queries is not None:
            m = len(text_queries)
            t_rows = rng.permutation(m)
            n_t = min(check_k(tune_queries), max(1, m // 2))
            n_tc = min(CHECK_QUERIES, max(1, m - n_t))
            t_tune, t_check = np.sort(t_rows[:n_t]), np.sort(t_rows[n_t:n_t + n_tc] if m > 1 else t_rows[:1])
            sets["text"] = (query_set(text_queries[t_tune], np.full(len(t_tune), -1)),
                            query_set(text_queries[t_check], np.full(len(t_check), -1)))
        self.build_info["truth_s"] = round(time.perf_counter() - t, 2)

        def per_query(qs: tuple) -> np.ndarray:  # (q,) Recall@10 of each query of a set
            queries, own, exact = qs
            _, got = self._search_rows(queries, k)
            found = ([j for j in row if j != r][:TUNE_K] for r, row in zip(own, got))
            return np.array([len(set(g) & set(e)) / max(1, len(e)) for g, e in zip(found, exact)])

        def lower95(v: np.ndarray) -> float:
            """One-sided 95% lower confidence bound of the mean Recall@10: the sample must clear the target."""
            return float(v.mean() - (1.645 * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0))

        def recall() -> float:
            """The worst kind's lower bound on its tuning sample."""
            return min(lower95(per_query(tune)) for tune, _ in sets.values())

        t = time.perf_counter()
        if fixed:
            best = recall()
        elif self.method == "hnsw":
            best = 0.0
            for ef in (HNSW_EF_SEARCH * 2 ** i for i in range(5)):
                self.ef_search = ef
                if (best := recall()) >= target:
                    break
        else:
            best = self._tune_nprobe(recall, target)
        def measure() -> dict[str, float]:
            return {kind: round(float(per_query(check).mean()), 4) for kind, (_, check) in sets.items()}

        measured = measure()
        # The smallest breadth whose tuning sample clears the target is the one its sample flattered most:
        # the check sample must clear it too, else search one step wider (seen at 1M: text 0.948 -> 0.96).
        while not fixed and best >= target and min(measured.values()) < target and self._widen():
            measured, best = measure(), recall()
        lower = {kind: round(lower95(per_query(tune)), 4) for kind, (tune, _) in sets.items()}
        self.build_info.update(
            recall_at_10=min(measured.values()), recall_at_10_image=measured["image"],
            recall_at_10_text=measured.get("text"), recall_at_10_lower95=round(best, 4),
            recall_at_10_lower95_by_kind=lower, query_kinds=list(sets), target_recall=target,
            tune_queries=n_q, check_queries={kind: len(check[0]) for kind, (_, check) in sets.items()},
            tune_s=round(time.perf_counter() - t, 2), nprobe=self.nprobe if self.method != "hnsw" else None,
            k_factor=self.k_factor if self.method == "ivfpq" else None,
            ef_search=self.ef_search if self.method == "hnsw" else None)
        short = {kind: r for kind, r in measured.items() if r < target}
        if best < target or short:
            log.warning("%s index: Recall@10 %s on held-out queries (tuning lower bound %.3f), below the target "
                        "%.2f%s; use kind='exact' or method='ivf'", self.method,
                        ", ".join(f"{kind} {r:.3f}" for kind, r in measured.items()), best, target,
                        " at its widest search" if best < target and not fixed else "")

    def _widen(self) -> bool:
        """One step wider search (about 1/8 more cells, or a doubled beam); False when already widest."""
        if self.method == "hnsw":
            if self.ef_search >= HNSW_EF_SEARCH * 2 ** 4:
                return False
            self.ef_search *= 2
            return True
        nlist = self.build_info["nlist"]
        if self.nprobe < nlist:
            self.nprobe = min(nlist, self.nprobe + max(1, self.nprobe // 8))
            return True
        wider = [f for f in REFINE_K_FACTORS if f > self.k_factor] if self.build_info.get("refine") else []
        if wider:
            self.k_factor = wider[0]
            return True
        return False

    def _tune_nprobe(self, recall, target: float) -> float:
        """Smallest nprobe (powers of two, then bisection) reaching `target`; ivfpq also widens re-ranking."""
        nlist = self.build_info["nlist"]
        factors = REFINE_K_FACTORS if self.build_info.get("refine") else (1,)
        best = 0.0
        for kf in factors:
            lo, hi, r_hi = 0, None, 0.0
            p = 1
            while True:
                self._set_breadth(p, kf)
                r = recall()
                if r >= target:
                    hi, r_hi = p, r
                    break
                lo, best = p, max(best, r)
                if p >= nlist:
                    break
                p = min(2 * p, nlist)
            if hi is None:
                continue
            while hi - lo > max(1, hi // 8):  # bisect to within 1/8 of nprobe
                mid = (lo + hi) // 2
                self._set_breadth(mid, kf)
                r = recall()
                if r >= target:
                    hi, r_hi = mid, r
                else:
                    lo = mid
            self._set_breadth(hi, kf)
            return r_hi
        self._set_breadth(nlist, factors[-1])  # the target is out of reach: search as wide as we can
        return best

    # ---- searching --------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return self.index.d

    def _search_rows(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search of normalised (q, d) queries with the index's breadth: (scores, rows), each (q, k)."""
        faiss = _faiss()
        if self.method == "hnsw":
            self.index.hnsw.efSearch = max(self.ef_search, k)
        elif self.method in ("ivf", "ivfpq"):
            faiss.extract_index_ivf(self.index).nprobe = self.nprobe
            if isinstance(self.index, faiss.IndexRefine):
                self.index.k_factor = float(self.k_factor)
        return self.index.search(q, k)

    def search(self, queries: np.ndarray, k: int = 10,
               space: object = None) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k (scores (q, k), ids) for each query row, best first; k > len(self) gives all items.

        `space`: the queries' embedding space (or their model): refused unless it is the index's.
        """
        q, k = self._search_args(queries, k, space)  # (q, d)
        if k == 0:  # empty index: FAISS would abort on k=0
            return np.zeros((len(q), 0), np.float32), [[] for _ in range(len(q))]
        scores, idx = self._search_rows(q, k)  # (q, k) each; -1 where fewer than k were found
        if (idx < 0).any():
            n_found = int((idx >= 0).sum(1).min())
            scores, idx = scores[:, :n_found], idx[:, :n_found]
        return scores, [[self.ids[j] for j in row] for row in idx]

    def add(self, vectors: np.ndarray, ids: Sequence[str]) -> None:
        """Add new products without a rebuild (IVF: into the trained cells; HNSW: linked into the graph).

        Ids must be new: an id already in the index (or repeated in `ids`) raises `InvalidArgumentError`
        and nothing is added. The tuned nprobe is kept (recall drifts only if the new products are far from
        the catalog the cells were trained on: rebuild then).
        """
        if self._row is None:
            self._row = {i: r for r, i in enumerate(self.ids)}
        vectors = _check_vectors(vectors, ids, self.dim)  # (m, d)
        ids = _check_new_ids(ids, self._row)
        self._add_normalised(vectors)
        self._row.update((i, len(self.ids) + r) for r, i in enumerate(ids))
        self.ids += ids

    def memory_bytes(self) -> int:
        """Bytes held: the FAISS structure (codes, ids, quantisers, graph) plus the id list."""
        return _faiss_bytes(self.index) + _ids_bytes(self.ids)

    def search_params(self) -> dict:
        """The tuned search breadth, as saved: method, nprobe, k_factor, ef_search."""
        return {"method": self.method, "nprobe": self.nprobe, "k_factor": self.k_factor, "ef_search": self.ef_search}

    @classmethod
    def _from_saved(cls, index, ids: list[str], params: dict, build_info: dict) -> "FaissIndex":
        """A FaissIndex over a FAISS structure read from disk (checked by saved_index.load_index)."""
        self = cls.__new__(cls)
        self.index, self.ids, self._row = index, ids, None
        self.method, self.nprobe, self.k_factor = params["method"], params["nprobe"], params["k_factor"]
        self.ef_search, self.build_info = params["ef_search"], build_info
        return self
