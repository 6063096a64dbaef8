"""A request's region: from the header, the tenant or the gateway; the replica it goes to, and data residency."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from infercloud.config import ConfigError, GatewaySpec, ModelSpec, RegionSpec, ServerConfig, TenantSpec, load_config
from infercloud.fleet.replicas import Replica, ReplicaSet, ReplicaState
from infercloud.fleet.traffic import Traffic
from infercloud.gateway.facts import FactsParser
from infercloud.gateway.load_book import LoadBook
from infercloud.gateway.metrics import GatewayMetrics
from infercloud.gateway.planner import Plan, RoutePlanner
from infercloud.gateway.proxy import Proxy
from infercloud.openai.errors import APIError
from infercloud.router import RouteRequest
from infercloud.router.regions import RegionMap
from infercloud.store.database import open_database
from infercloud.tenancy.admission import Principal
from infercloud.tenancy.store import Tenant, TenancyError, TenantStore

REGIONS = (RegionSpec("a", {"b": 10, "c": 80}), RegionSpec("b"), RegionSpec("c"))


def gateway(gateway_region: str | None = None, regions=REGIONS) -> FactsParser:
    config = ServerConfig(regions=regions, gateway=GatewaySpec(region=gateway_region))
    return FactsParser(config, {"m"})


def principal(**spec) -> Principal:
    return Principal(Tenant(1, TenantSpec("acme", **spec), dt.datetime(2026, 1, 1)), None)  # the key is not read


def rejected(gw: FactsParser, who: Principal | None, header: str | None) -> APIError:
    with pytest.raises(APIError) as caught:
        gw.region(who, header)
    return caught.value


# -- FactsParser.region -----------------------------------------------------------------------------

def test_the_header_wins():
    assert gateway("a").region(principal(home_region="c"), "b") == ("b", None)
    assert gateway("a").region(None, "c") == ("c", None)


def test_without_a_header_the_tenants_home_region_then_the_gateways():
    assert gateway("a").region(principal(home_region="c"), None) == ("c", None)
    assert gateway("a").region(principal(), None) == ("a", None)
    assert gateway("a").region(None, None) == ("a", None)
    assert gateway().region(None, None) == (None, None)
    assert gateway("a").region(principal(home_region="c"), "") == ("c", None)   # an empty header names none


def test_an_unknown_header_region_is_a_bad_request():
    error = rejected(gateway("a"), None, "mars")
    assert (error.status, error.code) == (400, "invalid_region")
    assert "'mars'" in error.message and "a, b, c" in error.message
    assert gateway(regions=()).region(None, "mars") == ("mars", None)     # none declared: any name goes


def test_a_bound_tenant_may_not_name_a_region_outside_its_own():
    error = rejected(gateway("a"), principal(regions=("a", "b")), "c")
    assert (error.status, error.code, error.type) == (403, "region_not_allowed", "permission_error")
    assert gateway().region(principal(regions=("a", "b")), "b") == ("b", frozenset({"a", "b"}))


def test_a_bound_tenant_without_a_header_falls_back_to_its_first_region():
    bound = principal(regions=("b", "a"))
    assert gateway("c").region(bound, None) == ("b", frozenset({"a", "b"}))
    assert gateway().region(bound, None) == ("b", frozenset({"a", "b"}))
    assert gateway("a").region(bound, None) == ("a", frozenset({"a", "b"}))   # the gateway's is allowed
    assert gateway("c").region(principal(regions=("b", "a"), home_region="a"), None) == ("a", frozenset({"a", "b"}))


def test_a_tenant_bound_to_no_region_cannot_be_made(tmp_path):
    """`regions: []` would bind a tenant to nowhere: refused in the config and in the store."""
    path = tmp_path / "c.yaml"
    path.write_text("tenancy: {tenants: [{name: t, regions: []}]}\n")
    with pytest.raises(ConfigError, match="at least one region"):
        load_config(path)
    with pytest.raises(TenancyError, match="at least one region"):
        TenantStore(open_database("sqlite:///:memory:")).create_tenant(TenantSpec("t", regions=()))


# -- Proxy: picking by region, and residency ----------------------------------------------------

def proxy(*replicas: tuple[Replica, int], spillover_outstanding: int = 32) -> Proxy:
    """A proxy over `replicas`, each with the requests this gateway has in flight there."""
    fleet = ReplicaSet()
    book = LoadBook(fleet)
    for replica, outstanding in replicas:
        fleet.add(replica)
        for _ in range(outstanding):
            book.begin(replica, (), 100, 16)
    planner = RoutePlanner((ModelSpec("m", routing="least_load"),), 256, random.Random(0), 4096, 1.5)
    return Proxy(fleet, book, Traffic(lambda: 0.0), planner, None, GatewaySpec(spillover_outstanding=spillover_outstanding),
                 GatewayMetrics(fleet, book), RegionMap.from_specs(REGIONS))


def ready(replica_id: str, region: str | None, outstanding_requests: int = 0) -> tuple[Replica, int]:
    return Replica(replica_id, "m", f"http://{replica_id}", state=ReplicaState.READY, region=region), \
        outstanding_requests


def plan(region: str | None = None, allowed: set[str] | None = None) -> Plan:
    route = RouteRequest("m", region=region, allowed_regions=frozenset(allowed) if allowed is not None else None)
    return Plan(route, new_tokens=100)


def test_a_request_goes_to_a_replica_in_its_region():
    p = proxy(ready("m-a", "a", outstanding_requests=5), ready("m-b", "b"), ready("m-c", "c"))
    assert all(p.pick(plan("a"), set()).replica_id == "m-a" for _ in range(5))   # least_load alone: m-b
    assert p.pick(plan("c"), set()).replica_id == "m-c"
    assert p.pick(plan("a"), {"m-a"}).replica_id == "m-b"                       # tried: the nearest next


def test_a_full_replica_spills_to_the_nearest_region():
    p = proxy(ready("m-a", "a", outstanding_requests=1), ready("m-c", "c"), ready("m-b", "b"),
              spillover_outstanding=1)
    assert p.pick(plan("a"), set()).replica_id == "m-b"
    assert p.pick(plan("a", allowed={"a"}), set()).replica_id == "m-a"       # bound: queues at home instead


def test_a_bound_request_with_no_replica_in_its_regions_is_refused():
    p = proxy(ready("m-b", "b"), (Replica("m-a", "m", "http://m-a", state=ReplicaState.UNHEALTHY, region="a"), 0))
    bound = plan("a", allowed={"a"})
    assert p.pick(bound, set()) is None
    with pytest.raises(APIError) as caught:
        p.check_residency(bound)
    assert (caught.value.status, caught.value.code) == (503, "region_unavailable")
    assert "b" in caught.value.message and caught.value.headers["Retry-After"] == "5"


def test_an_unbound_request_or_one_with_a_replica_in_its_regions_is_not_refused():
    p = proxy(ready("m-b", "b"), ready("m-a", "a"))
    p.check_residency(plan("a"))
    p.check_residency(plan(None, allowed={"a"}))
    proxy(ready("m-b", "b")).check_residency(plan("a"))
    proxy().check_residency(plan("a", allowed={"a"}))      # nothing up anywhere: the ordinary no-replica path
