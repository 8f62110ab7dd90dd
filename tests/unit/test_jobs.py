"""The spark-submit entry points forward their options to the CLI unchanged."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from lakestory import cli


def _recording(seen: list[list[str]]) -> Callable[..., int]:
    """A stand-in for `cli.main` that records what a job forwards; a job's output is parted
    as the command line's is (`quiet`)."""

    def main(argv: Sequence[str], quiet: bool | None = None) -> int:
        assert quiet is True
        seen.append(list(argv))
        return 0

    return main


def test_refine_job_forwards_full_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(cli, "main", _recording(seen))
    assert cli.job_main("refine", ["--dataset", "customers", "--full-refresh"]) == 0
    assert cli.job_main("refine", ["--dataset", "customers", "--env", "dev"]) == 0
    assert seen == [
        ["refine", "customers", "--full-refresh"],
        ["refine", "customers", "--env", "dev"],
    ]


def test_other_jobs_have_no_full_refresh() -> None:
    with pytest.raises(SystemExit):
        cli.job_main("ingest", ["--dataset", "customers", "--full-refresh"])


def test_the_tune_job_forwards_to_the_tune_command(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(cli, "main", _recording(seen))
    assert cli.job_main("tune", ["--dataset", "customers"]) == 0
    assert seen == [["tune", "customers"]]
    assert cli._parser().parse_args(seen[0]).command == "tune"
