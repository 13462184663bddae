import pytest

from holdfast.entrypoints.web import cluster_local


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:8080",
        "127.0.0.1:5000",
        "[::1]:80",
        "transfers",
        "transfers.holdfast.svc",
        "transfers.holdfast.svc.cluster.local",
        "transfers.holdfast.svc.cluster.local:80",
        "TRANSFERS.HOLDFAST.SVC.CLUSTER.LOCAL.",
    ],
)
def test_events_are_taken_from_inside_the_cluster(host: str) -> None:
    assert cluster_local(host)


@pytest.mark.parametrize(
    "host",
    [
        "api.bank.example",
        "transfers.holdfast.example.com",
        "10.0.0.1",
        "evil.svc.example",
        "transfers.holdfast.svc.cluster.local.evil.com",
    ],
)
def test_events_from_public_host_names_are_refused(host: str) -> None:
    assert not cluster_local(host)
