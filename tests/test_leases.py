"""Who owns a lease, and when its owner is known to be gone.

Owners run in containers that share a host name (and a boot id) but not PIDs, and PIDs
are reused: an owner is only judged dead when it ran in this very machine and PID
namespace and its PID is gone or belongs to a process started at another time.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mediamirror.catalog import leases
from mediamirror.catalog.db import Catalog
from mediamirror.errors import ConflictError

HERE = leases.new_owner().split(":")[3]


def owner(pid: int, start: str, machine: str = HERE, host: str = "host") -> str:
    return f"{host}:{pid}:token:{machine}:{start}"


def ended_owner() -> str:
    """The owner string of a process that has exited since (and been reaped)."""
    code = "from mediamirror.catalog import leases; print(leases.new_owner())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_an_ended_process_of_this_machine_is_dead() -> None:
    assert leases.owner_is_dead(ended_owner())


def test_a_live_process_is_alive_whatever_its_host_name() -> None:
    parent = os.getppid()
    assert not leases.owner_is_dead(leases.new_owner())
    start = leases.start_time(parent)
    assert start is not None
    assert not leases.owner_is_dead(owner(parent, start, host="some-other-name"))


def test_a_reused_pid_does_not_keep_a_dead_owner_alive() -> None:
    """The PID is alive, but it is another process: the start time differs."""
    parent = os.getppid()
    start = leases.start_time(parent)
    assert start is not None
    assert leases.owner_is_dead(owner(parent, str(int(start) + 1)))


def test_a_container_with_the_same_host_name_cannot_judge_another() -> None:
    """Same host name, same boot, another PID namespace: its PIDs mean nothing here."""
    dead = ended_owner().split(":")
    other_namespace = dead[3].split(".")[0] + ".4026531999"
    assert not leases.owner_is_dead(":".join([*dead[:3], other_namespace, dead[4]]))
    assert not leases.owner_is_dead(":".join([*dead[:3], "otherboot.1", dead[4]]))


@pytest.mark.parametrize("old", ["host:1:abcd1234", "garbage", f"{os.uname().nodename}:1:x"])
def test_older_or_unknown_owner_formats_wait_for_expiry(old: str) -> None:
    assert not leases.owner_is_dead(old)


def test_a_dead_owners_lease_is_taken_over_at_once(catalog: Catalog) -> None:
    dead = ended_owner()
    leases.acquire(catalog, "x", dead, ttl=600)
    assert leases.acquire(catalog, "x", leases.new_owner(), ttl=60) is not None


def test_a_lease_of_a_reused_pid_is_taken_over_but_a_containers_is_not(catalog: Catalog) -> None:
    parent = os.getppid()
    start = leases.start_time(parent)
    assert start is not None
    leases.acquire(catalog, "x", owner(parent, start, machine="otherboot.1"), ttl=600)
    with pytest.raises(ConflictError):
        leases.acquire(catalog, "x", leases.new_owner(), ttl=60)
    leases.acquire(catalog, "y", owner(parent, str(int(start) + 1)), ttl=600)
    assert leases.acquire(catalog, "y", leases.new_owner(), ttl=60) is not None
