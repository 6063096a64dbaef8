"""Placement on a pool: spread a model's replicas, best fit by memory, make room from idle models, or refuse;
and a model's replicas split over its regions."""

import pytest

from infercloud.controller.placement import WorkerView, place, region_slots

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


# -- region_slots ----------------------------------------------------------------------------------

def test_a_model_without_regions_has_one_slot_anywhere():
    assert region_slots(None, 3) == {None: 3}
    assert region_slots({}, 2) == {None: 2}


def test_counts_are_used_as_given_when_they_add_up_to_the_total():
    assert region_slots({"a": 2, "b": 1}, 3) == {"a": 2, "b": 1}
    assert region_slots({"a": 0, "b": 2}, 2) == {"a": 0, "b": 2}


@pytest.mark.parametrize("regions, total, expected", [
    ({"a": 1, "b": 1}, 3, {"a": 2, "b": 1}),            # a tie: the region listed first
    ({"b": 1, "a": 1}, 3, {"b": 2, "a": 1}),
    ({"a": 1, "b": 1}, 0, {"a": 0, "b": 0}),
    ({"a": 2, "b": 1}, 6, {"a": 4, "b": 2}),
    ({"a": 2, "b": 1}, 1, {"a": 1, "b": 0}),
    ({"a": 1, "b": 1, "c": 1}, 5, {"a": 2, "b": 2, "c": 1}),
    ({"a": 1, "b": 3}, 2, {"a": 1, "b": 1}),            # shares 0.5 / 1.5: remainders tie, a is listed first
])
def test_other_totals_are_shared_out_by_largest_remainder(regions, total, expected):
    assert region_slots(regions, total) == expected


def test_zero_weight_regions_never_get_a_replica():
    for total in range(11):
        slots = region_slots({"a": 0, "b": 1, "c": 2, "d": 0}, total)
        assert slots["a"] == slots["d"] == 0


@pytest.mark.parametrize("regions", [{"a": 1}, {"a": 1, "b": 1}, {"a": 2, "b": 1}, {"a": 5, "b": 3, "c": 1},
                                     {"a": 0, "b": 7}, {"a": 1, "b": 1, "c": 1, "d": 1, "e": 1, "f": 1, "g": 1}])
def test_slots_always_add_up_to_the_total(regions):
    for total in range(11):
        slots = region_slots(regions, total)
        assert sum(slots.values()) == total and set(slots) == set(regions)
        assert all(n >= 0 for n in slots.values())
