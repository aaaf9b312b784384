"""The shared little cluster (tests/e2e/world.py), set up once per test module that asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.world import cluster_api, cluster_pods
from tests.k8s.apiserver import ApiServer
from tests.pods.net import Pods


@pytest.fixture(scope="module")
def api() -> Iterator[ApiServer]:
    yield from cluster_api()


@pytest.fixture(scope="module")
def pods() -> Iterator[Pods]:
    yield from cluster_pods()
