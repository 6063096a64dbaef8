"""`infercloud tenants|keys` on a real SQLite file: the same range rules as the config and the admin API."""

from __future__ import annotations

import json

import pytest

from infercloud.cli import main


@pytest.fixture
def db(tmp_path) -> list[str]:
    return ["--database", f"sqlite:///{tmp_path}/t.db"]


def test_a_tenant_in_a_cache_group_is_made(db, capsys):
    assert main(["tenants", "create", "acme", "--cache-group", "team", "--rpm", "2147483647", *db]) == 0
    made = json.loads(capsys.readouterr().out)
    assert (made["cache_group"], made["requests_per_minute"]) == ("team", 2**31 - 1)
    assert "salt_prefix_cache" not in made


@pytest.mark.parametrize("args, named", [
    (["--rpm", "2147483648"], "requests_per_minute"),
    (["--max-concurrent", str(2**70)], "max_concurrent"),
    (["--budget", "nan"], "budget_usd"),
    (["--budget", "inf"], "budget_usd"),
    (["--cache-group", "team a"], "cache_group"),
])
def test_values_out_of_range_are_refused_naming_the_field(db, capsys, args, named):
    assert main(["tenants", "create", "acme", *args, *db]) == 1
    assert f"error: {named}: must be" in capsys.readouterr().err
    assert main(["tenants", "list", *db]) == 0 and "acme" not in capsys.readouterr().out


def test_a_bad_tenant_name_is_refused(db, capsys):
    assert main(["tenants", "create", "a b", *db]) == 1
    assert "error: name: must be 1 to 100 letters" in capsys.readouterr().err


def test_salt_prefix_cache_is_refused_naming_cache_group(db, capsys):
    assert main(["tenants", "create", "acme", "--salt-prefix-cache", *db]) == 1
    err = capsys.readouterr().err
    assert "always isolated" in err and "--cache-group" in err


@pytest.mark.parametrize("days", ["1e308", "0", "36501", "nan"])
def test_a_key_lifetime_out_of_range_is_refused(db, capsys, days):
    assert main(["tenants", "create", "acme", *db]) == 0
    assert main(["keys", "create", "--tenant", "acme", "--expires-in-days", days, *db]) == 1
    assert "expires_in_days must be more than 0 and at most 36500" in capsys.readouterr().err
