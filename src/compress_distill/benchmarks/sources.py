"""Which commit of which Hub repo each benchmark is read from, decided before a single row is downloaded.

``resolve`` is prepare's pre-flight.  For every Hub repo the chosen datasets read it settles the revision in
effect (a ``prepare.revisions`` override, else the registry's pin, else the branch the registry tracks) and:
- on the Hub: checks access to gated repos (``HfApi.auth_check``) and turns the revision into the commit sha
  that is then passed to ``load_dataset``, so what is recorded is exactly what was read;
- from ``prepare.hub_mirror``: checks that every mirror folder exists and reads the commit it was downloaded
  at from the metadata ``hf download --local-dir`` leaves in ``.cache/huggingface/download``, refusing a
  mirror that holds another commit than the pin.
Every refusal is one ``SourceError`` line naming the dataset, the repo and the fix, raised before any load.
``check_pins`` compares the pins with the heads of their branches (``prepare --check-sources``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from compress_distill.benchmarks.common import BenchmarkError
from compress_distill.benchmarks.registry import PINS, get_spec
from compress_distill.config import ConfigError

if TYPE_CHECKING:  # huggingface_hub costs ~0.3 s to import; keep `compress-distill --help` fast
    from huggingface_hub import HfApi

FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
# where `hf download --local-dir DIR` records, per file, the commit it was downloaded at (first line)
MIRROR_METADATA = Path(".cache") / "huggingface" / "download"

PinOrigin = Literal["params", "registry", "branch"]


class SourceError(BenchmarkError):
    """A source cannot be read as configured (gated, missing, unreachable, pin mismatch); one line + fix."""


def hub_page(hub_id: str) -> str:
    """The dataset's Hub page: where gated access is requested."""
    return f"https://huggingface.co/datasets/{hub_id}"


def hub_api() -> HfApi:
    """The Hub client (token from HF_TOKEN or `hf auth login`); a function so tests can pass an autospec."""
    from huggingface_hub import HfApi

    return HfApi()


@dataclass(frozen=True)
class Source:
    """One Hub repo as prepare reads it."""

    hub_id: str
    datasets: tuple[str, ...]  # the chosen dataset ids read from this repo
    branch: str  # the branch the registry tracks: main, or refs/convert/parquet for script repos
    requested: str  # the revision in effect: a sha, or the branch when nothing pins it
    origin: PinOrigin  # where `requested` came from
    verified: bool  # the registry pin was checked against the Hub (params overrides: the user's call)
    sha: str | None = None  # the commit actually read; None: a mirror that does not record it
    mirror: str | None = None  # the mirror folder read instead of the Hub

    @property
    def load_revision(self) -> str:
        return self.sha or self.requested

    def as_metrics(self) -> dict[str, Any]:
        return {
            "datasets": ",".join(self.datasets),
            "branch": self.branch,
            "requested": self.requested,
            "pin": self.origin,
            "pin_verified": self.verified,
            "sha": self.sha or "unrecorded",
            "read_from": "mirror" if self.mirror else "hub",
        }


