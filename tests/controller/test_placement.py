"""Placement on a pool: spread a model's replicas, best fit by memory, make room from idle models, or refuse."""

from infercloud.controller.placement import WorkerView, place

GB = 2**30


def view(worker_id: str, used_gb: float, hosting=(), evictable_gb: float = 0.0, ready: bool = True,
         budget_gb: float = 4.0, oldest_idle_s: float = 0.0, coldest_heat: float = 0.0) -> WorkerView:
    return WorkerView(worker_id, int(budget_gb * GB), int(used_gb * GB), frozenset(hosting),
                      int(evictable_gb * GB), ready, oldest_idle_s, coldest_heat)


def test_best_fit_packs_into_the_fullest_worker_that_fits():
    workers = [view("w0", 1.0), view("w1", 2.5), view("w2", 3.5)]
    assert place("m", 1 * GB, workers).worker_id == "w1"      # w2 has 0.5 free: no; w1 is left with 0.5


def test_replicas_of_one_model_are_spread_across_workers():
    workers = [view("w0", 2.0, hosting={"m"}), view("w1", 3.0)]
    assert place("m", GB // 2, workers).worker_id == "w1"
    assert place("m", GB // 2, [view("w0", 0.0, hosting={"m"})]) is None


def test_makes_room_from_idle_models_on_the_worker_that_unloads_least():
    workers = [view("w0", 3.5, evictable_gb=3.0), view("w1", 3.0, evictable_gb=2.0)]
    assert place("m", 2 * GB, workers).worker_id == "w1"      # w1 frees 1 GB, w0 1.5 GB


def test_makes_room_where_the_pools_least_recently_used_idle_model_lives():
    workers = [view("w0", 3.5, evictable_gb=1.0, oldest_idle_s=2.0), view("w1", 3.5, evictable_gb=1.0,
                                                                          oldest_idle_s=30.0)]
    assert place("m", GB, workers).worker_id == "w1"


def test_making_room_prefers_the_worker_with_the_coldest_idle_model_over_the_oldest():
    workers = [view("w0", 3.5, evictable_gb=1.0, oldest_idle_s=30.0, coldest_heat=5.0),
               view("w1", 3.5, evictable_gb=1.0, oldest_idle_s=2.0, coldest_heat=0.5)]
    assert place("m", GB, workers).worker_id == "w1"     # w0's idle model is older but popular


def test_no_room_when_busy_or_pinned_models_fill_the_pool():
    assert place("m", 2 * GB, [view("w0", 3.5, evictable_gb=1.0), view("w1", 4.0)]) is None


def test_workers_not_ready_are_skipped_and_ties_are_deterministic():
    workers = [view("w1", 1.0), view("w0", 1.0), view("w2", 0.0, ready=False)]
    assert place("m", GB, workers).worker_id == "w0"
    assert place("m", GB, [view("w0", 1.0, hosting={"a", "b"}), view("w1", 1.0, hosting={"a"})]).worker_id == "w1"