def sources_of(dataset_ids: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Hub repo -> the dataset ids read from it, in params order (ARC's two sets share one, as do MMLU's)."""
    out: dict[str, tuple[str, ...]] = {}
    for d in dataset_ids:
        hub_id = get_spec(d).hub_id
        if hub_id is not None:
            out[hub_id] = (*out.get(hub_id, ()), d)
    return out


def check_overrides(overrides: Mapping[str, str]) -> None:
    unknown = sorted(set(overrides) - set(PINS))
    if unknown:
        raise ConfigError(
            f"prepare.revisions: unknown source(s) {unknown}; keys are Hub repo ids: "
            + ", ".join(sorted(PINS))
        )


def requested_revision(hub_id: str, overrides: Mapping[str, str]) -> tuple[str, PinOrigin, bool]:
    """(revision, origin, verified): a params override beats the registry pin, which beats the branch."""
    pin = PINS[hub_id]
    if hub_id in overrides:
        return overrides[hub_id], "params", False
    if pin.sha:
        return pin.sha, "registry", pin.verified
    return pin.branch, "branch", False


def mirror_sha(folder: Path, dataset: str) -> str | None:
    """The commit a mirror folder was downloaded at (``hf download --local-dir`` metadata); None if absent."""
    shas = {
        line
        for meta in (folder / MIRROR_METADATA).rglob("*.metadata")
        if (line := meta.read_text(encoding="utf-8").split("\n", 1)[0].strip())
    }
    if len(shas) > 1:
        raise SourceError(
            f"dataset {dataset!r}: mirror {folder} mixes files of commits {sorted(shas)}; empty it and "
            "download one revision again with `hf download --repo-type dataset --revision SHA --local-dir` "
            "(README, 'Freezing the benchmarks')"
        )
    return shas.pop() if shas else None


def _from_mirror(src: Source, root: Path) -> Source:
    dataset = src.datasets[0]
    folder = root / src.hub_id
    if not folder.is_dir():
        raise SourceError(
            f"dataset {dataset!r}: prepare.hub_mirror is {str(root)!r} but {folder} does not exist; mirror "
            f"the Hub repo {src.hub_id} there (hf download --repo-type dataset {src.hub_id} --revision "
            f"{src.requested} --local-dir {folder}), or set hub_mirror: null to read the Hub"
        )
    sha = mirror_sha(folder, dataset)
    if sha is not None and FULL_SHA.match(src.requested) and sha != src.requested:
        raise SourceError(
            f"dataset {dataset!r}: mirror {folder} holds commit {sha} but the pin ({src.origin}) is "
            f"{src.requested}; download that commit into the mirror, or set "
            f"prepare.revisions['{src.hub_id}'] to {sha}"
        )
    return replace(src, sha=sha, mirror=str(folder))


def _network_errors() -> tuple[type[BaseException], ...]:
    import httpx2
    from huggingface_hub.errors import OfflineModeIsEnabled

    # httpx2.TransportError: DNS failure, refused connection, timeout (what an air-gapped node raises)
    return (httpx2.TransportError, OfflineModeIsEnabled)


def _no_hub(src: Source, err: BaseException, consequence: str = "") -> SourceError:
    detail = str(err).splitlines()[0] if str(err) else "no detail"
    return SourceError(
        f"dataset {src.datasets[0]!r}: cannot reach the Hugging Face Hub to read {src.hub_id} "
        f"({type(err).__name__}: {detail}){consequence}; check the network (HF_ENDPOINT, proxy, "
        "HF_HUB_OFFLINE) or read a local copy through prepare.hub_mirror (README, 'Freezing the benchmarks')"
    )


def _check_access(api: HfApi, src: Source) -> None:
    """Gated repos only: auth_check says whether this token may read the files, before any download."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    dataset = src.datasets[0]
    fix = (
        f"request access at {hub_page(src.hub_id)} with your Hub account, then export HF_TOKEN (a read "
        "token of that account) or run `hf auth login`; nothing was downloaded"
    )
    try:
        api.auth_check(src.hub_id, repo_type="dataset")
    except GatedRepoError:
        raise SourceError(
            f"dataset {dataset!r} is gated on the Hub ({src.hub_id}) and this token has no access: {fix}"
        ) from None
    except RepositoryNotFoundError:  # 401 without any token, or a token of an account that cannot see it
        raise SourceError(
            f"dataset {dataset!r}: the gated Hub repo {src.hub_id} is not visible without access: {fix}"
        ) from None
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        raise SourceError(
            f"dataset {dataset!r}: the Hub refused the access check of {src.hub_id} (HTTP {status}): {fix}"
        ) from None


def _from_hub(api: HfApi, src: Source) -> Source:
    from huggingface_hub.errors import HfHubHTTPError, RevisionNotFoundError

    if get_spec(src.datasets[0]).gated:
        _check_access(api, src)
    try:
        sha = api.dataset_info(src.hub_id, revision=src.requested).sha
    except RevisionNotFoundError:
        raise SourceError(
            f"dataset {src.datasets[0]!r}: revision {src.requested} ({src.origin} pin) does not exist in "
            f"{hub_page(src.hub_id)}; fix prepare.revisions['{src.hub_id}'] or the pin in "
            "benchmarks/registry.py"
        ) from None
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        raise SourceError(
            f"dataset {src.datasets[0]!r}: the Hub answered HTTP {status} for {src.hub_id} at "
            f"{src.requested}; check the repo id in benchmarks/registry.py and HF_TOKEN, or use "
            "prepare.hub_mirror"
        ) from None
    if not sha:
        raise SourceError(
            f"dataset {src.datasets[0]!r}: the Hub returned no commit for {src.hub_id} at {src.requested}"
        )
    return replace(src, sha=sha)


def resolve(
    dataset_ids: Iterable[str],
    overrides: Mapping[str, str],
    hub_mirror: str | Path | None,
    api_factory: Callable[[], HfApi] = hub_api,
) -> dict[str, Source]:
    """The pre-flight: every source of ``dataset_ids`` checked and turned into a commit, or a SourceError."""
    check_overrides(overrides)
    planned = []
    for hub_id, datasets in sources_of(dataset_ids).items():
        requested, origin, verified = requested_revision(hub_id, overrides)
        planned.append(Source(hub_id, datasets, PINS[hub_id].branch, requested, origin, verified))
    if hub_mirror is not None:
        return {s.hub_id: _from_mirror(s, Path(hub_mirror)) for s in planned}
    if not planned:
        return {}
    from huggingface_hub.errors import OfflineModeIsEnabled

    api = api_factory()
    network = _network_errors()
    out = {}
    for src in planned:
        try:
            out[src.hub_id] = _from_hub(api, src)
        except network as err:
            if isinstance(err, OfflineModeIsEnabled) and FULL_SHA.match(src.requested):
                # HF_HUB_OFFLINE with a sha pin: the datasets cache holds that commit or load_dataset says so
                out[src.hub_id] = replace(src, sha=src.requested)
                continue
            raise _no_hub(src, err) from None
    return out


def mirror_commands(dataset_ids: Iterable[str], overrides: Mapping[str, str], root: str | Path) -> list[str]:
    """The ``hf download`` line that fills ``root/<org>/<name>`` at each source's pin (the branch if unpinned).

    ``hf download --local-dir`` records the commit of every file under ``.cache/huggingface/download``;
    ``mirror_sha`` reads it back, so the mirror carries its provenance with it.
    """
    check_overrides(overrides)
    lines = []
    for hub_id in sources_of(dataset_ids):
        revision, _, _ = requested_revision(hub_id, overrides)
        local = Path(root) / hub_id
        lines.append(f"hf download --repo-type dataset {hub_id} --revision {revision} --local-dir {local}")
    return lines


@dataclass(frozen=True)
class PinCheck:
    hub_id: str
    branch: str
    pin: str  # the revision in effect (sha or branch)
    origin: PinOrigin
    verified: bool
    head: str  # the branch head's sha on the Hub

    @property
    def status(self) -> str:
        if self.origin == "branch":
            return "unpinned (follows the branch)"
        if not FULL_SHA.match(self.pin):
            return f"pinned to {self.pin}, not a commit sha"
        return "same as head" if self.pin == self.head else "differs from head"

    def line(self) -> str:
        trust = "verified" if self.verified else "unverified"
        pin, head = self.pin[:12], self.head[:12]
        return f"{self.hub_id} [{self.branch}] pin {pin} ({self.origin}, {trust}); head {head}: {self.status}"


def check_pins(
    dataset_ids: Iterable[str], overrides: Mapping[str, str], api_factory: Callable[[], HfApi] = hub_api
) -> list[PinCheck]:
    """Each source's pin next to its branch head on the Hub; a SourceError if the Hub is unreachable."""
    from huggingface_hub.errors import HfHubHTTPError

    check_overrides(overrides)
    api = api_factory()
    network = _network_errors()
    out = []
    for hub_id, datasets in sources_of(dataset_ids).items():
        pin, origin, verified = requested_revision(hub_id, overrides)
        branch = PINS[hub_id].branch
        src = Source(hub_id, datasets, branch, pin, origin, verified)
        try:
            head = api.dataset_info(hub_id, revision=branch).sha or "?"
        except network as err:
            raise _no_hub(src, err, ", so no pin was checked") from None
        except HfHubHTTPError as err:  # one repo gone or renamed: report it with the others
            head = f"? (HTTP {err.response.status_code if err.response is not None else '?'})"
        out.append(PinCheck(hub_id, branch, pin, origin, verified, head))
    return out
